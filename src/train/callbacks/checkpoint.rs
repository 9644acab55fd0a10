//! Checkpoints: the model and its optimiser state, saved every so often while training, each
//! time atomically (an interrupted save leaves the previous checkpoint intact).

use super::{Callback, RunInfo, StepInfo, TrainingView};
use crate::Result;
use crate::data::Preprocess;
use crate::model::{Classes, Model};
use crate::model_file;
use std::path::PathBuf;

/// Saves to `path` every `every` iterations (or epochs, when training by epochs).
pub struct Checkpoint {
    path: PathBuf,
    every: usize,
    every_steps: usize,
    classes: Classes,
    preprocess: Preprocess,
    tta: bool,
    /// How many checkpoints were written.
    pub written: usize,
}

impl Checkpoint {
    /// A checkpoint writer for a model with these classes and preprocessing.
    pub fn new(path: PathBuf, every: usize, classes: Classes, preprocess: Preprocess) -> Self {
        Checkpoint {
            path,
            every: every.max(1),
            every_steps: every.max(1),
            classes,
            preprocess,
            tta: false,
            written: 0,
        }
    }

    /// Checkpoints that record test-time flips (`--tta flip`), as the final model will.
    pub fn with_tta(mut self, tta: bool) -> Self {
        self.tta = tta;
        self
    }
}

impl Callback for Checkpoint {
    fn on_start(&mut self, info: &RunInfo) {
        self.every_steps = if info.by_epochs {
            self.every * info.steps_per_epoch
        } else {
            self.every
        };
    }

    fn on_step(&mut self, step: &StepInfo, view: &dyn TrainingView) -> Result<()> {
        if !(step.step + 1).is_multiple_of(self.every_steps) {
            return Ok(());
        }
        let network = view.network()?;
        // A blown-up step is caught by the loop at the next forward pass; until then, keep the
        // last good checkpoint rather than overwrite it with NaN weights.
        if !network.is_finite() {
            return Ok(());
        }
        let model = Model {
            network,
            classes: self.classes.clone(),
            preprocess: self.preprocess,
            tta: self.tta,
        };
        let training = serde_json::json!({ "checkpoint_after_steps": step.step + 1 });
        model_file::save(
            &self.path,
            &model,
            Some(&view.optimizer()?),
            Some(&training),
        )?;
        self.written += 1;
        Ok(())
    }
}
