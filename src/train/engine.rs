//! The interface between the training loop and the two ways of computing a step: the direct
//! way ([`super::direct`]) and the exact Gram reformulation ([`super::gram`]).

use crate::nn::Network;
use crate::optim::{Optimizer, OptimizerState};
use crate::{Result, Rng};

/// How a batch scored before the update, reported when the loop asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Score {
    /// Mean cross-entropy over the batch, without the L2 term.
    pub cost: f64,
    /// How many examples of the batch were classified correctly.
    pub correct: usize,
}

/// What a step reports back to the loop.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The batch's score, when the loop asked for it.
    pub score: Option<Score>,
    /// Whether every output of the forward pass was finite. Checked every step (a pass over
    /// `batch × outputs` values, far cheaper than the cost's logarithms): a NaN or infinity
    /// means training has diverged.
    pub finite: bool,
}

/// Computes training steps for one network on one training set.
///
/// Between [`step`](Engine::step)s the network's layers may not hold the current weights (the
/// Gram engine keeps the first layer's in another form); [`network`](Engine::network) gives a
/// materialised copy and [`finish`](Engine::finish) writes them back.
pub trait Engine {
    /// One optimiser step on the training rows `batch` (indices into the training set; all of
    /// them, in order, for full-batch training). Adds the L2 gradient `l2·W` to every weight.
    /// Scores the batch only when `want_score` (the cost takes logarithms: most full-batch
    /// steps do not need it); always reports whether the forward pass stayed finite.
    ///
    /// # Errors
    /// When the batch's images cannot be read (streamed from disk).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        net: &mut Network,
        optimizer: &mut dyn Optimizer,
        batch: &[usize],
        learning_rate: f32,
        l2: f32,
        want_score: bool,
        rng: &mut Rng,
    ) -> Result<Outcome>;

    /// The steps of the coming epoch take the rows of `order`, `batch` at a time: an engine
    /// that reads images from disk starts reading them ahead.
    fn upcoming(&mut self, _order: &[usize], _batch: usize) {}

    /// Seconds spent so far summing steps across processes (`mpirun`).
    fn communication_seconds(&self) -> f64 {
        0.0
    }

    /// `Σ‖W‖²` over every weight (not biases), for the L2 term of the cost.
    fn weight_norm_sq(&self, net: &Network) -> f64;

    /// Cost and accuracy on the validation set, if the engine was given one.
    ///
    /// # Errors
    /// When the validation images cannot be read (streamed from disk).
    fn validate(&self, net: &Network) -> Result<Option<(f64, f64)>>;

    /// A copy of the network with its current weights.
    ///
    /// # Errors
    /// When forming them needs the training images and they cannot be read.
    fn network(&self, net: &Network) -> Result<Network>;

    /// The optimiser's memory in the network's own parameter order and shapes (what a model
    /// file stores).
    ///
    /// # Errors
    /// As [`network`](Engine::network).
    fn optimizer_state(&self, net: &Network, optimizer: &dyn Optimizer) -> Result<OptimizerState>;

    /// Writes the current weights into `net`; the engine is done.
    ///
    /// # Errors
    /// As [`network`](Engine::network).
    fn finish(self: Box<Self>, net: &mut Network) -> Result<()>;
}
