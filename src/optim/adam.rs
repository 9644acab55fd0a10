//! Adam (Kingma & Ba) with bias correction:
//! `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `w ← w − lr · m̂ / (√v̂ + ε)` with `m̂ = m/(1−β1ᵗ)`, `v̂ = v/(1−β2ᵗ)`.

use super::{Optimizer, OptimizerConfig, OptimizerState, PARALLEL_MIN_LEN, check_lengths};
use ndarray::{ArrayD, ArrayViewMutD, Zip};

/// Adam. Not linear (it divides by √v̂), so the exact Gram path does not apply.
#[derive(Debug)]
pub struct Adam {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    /// AdamW's decoupled weight decay, and which parameters it applies to.
    weight_decay: Option<f32>,
    decay: Vec<bool>,
    state: OptimizerState,
}

impl Adam {
    /// Adam with the given decays and ε (PyTorch's defaults: 0.9, 0.999, 1e-8).
    pub fn new(beta1: f32, beta2: f32, epsilon: f32) -> Self {
        Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay: None,
            decay: Vec::new(),
            state: OptimizerState::default(),
        }
    }

    /// The same with decoupled weight decay `weight_decay` (AdamW): before each step, every
    /// parameter marked by [`set_decay`](Optimizer::set_decay) is scaled by `1 − lr·λ`.
    pub fn decoupled(mut self, weight_decay: f32) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

impl Optimizer for Adam {
    fn config(&self) -> OptimizerConfig {
        match self.weight_decay {
            None => OptimizerConfig::Adam {
                beta1: self.beta1,
                beta2: self.beta2,
                epsilon: self.epsilon,
            },
            Some(weight_decay) => OptimizerConfig::AdamW {
                beta1: self.beta1,
                beta2: self.beta2,
                epsilon: self.epsilon,
                weight_decay,
            },
        }
    }

    fn set_decay(&mut self, mask: Vec<bool>) {
        self.decay = mask;
    }

    fn slot_names(&self) -> &'static [&'static str] {
        &["m", "v"]
    }

    fn step(&mut self, params: &mut [ArrayViewMutD<'_, f32>], grads: &[ArrayD<f32>], lr: f32) {
        check_lengths(params, grads);
        self.state.ensure(params, 2);
        self.state.step += 1;
        let t = self.state.step as f64;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        // Bias corrections in f64: 1 − β2ᵗ is tiny for small t.
        let c1 = (1.0 - f64::from(b1).powf(t)) as f32;
        let c2 = (1.0 - f64::from(b2).powf(t)) as f32;
        let update = |w: &mut f32, &g: &f32, m: &mut f32, v: &mut f32| {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let m_hat = *m / c1;
            let v_hat = *v / c2;
            *w -= lr * m_hat / (v_hat.sqrt() + eps);
        };
        if let Some(wd) = self.weight_decay {
            // Decoupled decay first, as PyTorch's AdamW: w ← w·(1 − lr·λ).
            let shrink = 1.0 - lr * wd;
            for (p, &decayed) in params.iter_mut().zip(&self.decay) {
                if decayed {
                    p.mapv_inplace(|w| w * shrink);
                }
            }
        }
        for ((p, g), slots) in params.iter_mut().zip(grads).zip(&mut self.state.slots) {
            let (ms, vs) = slots.split_at_mut(1);
            let big = p.len() >= PARALLEL_MIN_LEN;
            let zip = Zip::from(p).and(g).and(&mut ms[0]).and(&mut vs[0]);
            if big {
                zip.par_for_each(update)
            } else {
                zip.for_each(update)
            }
        }
    }

    fn is_linear(&self) -> bool {
        false
    }

    fn state(&self) -> &OptimizerState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut OptimizerState {
        &mut self.state
    }
}
