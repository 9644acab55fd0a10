//! Optimisers: how a parameter moves given its gradient. One file each.
//!
//! An optimiser sees a list of parameters and their gradients, never which layer they came
//! from. Its per-parameter memory (momentum's velocity, Adam's moments) lives in an
//! [`OptimizerState`], which model files save so training can resume.
//!
//! An optimiser is *linear* when every update is a fixed linear combination of the parameter,
//! its gradient and its state (gradient descent, momentum). The exact Gram path relies on it:
//! see [`crate::train`].

mod adam;
mod gd;
mod momentum;
mod schedule;

pub use adam::Adam;
pub use gd::GradientDescent;
pub use momentum::Momentum;
pub use schedule::{Schedule, warmed_up};

use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewMutD};

/// Per-parameter memory of an optimiser, and how many steps it has taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizerState {
    /// Steps taken so far (Adam's bias correction needs it).
    pub step: u64,
    /// `slots[p][k]`: slot `k` (see [`Optimizer::slot_names`]) of parameter `p`, same shape as
    /// the parameter. Empty until the first step.
    pub slots: Vec<Vec<ArrayD<f32>>>,
}

impl OptimizerState {
    /// Makes sure every parameter has its slots, zero-initialised, shaped like the parameter.
    fn ensure(&mut self, params: &[ArrayViewMutD<'_, f32>], slots_per_param: usize) {
        if self.slots.len() != params.len() {
            self.slots = params
                .iter()
                .map(|p| {
                    (0..slots_per_param)
                        .map(|_| ArrayD::zeros(p.raw_dim()))
                        .collect()
                })
                .collect();
        }
    }
}

/// One optimisation algorithm.
pub trait Optimizer: Send {
    /// The settings it was built from.
    fn config(&self) -> OptimizerConfig;

    /// Names of the per-parameter slots it keeps (`["velocity"]`, `["m", "v"]`, or none).
    fn slot_names(&self) -> &'static [&'static str];

    /// Updates every parameter in place from its gradient, at learning rate `lr`.
    ///
    /// # Panics
    /// If `params` and `grads` differ in length or shapes.
    fn step(&mut self, params: &mut [ArrayViewMutD<'_, f32>], grads: &[ArrayD<f32>], lr: f32);

    /// Which parameters (in `step`'s order) are weights that decoupled weight decay applies
    /// to (AdamW's); biases, batch norm's scales and shifts are not decayed. Others ignore it.
    fn set_decay(&mut self, _mask: Vec<bool>) {}

    /// Whether each update is a fixed linear map of (parameter, gradient, state).
    fn is_linear(&self) -> bool;

    /// Its memory.
    fn state(&self) -> &OptimizerState;

    /// Its memory, to restore or transform.
    fn state_mut(&mut self) -> &mut OptimizerState;
}

/// Which optimiser, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Plain gradient descent: the document's `update_parameters`.
    Gd,
    /// Heavy-ball momentum: `v ← β·v + g`, `w ← w − lr·v`.
    Momentum {
        /// β, typically 0.9.
        beta: f32,
    },
    /// Adam with bias correction.
    Adam {
        /// Decay of the first moment (0.9).
        beta1: f32,
        /// Decay of the second moment (0.999).
        beta2: f32,
        /// Added to the root of the second moment (1e-8).
        epsilon: f32,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter), as PyTorch's `AdamW`: each step
    /// first shrinks every weight by `lr · weight_decay · w`, then takes Adam's step.
    #[serde(rename = "adamw")]
    AdamW {
        /// Decay of the first moment (0.9).
        beta1: f32,
        /// Decay of the second moment (0.999).
        beta2: f32,
        /// Added to the root of the second moment (1e-8).
        epsilon: f32,
        /// The decay factor (PyTorch's default 0.01; the resnet recipe's 5e-4).
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Gd => "gd",
            OptimizerConfig::Momentum { .. } => "momentum",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::AdamW { .. } => "adamw",
        }
    }

    /// # Errors
    /// [`Error::Config`] if a β is outside `[0, 1)` or ε is not positive.
    pub fn check(&self) -> Result<()> {
        let beta_ok = |b: f32, flag: &str| {
            if (0.0..1.0).contains(&b) {
                Ok(())
            } else {
                Err(Error::Config(format!("{flag} must be in [0, 1), got {b}")))
            }
        };
        match *self {
            OptimizerConfig::Gd => Ok(()),
            OptimizerConfig::Momentum { beta } => beta_ok(beta, "--beta1 (momentum)"),
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => {
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return Err(Error::Config(format!(
                        "--weight-decay must be zero or positive, got {weight_decay}"
                    )));
                }
                OptimizerConfig::Adam {
                    beta1,
                    beta2,
                    epsilon,
                }
                .check()
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                beta_ok(beta1, "--beta1")?;
                beta_ok(beta2, "--beta2")?;
                if epsilon > 0.0 && epsilon.is_finite() {
                    Ok(())
                } else {
                    Err(Error::Config(format!(
                        "--epsilon must be positive, got {epsilon}"
                    )))
                }
            }
        }
    }

    /// A fresh optimiser with empty state.
    pub fn build(&self) -> Box<dyn Optimizer> {
        match *self {
            OptimizerConfig::Gd => Box::new(GradientDescent::default()),
            OptimizerConfig::Momentum { beta } => Box::new(Momentum::new(beta)),
            OptimizerConfig::Adam {
                beta1,
                beta2,
                epsilon,
            } => Box::new(Adam::new(beta1, beta2, epsilon)),
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                epsilon,
                weight_decay,
            } => Box::new(Adam::new(beta1, beta2, epsilon).decoupled(weight_decay)),
        }
    }
}

