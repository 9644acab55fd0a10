//! What training records as it goes: the document's cost list, plus accuracies.

/// One recorded point of training.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Record {
    /// Optimiser steps taken before this record's step (the document's iteration `i`).
    pub step: usize,
    /// Epochs completed, when training by epochs.
    pub epoch: Option<usize>,
    /// Training cost: that step's cost (iterations) or the epoch's mean batch cost (epochs),
    /// plus the L2 term when L2 is on.
    pub cost: f64,
    /// Training accuracy over the same examples as `cost`, before that step's update.
    pub train_accuracy: f64,
    /// Validation cost, when there is a validation set.
    pub val_cost: Option<f64>,
    /// Validation accuracy, when there is a validation set.
    pub val_accuracy: Option<f64>,
    /// The learning rate in use.
    pub learning_rate: f32,
}

/// Every record of a run, oldest first.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct History {
    /// The records.
    pub records: Vec<Record>,
}

impl History {
    /// The recorded costs, the document's `costs` list.
    pub fn costs(&self) -> Vec<f64> {
        self.records.iter().map(|r| r.cost).collect()
    }

    /// Whether any record has validation figures.
    pub fn has_validation(&self) -> bool {
        self.records.iter().any(|r| r.val_cost.is_some())
    }
}
