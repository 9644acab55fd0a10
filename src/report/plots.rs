//! The `curves` and `roc` sections: figures drawn by [`crate::plot`] as SVG, placed inline.

use super::html::{fraction, note};
use super::{Evaluation, TrainingSummary};
use crate::Result;
use crate::model::Classes;
use std::path::Path;

/// What a plot error names: the figure is part of the report, not a file of its own.
const FIGURE: &str = "report figure";

/// The learning curves (cost and accuracy, training and validation), or why there are none.
///
/// # Errors
/// [`crate::Error::Plot`] if the figure cannot be drawn.
pub fn curves(training: Option<&TrainingSummary>) -> Result<String> {
    let history = training.and_then(|t| t.history.as_ref());
    let Some(history) = history.filter(|h| !h.records.is_empty()) else {
        return Ok(note(
            "This model has no training history (it was saved by an older deepcat, or \
             training was interrupted), so there are no learning curves to show.",
        ));
    };
    let svg = crate::plot::curves_svg(history, Path::new(FIGURE))?;
    let validation = if history.has_validation() {
        "Training and validation"
    } else {
        "Training (no validation set: train with --val-split for validation curves)"
    };
    Ok(format!(
        "<p>{validation} cost and accuracy over {} records.</p>\n<figure class=\"wide\">{svg}</figure>",
        history.records.len()
    ))
}

/// The ROC curve of the positive class with its AUC, for two classes; otherwise why not.
///
/// # Errors
/// [`crate::Error::Plot`] if the figure cannot be drawn.
pub fn roc(classes: &Classes, evaluation: Option<&Evaluation>) -> Result<String> {
    let Some(positive) = classes.positive_name() else {
        return Ok(note(&format!(
            "The ROC curve applies to two classes only; this model has {} classes.",
            classes.len()
        )));
    };
    let Some(evaluation) = evaluation else {
        return Ok(note("No images were evaluated, so there is no ROC curve."));
    };
    let (Some(curve), Some(auc)) = (&evaluation.roc, evaluation.metrics.roc_auc) else {
        return Ok(note(
            "The ROC curve needs images of both classes among those evaluated.",
        ));
    };
    let svg = crate::plot::roc_svg(curve, auc, Path::new(FIGURE))?;
    Ok(format!(
        "<p>Positive class <strong>{}</strong>: its probability, thresholded at every value \
         it takes. AUC <strong>{}</strong>.</p>\n<figure class=\"wide\">{svg}</figure>",
        super::html::escape(positive),
        fraction(auc)
    ))
}