/// Parameters with at least this many values are updated on all threads; smaller ones are
/// not worth the hand-off.
const PARALLEL_MIN_LEN: usize = 1 << 16;

fn check_lengths(params: &[ArrayViewMutD<'_, f32>], grads: &[ArrayD<f32>]) {
    assert_eq!(
        params.len(),
        grads.len(),
        "optimiser got {} parameters and {} gradients",
        params.len(),
        grads.len()
    );
    for (p, g) in params.iter().zip(grads) {
        assert_eq!(p.shape(), g.shape(), "parameter and gradient shapes differ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    /// Minimises f(w) = ½‖w − 3‖² from w = 0 with each optimiser.
    fn minimise(config: OptimizerConfig, lr: f32, steps: usize) -> f32 {
        let mut opt = config.build();
        let mut w = ArrayD::<f32>::zeros(IxDyn(&[4]));
        for _ in 0..steps {
            let g = w.mapv(|v| v - 3.0);
            opt.step(&mut [w.view_mut()], &[g], lr);
        }
        w[0]
    }

    #[test]
    fn every_optimiser_converges_on_a_quadratic() {
        assert!((minimise(OptimizerConfig::Gd, 0.1, 200) - 3.0).abs() < 1e-3);
        assert!((minimise(OptimizerConfig::Momentum { beta: 0.9 }, 0.05, 400) - 3.0).abs() < 1e-3);
        let adam = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        };
        assert!((minimise(adam, 0.05, 2000) - 3.0).abs() < 1e-2);
    }

    #[test]
    fn gd_is_the_documents_update() {
        let mut opt = OptimizerConfig::Gd.build();
        let mut w = ArrayD::<f32>::from_elem(IxDyn(&[2]), 1.0);
        let g = ArrayD::<f32>::from_elem(IxDyn(&[2]), 2.0);
        opt.step(&mut [w.view_mut()], &[g], 0.0075);
        assert_eq!(w[0], 1.0 - 0.0075 * 2.0);
    }

    #[test]
    fn adam_first_step_moves_by_the_learning_rate() {
        // With bias correction the first update is lr · g/|g| (up to ε).
        let mut opt = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
        .build();
        let mut w = ArrayD::<f32>::zeros(IxDyn(&[2]));
        let g = ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.5f32, -20.0]).unwrap();
        opt.step(&mut [w.view_mut()], &[g], 0.01);
        assert!(
            (w[0] + 0.01).abs() < 1e-6 && (w[1] - 0.01).abs() < 1e-6,
            "{w:?}"
        );
        assert_eq!(opt.state().step, 1);
        assert_eq!(opt.state().slots[0].len(), 2);
    }

    #[test]
    fn adamw_decays_weights_by_lr_times_decay_before_adams_step_and_spares_the_rest() {
        // Two steps by hand: w ← w·(1 − lr·λ), then Adam's step, for the decayed parameter;
        // the other takes Adam's step alone.
        let (lr, wd, b1, b2, eps) = (0.1f32, 0.5f32, 0.9f32, 0.999f32, 1e-8f32);
        let mut opt = OptimizerConfig::AdamW {
            beta1: b1,
            beta2: b2,
            epsilon: eps,
            weight_decay: wd,
        }
        .build();
        opt.set_decay(vec![true, false]);
        let mut w = ArrayD::from_shape_vec(IxDyn(&[1]), vec![2.0f32]).unwrap();
        let mut b = ArrayD::from_shape_vec(IxDyn(&[1]), vec![2.0f32]).unwrap();
        let grads = [
            [
                ArrayD::from_elem(IxDyn(&[1]), 0.5f32),
                ArrayD::from_elem(IxDyn(&[1]), 0.5f32),
            ],
            [
                ArrayD::from_elem(IxDyn(&[1]), -1.0f32),
                ArrayD::from_elem(IxDyn(&[1]), -1.0f32),
            ],
        ];
        let (mut ew, mut eb, mut m, mut v) = (2.0f64, 2.0f64, 0.0f64, 0.0f64);
        for (t, g) in grads.iter().enumerate() {
            opt.step(&mut [w.view_mut(), b.view_mut()], g, lr);
            let gv = f64::from(g[0][[0]]);
            m = 0.9 * m + 0.1 * gv;
            v = 0.999 * v + 0.001 * gv * gv;
            let t = (t + 1) as i32;
            let adam = f64::from(lr) * (m / (1.0 - 0.9f64.powi(t)))
                / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
            ew = ew * (1.0 - f64::from(lr) * f64::from(wd)) - adam;
            eb -= adam;
        }
        assert!((f64::from(w[[0]]) - ew).abs() < 1e-5, "{} vs {ew}", w[[0]]);
        assert!((f64::from(b[[0]]) - eb).abs() < 1e-5, "{} vs {eb}", b[[0]]);
        assert_eq!(opt.config().name(), "adamw");
    }

    #[test]
    fn configs_are_checked() {
        assert!(OptimizerConfig::Momentum { beta: 1.0 }.check().is_err());
        assert!(
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 0.0
            }
            .check()
            .is_err()
        );
        assert!(OptimizerConfig::Gd.check().is_ok());
    }
}
