//! `--tta flip|none`: test-time flips. `train --tta` records the choice in the model;
//! `predict`, `evaluate`, `report` and `serve` follow the model unless told otherwise.

use clap::{Args, ValueEnum};
use deepcat::model::Model;

/// The test-time augmentations deepcat knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TtaName {
    /// Average each image's probabilities with its left-right mirror's.
    Flip,
    /// Each image as it is.
    None,
}

impl TtaName {
    /// Whether this is `flip`.
    pub fn flips(self) -> bool {
        self == TtaName::Flip
    }
}

/// The `--tta` flag of the commands that use a saved model.
#[derive(Debug, Args)]
pub struct TtaArgs {
    /// Test-time flips: flip averages each image's probabilities with its mirror's, none
    /// turns that off [default: what the model records, see train --tta].
    #[arg(long, value_enum)]
    tta: Option<TtaName>,
}

impl TtaArgs {
    /// The model, with the flag's choice in place of its own when given.
    pub fn apply(&self, mut model: Model) -> Model {
        if let Some(t) = self.tta {
            model.tta = t.flips();
        }
        model
    }
}
