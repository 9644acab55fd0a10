//! Early stopping: watch the validation cost, stop when it has not improved for `patience`
//! records, and hand back the best weights seen.

use super::Record;
use crate::Result;
use crate::nn::Network;

/// The best point seen so far.
#[derive(Debug, Clone)]
pub struct Best {
    /// The record at which the validation cost was lowest.
    pub record: Record,
    /// The network's weights at that record.
    pub network: Network,
}

/// Tracks the validation cost across records.
#[derive(Debug)]
pub struct EarlyStopping {
    patience: usize,
    best_cost: f64,
    since_best: usize,
    best: Option<Best>,
}

impl EarlyStopping {
    /// Stops after `patience` records without improvement.
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            best_cost: f64::INFINITY,
            since_best: 0,
            best: None,
        }
    }

    /// Takes one record's validation cost; `snapshot` is called (and the weights kept) only on
    /// improvement. Returns whether to stop.
    ///
    /// # Errors
    /// The error `snapshot` returns.
    pub fn observe(
        &mut self,
        record: &Record,
        val_cost: f64,
        snapshot: impl FnOnce() -> Result<Network>,
    ) -> Result<bool> {
        if val_cost < self.best_cost {
            self.best_cost = val_cost;
            self.since_best = 0;
            self.best = Some(Best {
                record: record.clone(),
                network: snapshot()?,
            });
            Ok(false)
        } else {
            self.since_best += 1;
            Ok(self.since_best >= self.patience)
        }
    }

    /// The best point, if any record was observed.
    pub fn into_best(self) -> Option<Best> {
        self.best
    }
}
