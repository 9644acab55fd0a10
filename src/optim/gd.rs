//! Plain gradient descent, the document's `update_parameters`: `w ← w − lr·g`.

use super::{Optimizer, OptimizerConfig, OptimizerState, PARALLEL_MIN_LEN, check_lengths};
use ndarray::{ArrayD, ArrayViewMutD, Zip};

/// Gradient descent. Keeps no memory beyond the step count.
#[derive(Debug, Default)]
pub struct GradientDescent {
    state: OptimizerState,
}

impl Optimizer for GradientDescent {
    fn config(&self) -> OptimizerConfig {
        OptimizerConfig::Gd
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &[]
    }

    fn step(&mut self, params: &mut [ArrayViewMutD<'_, f32>], grads: &[ArrayD<f32>], lr: f32) {
        check_lengths(params, grads);
        let update = |w: &mut f32, &g: &f32| *w -= lr * g;
        for (p, g) in params.iter_mut().zip(grads) {
            let big = p.len() >= PARALLEL_MIN_LEN;
            let zip = Zip::from(p).and(g);
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
