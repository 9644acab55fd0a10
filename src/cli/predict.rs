//! `deepcat predict`: classify files, or every image in folders.

use super::warn_skipped;
use anyhow::{Result, bail};
use clap::Args;
use deepcat::data::{files_below, load_bytes};
use deepcat::model::Predictions;
use deepcat::model_file;
use deepcat::parallel::Group;
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

pub fn run(a: PredictArgs, group: &Group) -> Result<ExitCode> {
    let model = a.tta.apply(model_file::load(&a.model)?.model);
    let forward = a.device.forward(&model)?;
    // (path, named on the command line?)
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    for p in &a.paths {
        if p.is_dir() {
            let (found, odd) = files_below(p)?;
            if group.is_root() {
                warn_skipped(&odd);
            }
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
    let line =
        |path: &Path, p: &Predictions, i: usize| prediction_line(path, names, p, i, top, a.json);
    let tally = if group.is_solo() {
        // Results appear as they come.
        let mut out = std::io::stdout().lock();
        let write = &mut |l: String| out.write_all(l.as_bytes());
        match classify((&model, forward.as_deref()), &files, line, write) {
            // The reader went away (`deepcat predict ... | head`): stop quietly.
            Err(e) if is_broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
    } else {
        // Each process classifies its share of the files; the first prints them all, in order.
        let mut lines = String::new();
        let mine = &files[group.share(files.len())];
        let mut tally = classify((&model, forward.as_deref()), mine, line, &mut |l| {
            lines.push_str(&l);
            Ok(())
        })?;
        let mut sums = [
            f64::from(u8::from(tally.failed_named)),
            tally.classified as f64,
        ];
        group.sum_f64(&mut sums);
        tally = Tally {
            failed_named: sums[0] > 0.0,
            classified: sums[1] as usize,
        };
        let all = group.gather(lines.as_bytes());
        if group.is_root() {
            let mut out = std::io::stdout().lock();
            for part in all {
                match out.write_all(&part) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    other => other?,
                }
            }
        }
        tally
    };
    if tally.classified == 0 {
        bail!(
            "no image could be read from the {} file(s) given",
            files.len()
        );
    }
    Ok(if tally.failed_named {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What a run of `predict` classified.
struct Tally {
    /// Whether a file named on the command line could not be read.
    failed_named: bool,
    /// Images classified.
    classified: usize,
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Decodes and classifies `files` batch by batch (so memory stays bounded on a folder of any
/// size), handing each image's `line` to `out`; warns of files it cannot read.
fn classify(
    (model, forward): (
        &deepcat::model::Model,
        Option<&dyn deepcat::device::Forward>,
    ),
    files: &[(PathBuf, bool)],
    line: impl Fn(&Path, &Predictions, usize) -> String,
    out: &mut dyn FnMut(String) -> std::io::Result<()>,
) -> Result<Tally> {
    let mut tally = Tally {
        failed_named: false,
        classified: 0,
    };
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
                    tally.failed_named |= *named;
                    eprintln!("warning: skipped {}: {reason}", path.display());
                }
            }
        }
        if ok_paths.is_empty() {
            continue;
        }
        let x = Array2::from_shape_vec((ok_paths.len(), model.preprocess.features()), data)?;
        let predictions = model.predict_on(x.view(), forward)?;
        for (i, path) in ok_paths.iter().enumerate() {
            out(line(path, &predictions, i))?;
        }
        tally.classified += ok_paths.len();
    }
    Ok(tally)
}

/// Row `i`'s line, with its newline: its class and the `top` most likely classes, or a JSON
/// object.
fn prediction_line(
    path: &Path,
    names: &[String],
    predictions: &Predictions,
    i: usize,
    top: usize,
    json: bool,
) -> String {
    if json {
        let line = predictions.to_json(i, names, top, Some(&path.to_string_lossy()));
        format!("{line}\n")
    } else {
        let shown: Vec<String> = predictions
            .ranked(i, top)
            .iter()
            .map(|(c, p)| format!("{} {p:.3}", names[*c]))
            .collect();
        format!(
            "{}: {} ({})\n",
            path.display(),
            names[predictions.classes[i]],
            shown.join(", ")
        )
    }
}
