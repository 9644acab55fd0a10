//! Callbacks: feedback during training, kept out of the loop itself. One file each.
//!
//! - [`Progress`]: a progress bar with ETA on a terminal, the document's periodic cost lines
//!   otherwise.
//! - [`Checkpoint`]: saves the model (and optimiser state) every so often, atomically.
//! - [`StopFlag`]: ends the run when a flag is raised (the CLI raises it on Ctrl-C).

mod checkpoint;
mod progress;
mod stop;

pub use checkpoint::Checkpoint;
pub use progress::Progress;
pub use stop::StopFlag;

use super::{History, Record};
use crate::Result;
use crate::model_file::SavedOptimizer;
use crate::nn::Network;

/// What a run will do, given to callbacks before the first step.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Optimiser steps in the run.
    pub total_steps: usize,
    /// Steps per pass over the training set.
    pub steps_per_epoch: usize,
    /// Whether the run is counted in epochs (else iterations).
    pub by_epochs: bool,
    /// Training examples.
    pub examples: usize,
    /// Examples per step.
    pub batch: usize,
    /// "gram" or "direct".
    pub path: &'static str,
}

/// One step, as callbacks see it.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// 0-based step index.
    pub step: usize,
    /// 0-based epoch, when counting in epochs.
    pub epoch: Option<usize>,
    /// The training cost (with the L2 term), computed only at log and record points.
    pub cost: Option<f64>,
    /// Whether this is a point where the cost should be shown (every `log_every`).
    pub log: bool,
    /// The learning rate used.
    pub learning_rate: f32,
}

/// Access to the current state of training, for callbacks that save it.
pub trait TrainingView {
    /// A copy of the network with its current weights.
    ///
    /// # Errors
    /// When forming the weights needs the training images and they cannot be read (streamed
    /// from disk).
    fn network(&self) -> Result<Network>;
    /// The optimiser's settings and memory, in the network's parameter order.
    ///
    /// # Errors
    /// As [`network`](Self::network).
    fn optimizer(&self) -> Result<SavedOptimizer>;
}

/// Something that wants to hear about training. Every method has a default that does nothing.
pub trait Callback {
    /// Before the first step.
    fn on_start(&mut self, _info: &RunInfo) {}

    /// After every step.
    ///
    /// # Errors
    /// Stops training with this error (a checkpoint that cannot be written).
    fn on_step(&mut self, _step: &StepInfo, _view: &dyn TrainingView) -> Result<()> {
        Ok(())
    }

    /// After each record is made (every `record_every` iterations, or every epoch).
    ///
    /// # Errors
    /// Stops training with this error.
    fn on_record(&mut self, _record: &Record, _view: &dyn TrainingView) -> Result<()> {
        Ok(())
    }

    /// Checked after every step: `true` ends the run there (the loop returns the weights
    /// reached, marked [`interrupted`](crate::train::Trained::interrupted)).
    fn should_stop(&self) -> bool {
        false
    }

    /// After the last step.
    fn on_end(&mut self, _history: &History) {}
}
