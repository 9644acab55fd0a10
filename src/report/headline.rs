//! The top of the report: the figures a reader wants first (accuracy, each class's F1, the
//! ROC AUC, how many images, how long training took), as large numbers before any section.

use super::html::{escape, fraction};
use super::{Evaluation, Report, TrainingSummary};
use crate::nn::thousands;
use std::fmt::Write;

/// The id of the block of headline figures, for tools that read the page.
pub const ID: &str = "headline";

/// With more classes than this, the headline gives the F1 range instead of one per class.
const MAX_F1_FIGURES: usize = 4;

/// One headline figure: what it is, its value, and a line saying what it was measured on.
struct Figure {
    label: String,
    value: String,
    detail: String,
}

impl Figure {
    fn new(label: impl Into<String>, value: impl Into<String>, detail: impl Into<String>) -> Self {
        Figure {
            label: label.into(),
            value: value.into(),
            detail: detail.into(),
        }
    }
}

/// The headline block: the accuracy first and largest, then the rest, each escaped here.
pub fn headline(report: &Report) -> String {
    let training = report.training.as_ref();
    let mut figures = Vec::new();
    if let Some(e) = &report.evaluation {
        figures.extend(measured(e));
    }
    let recorded = training.and_then(|t| t.test_accuracy);
    let evaluated_test = report
        .evaluation
        .as_ref()
        .is_some_and(|e| e.name == super::TEST_SET);
    if let (Some(accuracy), false) = (recorded, evaluated_test) {
        let figure = Figure::new(
            "test accuracy when trained",
            percent(accuracy),
            "on the training run's held-out test set",
        );
        // Without an evaluation it is the main figure.
        let at = usize::from(!figures.is_empty());
        figures.insert(at, figure);
    }
    figures.extend(training.and_then(images_trained));
    figures.extend(training.and_then(training_time));
    if figures.is_empty() {
        return super::html::note(
            "No figures to show: no images were evaluated and the model records no test accuracy.",
        );
    }
    let mut out = format!("<section id=\"{ID}\" class=\"figures\">\n");
    for (i, f) in figures.iter().enumerate() {
        let class = if i == 0 { "figure main" } else { "figure" };
        let _ = writeln!(
            out,
            "<div class=\"{class}\"><div class=\"value\">{}</div><div class=\"label\">{}</div>\
             <div class=\"detail\">{}</div></div>",
            escape(&f.value),
            escape(&f.label),
            escape(&f.detail)
        );
    }
    out.push_str("</section>\n");
    out
}

/// Accuracy, F1 per class (or their range) and ROC AUC of the evaluated images.
fn measured(e: &Evaluation) -> Vec<Figure> {
    let m = &e.metrics;
    let label = if e.name == super::TEST_SET {
        "test accuracy".to_string()
    } else {
        "accuracy".to_string()
    };
    let on = format!("on {} ({} images)", e.name, m.size);
    let mut figures = vec![Figure::new(label, percent(m.accuracy), on)];
    if m.per_class.len() <= MAX_F1_FIGURES {
        for r in &m.per_class {
            let detail = format!(
                "precision {} · recall {}",
                fraction(r.precision),
                fraction(r.recall)
            );
            figures.push(Figure::new(
                format!("F1 {}", r.class),
                fraction(r.f1),
                detail,
            ));
        }
    } else {
        let f1 = m.per_class.iter().map(|r| r.f1).filter(|f| f.is_finite());
        let (lo, hi) = f1.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), f| {
            (lo.min(f), hi.max(f))
        });
        let detail = format!("per class from {} to {}", fraction(lo), fraction(hi));
        figures.push(Figure::new("macro F1", fraction(m.macro_avg[2]), detail));
    }
    if let Some(auc) = m.roc_auc {
        figures.push(Figure::new(
            "ROC AUC",
            fraction(auc),
            "of the positive class",
        ));
    }
    figures
}

/// Images the network was trained on, with the other splits in the detail line.
fn images_trained(t: &TrainingSummary) -> Option<Figure> {
    let counts = t.counts.as_ref()?;
    let total = |split: &str| -> usize {
        counts
            .iter()
            .filter(|(s, _)| s == split)
            .flat_map(|(_, c)| c)
            .sum()
    };
    let detail = format!(
        "training images; {} validation, {} test",
        thousands(total("val")),
        thousands(total("test"))
    );
    Some(Figure::new("images", thousands(total("train")), detail))
}

/// Wall-clock training time, when the run recorded it (`train --report`).
fn training_time(t: &TrainingSummary) -> Option<Figure> {
    let s = t.seconds?;
    let detail = format!("training; {} with loading the images", duration(s.total));
    Some(Figure::new("training time", duration(s.train), detail))
}

/// `0.8125` as `81.2%`.
fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", 100.0 * x)
    } else {
        "–".to_string()
    }
}

/// Seconds as `4.2 s`, `3 min 05 s` or `1 h 02 min`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".to_string();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_as_people_read_them() {
        assert_eq!(percent(0.8126), "81.3%");
        assert_eq!(percent(f64::NAN), "–");
        assert_eq!(duration(4.21), "4.2 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
