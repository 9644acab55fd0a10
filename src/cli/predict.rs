//! `deepcat predict`: classify files, or every image in folders.

use super::warn_skipped;
use anyhow::{Result, bail};
use clap::Args;
use deepcat::data::{files_below, load_bytes};
use deepcat::model::Predictions;
use deepcat::model_file;
use ndarray::Array2;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Images decoded and classified at a time.
const BATCH: usize = 256;

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
    #[command(flatten)]
    tta: super::tta::TtaArgs,
    #[command(flatten)]
    device: super::device::DeviceArgs,
}

pub fn run(a: PredictArgs) -> Result<ExitCode> {
    let model = a.tta.apply(model_file::load(&a.model)?.model);
    let forward = a.device.forward(&model)?;
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
    let names = &model.classes.names;
    let top = a
        .top
        .unwrap_or(if names.len() == 2 { 2 } else { 3 })
        .clamp(1, names.len());
    // Batch by batch, so memory stays bounded on a folder of any size and results appear as
    // they come.
    let (mut failed_named, mut classified) = (false, 0);
    for batch in files.chunks(BATCH) {
        // Exactly the preprocessing recorded in the model, in parallel.
        let rows: Vec<Result<Vec<u8>, String>> = batch
            .par_iter()
            .map(|(p, _)| load_bytes(p, &model.preprocess))
            .collect();
        let mut ok_paths = Vec::new();
        let mut data = Vec::new();
        for ((path, named), row) in batch.iter().zip(rows) {
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
            continue;
        }
        let x = Array2::from_shape_vec((ok_paths.len(), model.preprocess.features()), data)?;
        let predictions = model.predict_on(x.view(), forward.as_deref())?;
        for (i, path) in ok_paths.iter().enumerate() {
            match print_prediction(path, names, &predictions, i, top, a.json) {
                // The reader went away (`deepcat predict ... | head`): stop quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                other => other?,
            }
        }
        classified += ok_paths.len();
    }
    if classified == 0 {
        bail!(
            "no image could be read from the {} file(s) given",
            files.len()
        );
    }
    Ok(if failed_named {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Row `i`'s line: its class and the `top` most likely classes, or a JSON object.
fn print_prediction(
    path: &Path,
    names: &[String],
    predictions: &Predictions,
    i: usize,
    top: usize,
    json: bool,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = predictions.to_json(i, names, top, Some(&path.to_string_lossy()));
        writeln!(out, "{line}")
    } else {
        let shown: Vec<String> = predictions
            .ranked(i, top)
            .iter()
            .map(|(c, p)| format!("{} {p:.3}", names[*c]))
            .collect();
        writeln!(
            out,
            "{}: {} ({})",
            path.display(),
            names[predictions.classes[i]],
            shown.join(", ")
        )
    }
}
