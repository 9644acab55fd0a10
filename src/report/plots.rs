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

/// The learning rate over the run, or why it is not shown.
///
/// # Errors
/// [`crate::Error::Plot`] if the figure cannot be drawn.
pub fn learning_rate(training: Option<&TrainingSummary>) -> Result<String> {
    let history = training.and_then(|t| t.history.as_ref());
    let recorded = history.filter(|h| h.records.iter().any(|r| r.learning_rate.is_finite()));
    let Some(history) = recorded else {
        return Ok(note(
            "This model records no learning rates (no training history, or one saved by an \
             older deepcat).",
        ));
    };
    let svg = crate::plot::learning_rate_svg(history, Path::new(FIGURE))?;
    let rates = history.records.iter().map(|r| r.learning_rate);
    let (lo, hi) = rates
        .filter(|r| r.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
    let text = if lo == hi {
        format!("Constant at {} throughout.", rate(lo))
    } else {
        format!(
            "From {} to {}, as the schedule set it at each record.",
            rate(lo),
            rate(hi)
        )
    };
    Ok(format!(
        "<p>{text}</p>\n<figure class=\"wide\">{svg}</figure>"
    ))
}

/// A learning rate in a sentence: three significant digits, small ones in scientific notation
/// (`7.5e-3`, `1.19e-8`), larger ones as decimals (`0.01`).
fn rate(x: f32) -> String {
    if x == 0.0 || x.abs() >= 0.01 {
        return x.to_string();
    }
    let text = format!("{x:.2e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if mantissa.contains('.') => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_short() {
        assert_eq!(super::rate(0.0075), "7.5e-3");
        assert_eq!(super::rate(1.186_611e-8), "1.19e-8");
        assert_eq!(super::rate(0.001), "1e-3");
        assert_eq!(super::rate(0.01), "0.01");
        assert_eq!(super::rate(0.0), "0");
    }
}
