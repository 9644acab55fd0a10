//! The training report: one self-contained HTML page about a model, for `deepcat train
//! --report` and `deepcat report`.
//!
//! A [`Report`] gathers what is known: the classes, what the model file remembers of its
//! training ([`TrainingSummary`], read from its `training` JSON) and an [`Evaluation`] on
//! labelled images (the test set, or a folder). [`render`] turns it into HTML with every
//! figure inline (SVG from [`crate::plot`], thumbnails as PNG `data:` URIs) and nothing
//! fetched from elsewhere, so the file can be mailed or archived alone. The page opens with
//! its headline figures (id [`HEADLINE`]); then each part is a `<section>` whose id
//! ([`SECTIONS`]) stays stable for tools that read the page. This module measures nothing
//! itself: the numbers come from [`crate::metrics`].

mod headline;
mod html;
mod mistakes;
mod plots;
mod run;
mod scores;
pub mod training;

pub use html::{base64, escape};
pub use mistakes::{THUMBNAIL_PX, Thumbnail, overlay_thumbnail, overlays, thumbnail};
pub use training::{Timings, TrainingSummary};

use crate::data::SkippedFile;
use crate::metrics::{Metrics, Mistake, RocPoint, evaluate, most_confident_errors, roc_curve};
use crate::model::{Classes, Predictions};
use crate::{Result, model_file};
use std::path::{Path, PathBuf};

/// The page's title.
pub const TITLE: &str = "deepcat training report";

/// The sections of the page, in order: id, heading. Before them, the headline figures
/// (id [`HEADLINE`]).
pub const SECTIONS: [(&str, &str); 9] = [
    ("curves", "Learning curves"),
    ("learning-rate", "Learning rate"),
    ("confusion", "Confusion matrix"),
    ("per-class", "Per-class scores"),
    ("roc", "ROC curve"),
    ("mistakes", "Most confident mistakes"),
    ("config", "Network and configuration"),
    ("data", "Data"),
    ("timings", "Timings"),
];

/// The id of the headline figures at the top of the page.
pub const HEADLINE: &str = headline::ID;

/// The [`Evaluation::name`] of a training run's own test set: the headline calls its
/// accuracy the test accuracy.
pub const TEST_SET: &str = "the test set";

/// How many confidently wrong images a report shows unless told otherwise.
pub const DEFAULT_MISTAKES: usize = 12;

/// A model's predictions on labelled images, measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// What was evaluated, in words ("the test set", a folder).
    pub name: String,
    /// Every metric.
    pub metrics: Metrics,
    /// The positive class's ROC curve (two classes, both present).
    pub roc: Option<Vec<RocPoint>>,
    /// The most confidently wrong images, most confident first.
    pub mistakes: Vec<Mistake>,
    /// Files under the evaluated folder that could not be used; `None` for a test set,
    /// whose skipped files are the training run's.
    pub skipped: Option<Vec<SkippedFile>>,
    /// Seconds spent loading and classifying, when measured.
    pub seconds: Option<f64>,
    /// Each mistake's heat-map overlay (or why it has none), in the order of `mistakes`, once
    /// [`Evaluation::explain_mistakes`] has drawn them; empty until then, and the report then
    /// shows the thumbnails alone.
    pub overlays: Vec<std::result::Result<Thumbnail, String>>,
}

impl Evaluation {
    /// Measures `predictions` of the images at `paths`, whose true classes are `labels`,
    /// keeping the `mistakes` most confident errors.
    ///
    /// # Panics
    /// If `labels` and the predictions differ in length.
    pub fn new(
        name: impl Into<String>,
        classes: &Classes,
        labels: &[usize],
        paths: &[PathBuf],
        predictions: &Predictions,
        mistakes: usize,
    ) -> Self {
        let roc = classes.positive.and_then(|pos| {
            let scores: Vec<f32> = predictions.probabilities.column(pos).to_vec();
            let positives: Vec<bool> = labels.iter().map(|&l| l == pos).collect();
            roc_curve(&scores, &positives)
        });
        Evaluation {
            name: name.into(),
            metrics: evaluate(classes, labels, predictions),
            roc,
            mistakes: most_confident_errors(classes, paths, labels, predictions, mistakes),
            skipped: None,
            seconds: None,
            overlays: Vec::new(),
        }
    }

    /// Draws each mistake's heat map with `model` (the one that made the predictions), for
    /// the report to show beside its thumbnail.
    pub fn explain_mistakes(&mut self, model: &crate::model::Model) {
        self.overlays = overlays(model, &self.mistakes);
    }
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// The page's title.
    pub title: String,
    /// One line under the title: which model, evaluated on what.
    pub lead: String,
    /// The model's classes.
    pub classes: Classes,
    /// What the model file records of training, if anything.
    pub training: Option<TrainingSummary>,
    /// The measured predictions, if any images were evaluated.
    pub evaluation: Option<Evaluation>,
}

