//! The `config`, `data` and `timings` sections: how the run was set up, on what images, and
//! how long it took.

use super::html::{escape, note, seconds, table};
use super::{Evaluation, TrainingSummary};
use crate::data::SkippedFile;
use crate::nn::spec::{LayerSpec, describe};
use serde_json::Value;
use std::fmt::Write;

/// The network's layers as `deepcat summary` prints them, beside the training settings as
/// a table of readable rows (nested settings by dotted name, the layers in their short form).
pub fn config(training: Option<&TrainingSummary>) -> String {
    let Some(t) = training.filter(|t| !t.settings.is_empty() || t.layers.is_some()) else {
        return note("The model file records no training configuration.");
    };
    let layers = match &t.layers {
        Some(summary) => format!(
            "<pre class=\"summary\">{}</pre>",
            escape(&summary.to_string())
        ),
        None => note(
            "The model file does not record its input size (a model trained by an older \
             deepcat), so the layer summary cannot be rebuilt here: run deepcat summary MODEL.",
        ),
    };
    let mut rows = Vec::new();
    for (key, value) in &t.settings {
        setting_rows(key, value, &mut rows);
    }
    let settings = if rows.is_empty() {
        note("No settings are recorded.")
    } else {
        table("settings", &["setting".into(), "value".into()], &rows)
    };
    format!(
        "<p>As recorded in the model file's <code>training</code> metadata.</p>\n\
         <div class=\"side-by-side\">\n<div><h3>Layers</h3>\n{layers}</div>\n\
         <div><h3>Settings</h3>\n{settings}</div>\n</div>"
    )
}

/// The rows of one setting: an object gives a row per member (`optimizer.beta1`), the layer
/// list its short form, anything else one row. Names and values are escaped here.
fn setting_rows(key: &str, value: &Value, rows: &mut Vec<Vec<String>>) {
    let layers = key
        .ends_with("body")
        .then(|| serde_json::from_value::<Vec<LayerSpec>>(value.clone()).ok())
        .flatten();
    match (value, layers) {
        (_, Some(layers)) => rows.push(vec![escape(key), code(&describe(&layers))]),
        (Value::Object(members), _) if !members.is_empty() => {
            for (k, v) in members {
                setting_rows(&format!("{key}.{k}"), v, rows);
            }
        }
        _ => rows.push(vec![escape(key), escape(&plain(value))]),
    }
}

/// A JSON value as a person writes it: strings bare, null as a dash, lists comma-separated,
/// a number saved from an `f32` as that `f32` prints (`0.001`, not `0.0010000000474974513`).
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "–".to_string(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let single = x as f32;
            if f64::from(single) == x {
                single.to_string()
            } else {
                x.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(m) if m.is_empty() => "–".to_string(),
        other => other.to_string(),
    }
}

/// `text` as code, escaped.
fn code(text: &str) -> String {
    format!("<code>{}</code>", escape(text))
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
