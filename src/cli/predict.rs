//! `deepcat predict`: classify files, or every image in folders.

use super::warn_skipped;
use anyhow::{Result, bail};
use clap::Args;
use deepcat::data::{files_below, load_one};
use deepcat::model_file;
use ndarray::Array2;
use rayon::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `deepcat predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Image files, or folders to search (recursively) for images.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Show the K most likely classes [default: all with two classes, else 3].
    #[arg(long, value_name = "K")]
    top: Option<usize>,
    /// Print one JSON object per image.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PredictArgs) -> Result<ExitCode> {
    let model = model_file::load(&a.model)?.model;
    // (path, named on the command line?)
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    for p in &a.paths {
        if p.is_dir() {
            let (found, odd) = files_below(p)?;
            warn_skipped(&odd);
            files.extend(found.into_iter().map(|f| (f, false)));
        } else {
            files.push((p.clone(), true));
        }
    }
    // Exactly the preprocessing recorded in the model, in parallel.
    let rows: Vec<Result<Vec<f32>, String>> = files
        .par_iter()
        .map(|(p, _)| load_one(p, &model.preprocess))
        .collect();
    let mut failed_named = false;
    let mut ok_paths = Vec::new();
    let mut data = Vec::new();
    for ((path, named), row) in files.iter().zip(rows) {
        match row {
            Ok(r) => {
                ok_paths.push(path);
                data.extend(r);
            }
            Err(reason) => {
                failed_named |= *named;
                eprintln!("warning: skipped {}: {reason}", path.display());
            }
        }
    }
    if ok_paths.is_empty() {
        bail!(
            "no image could be read from the {} file(s) given",
            files.len()
        );
    }
    let x = Array2::from_shape_vec((ok_paths.len(), model.preprocess.features()), data)?;
    let predictions = model.predict(x.view());
    let names = &model.classes.names;
    let top = a
        .top
        .unwrap_or(if names.len() == 2 { 2 } else { 3 })
        .clamp(1, names.len());
    for (i, path) in ok_paths.iter().enumerate() {
        let class = predictions.classes[i];
        let probs = predictions.probabilities.row(i);
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
        ranked.truncate(top);
        if a.json {
            let all: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(probs.iter())
                .map(|(n, p)| (n.clone(), json!(p)))
                .collect();
            let out = json!({
                "path": path,
                "class": names[class],
                "probability": probs[class],
                "probabilities": all,
                "top": ranked.iter().map(|(c, p)| json!({"class": names[*c], "probability": p})).collect::<Vec<_>>(),
            });
            println!("{out}");
        } else {
            let shown: Vec<String> = ranked
                .iter()
                .map(|(c, p)| format!("{} {p:.3}", names[*c]))
                .collect();
            println!(
                "{}: {} ({})",
                path.display(),
                names[class],
                shown.join(", ")
            );
        }
    }
    Ok(if failed_named {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