/// The report as one HTML page.
///
/// # Errors
/// [`crate::Error::Plot`] if a figure cannot be drawn.
pub fn render(report: &Report) -> Result<String> {
    let training = report.training.as_ref();
    let evaluation = report.evaluation.as_ref();
    let measured = |part: fn(&Metrics) -> String| match evaluation {
        Some(e) => part(&e.metrics),
        None => html::note("No labelled images were evaluated."),
    };
    let bodies = [
        plots::curves(training)?,
        plots::learning_rate(training)?,
        measured(scores::confusion),
        measured(scores::per_class),
        plots::roc(&report.classes, evaluation)?,
        match evaluation {
            Some(e) => mistakes::mistakes(&e.mistakes, &e.overlays),
            None => html::note("No labelled images were evaluated."),
        },
        run::config(training),
        run::data(&report.classes.names, training, evaluation),
        run::timings(training, evaluation),
    ];
    let sections: Vec<String> = SECTIONS
        .iter()
        .zip(&bodies)
        .map(|((id, heading), body)| html::section(id, heading, body))
        .collect();
    Ok(html::page(
        &report.title,
        &report.lead,
        &headline::headline(report),
        &SECTIONS,
        &sections,
    ))
}

/// Renders the report and writes it to `path` atomically.
///
/// # Errors
/// As [`render`]; [`crate::Error::Io`] if the file cannot be written.
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let page = render(report)?;
    model_file::write_atomically(path, page.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(classes: &[&str], training: Option<serde_json::Value>) -> Report {
        let classes = Classes::new(classes.iter().map(|c| c.to_string()).collect(), None).unwrap();
        let k = classes.len();
        let labels: Vec<usize> = (0..6).map(|i| i % k).collect();
        let predictions = Predictions {
            probabilities: ndarray::Array2::from_shape_fn((6, k), |(i, j)| {
                if j == (i + i / 3) % k {
                    0.8
                } else {
                    0.2 / (k - 1) as f32
                }
            }),
            classes: (0..6).map(|i| (i + i / 3) % k).collect(),
        };
        let paths: Vec<PathBuf> = (0..6).map(|i| format!("missing/{i}.png").into()).collect();
        let training = training.map(|t| TrainingSummary::from_json(&t, &classes.names));
        let evaluation =
            Evaluation::new("the test set", &classes, &labels, &paths, &predictions, 3);
        Report {
            title: "deepcat report".into(),
            lead: "model m.safetensors".into(),
            classes,
            training,
            evaluation: Some(evaluation),
        }
    }

    #[test]
    fn every_section_is_there_once_with_its_heading() {
        let history = json!([
            {"step": 0, "epoch": null, "cost": 0.7, "train_accuracy": 0.5, "val_cost": null,
             "val_accuracy": null, "learning_rate": 0.01},
            {"step": 100, "epoch": null, "cost": 0.4, "train_accuracy": 0.8, "val_cost": null,
             "val_accuracy": null, "learning_rate": 0.01}
        ]);
        let r = report(
            &["cats", "dogs"],
            Some(json!({"history": history, "steps": 200})),
        );
        let page = render(&r).unwrap();
        for (id, heading) in SECTIONS {
            assert_eq!(
                page.matches(&format!("<section id=\"{id}\">")).count(),
                1,
                "{id}"
            );
            assert!(page.contains(&format!("<h2>{heading}</h2>")), "{heading}");
        }
        assert!(page.contains("AUC <strong>"), "the ROC section has no AUC");
        assert!(
            page.contains("<th scope=\"row\">steps</th><td>200</td>"),
            "the configuration is not shown as a table"
        );
        // The headline comes before the first section, the accuracy first in it.
        let top = page.find("<section id=\"headline\"").unwrap();
        assert!(top < page.find("<section id=\"curves\">").unwrap());
        let first = &page[top..];
        let accuracy = first.find("test accuracy").unwrap();
        assert!(accuracy < first.find("F1 cats").unwrap(), "{first}");
        assert!(first.contains("ROC AUC"));
        assert!(page.contains("Constant at 0.01 throughout."));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }

    #[test]
    fn missing_history_and_more_than_two_classes_are_said_in_words() {
        let page = render(&report(&["a", "b", "c"], None)).unwrap();
        assert!(page.contains("no training history"));
        assert!(page.contains("applies to two classes only; this model has 3 classes"));
        assert!(page.contains("records no training configuration"));
        assert!(page.contains("records no learning rates"));
        assert!(page.contains("macro F1") || page.contains("F1 c"));
    }

    #[test]
    fn settings_are_rows_and_the_layers_are_rebuilt_from_the_recorded_input() {
        let config = json!({"config": {"body": [{"kind": "dense", "units": 7}, {"kind": "relu"}],
            "optimizer": {"adam": {"beta1": 0.9}}, "patience": null}, "input":
            {"height": 4, "width": 4, "channels": 3}, "recipe": "dense"});
        let page = render(&report(&["cats", "dogs"], Some(config))).unwrap();
        let config = &page[page.find("<section id=\"config\">").unwrap()..];
        for row in [
            "<th scope=\"row\">config.optimizer.adam.beta1</th><td>0.9</td>",
            "<th scope=\"row\">config.patience</th><td>–</td>",
            "<th scope=\"row\">recipe</th><td>dense</td>",
            "<th scope=\"row\">config.body</th><td><code>dense7 relu</code></td>",
        ] {
            assert!(config.contains(row), "no row {row}");
        }
        // 48 inputs to 7 units, then the head's one unit: 343 + 8 values.
        assert!(
            config.contains("<pre class=\"summary\">"),
            "no layer summary"
        );
        assert!(config.contains("343") && config.contains("Trainable params: 351"));
        assert!(!config.contains("&quot;input&quot;") && !config.contains(">input</th>"));
    }
}
