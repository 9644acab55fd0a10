//! Heavy-ball momentum (PyTorch's form): `v ← β·v + g`, `w ← w − lr·v`.

use super::{Optimizer, OptimizerConfig, OptimizerState, PARALLEL_MIN_LEN, check_lengths};
use ndarray::{ArrayD, ArrayViewMutD, Zip};

/// Momentum: a running, decaying sum of gradients. Linear in (w, g, v).
#[derive(Debug)]
pub struct Momentum {
    beta: f32,
    state: OptimizerState,
}

impl Momentum {
    /// Momentum with decay `beta`.
    pub fn new(beta: f32) -> Self {
        Momentum {
            beta,
            state: OptimizerState::default(),
        }
    }
}

impl Optimizer for Momentum {
    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Momentum { beta: self.beta }
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["velocity"]
    }

    fn step(&mut self, params: &mut [ArrayViewMutD<'_, f32>], grads: &[ArrayD<f32>], lr: f32) {
        check_lengths(params, grads);
        self.state.ensure(params, 1);
        let beta = self.beta;
        let update = |w: &mut f32, &g: &f32, v: &mut f32| {
            *v = beta * *v + g;
            *w -= lr * *v;
        };
        for ((p, g), slots) in params.iter_mut().zip(grads).zip(&mut self.state.slots) {
            let big = p.len() >= PARALLEL_MIN_LEN;
            let zip = Zip::from(p).and(g).and(&mut slots[0]);
            if big {
                zip.par_for_each(update)
            } else {
                zip.for_each(update)
            }
        }
        self.state.step += 1;
    }

    fn is_linear(&self) -> bool {
        true
    }

    fn state(&self) -> &OptimizerState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut OptimizerState {
        &mut self.state
    }
}
