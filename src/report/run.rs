//! The `config`, `data` and `timings` sections: how the run was set up, on what images, and
//! how long it took.

use super::html::{escape, note, seconds, table};
use super::{Evaluation, TrainingSummary};
use crate::data::SkippedFile;
use serde_json::Value;
use std::fmt::Write;

/// The training settings as recorded in the model file, pretty-printed.
pub fn config(training: Option<&TrainingSummary>) -> String {
    match training {
        Some(t) if !t.settings.is_empty() => {
            let settings = Value::Object(t.settings.clone());
            let text = serde_json::to_string_pretty(&settings).unwrap_or_default();
            format!(
                "<p>As recorded in the model file's <code>training</code> metadata.</p>\n<pre>{}</pre>",
                escape(&text)
            )
        }
        _ => note("The model file records no training configuration."),
    }
}

/// Image counts per split and class (training, then the evaluated images), and the files
/// that could not be used, with why.
pub fn data(
    classes: &[String],
    training: Option<&TrainingSummary>,
    evaluation: Option<&Evaluation>,
) -> String {
    let mut header = vec!["images".to_string()];
    header.extend(classes.iter().map(|c| escape(c)));
    header.push("total".into());
    let row = |name: String, counts: &[usize]| {
        let mut row = vec![name];
        row.extend(counts.iter().map(usize::to_string));
        row.push(counts.iter().sum::<usize>().to_string());
        row
    };
    let mut rows: Vec<Vec<String>> = training
        .and_then(|t| t.counts.as_ref())
        .into_iter()
        .flatten()
        .map(|(split, counts)| row(format!("training run: {}", escape(split)), counts))
        .collect();
    if let Some(e) = evaluation {
        let support: Vec<usize> = e.metrics.per_class.iter().map(|r| r.support).collect();
        rows.push(row(format!("evaluated: {}", escape(&e.name)), &support));
    }
    let mut out = if rows.is_empty() {
        note("No image counts are recorded.")
    } else {
        table("counts", &header, &rows)
    };
    if let Some((count, files)) = training.and_then(|t| t.skipped.as_ref()) {
        out.push_str(&skipped("Skipped while training", *count, files));
    }
    if let Some((e, files)) = evaluation.and_then(|e| Some((e, e.skipped.as_ref()?))) {
        let heading = format!("Skipped in {}", e.name);
        out.push_str(&skipped(&heading, files.len(), files));
    }
    out
}

/// A sub-heading, the count, and a table of the files with their reasons.
fn skipped(heading: &str, count: usize, files: &[SkippedFile]) -> String {
    let mut out = format!(
        "\n<h3>{}: {count} file{}</h3>\n",
        escape(heading),
        if count == 1 { "" } else { "s" }
    );
    if !files.is_empty() {
        let header = ["file".to_string(), "reason".to_string()];
        let rows: Vec<Vec<String>> = files
            .iter()
            .map(|f| vec![escape(&f.path.display().to_string()), escape(&f.reason)])
            .collect();
        out.push_str(&table("skipped", &header, &rows));
    }
    out
}

/// Wall-clock times of the training run and of the evaluation.
pub fn timings(training: Option<&TrainingSummary>, evaluation: Option<&Evaluation>) -> String {
    let mut rows = Vec::new();
    if let Some(t) = training.and_then(|t| t.seconds) {
        for (name, s) in [
            ("loading the images", t.load),
            ("training", t.train),
            ("the whole training run", t.total),
        ] {
            rows.push(vec![name.to_string(), seconds(s)]);
        }
    }
    if let Some(s) = evaluation.and_then(|e| e.seconds) {
        rows.push(vec![
            "loading and classifying the evaluated images".into(),
            seconds(s),
        ]);
    }
    if rows.is_empty() {
        return note("No timings are recorded.");
    }
    let mut out = table("timings", &["step".into(), "seconds".into()], &rows);
    let _ = write!(out, "\n<p class=\"axis\">Wall-clock time.</p>");
    out
}
