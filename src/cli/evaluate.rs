//! `deepcat evaluate`: a saved model on a folder of class sub-folders.

use super::{check_max_skipped, warn_skipped};
use anyhow::{Context, Result};
use clap::Args;
use deepcat::data::{SkippedFile, visit_labelled, visit_labelled_share};
use deepcat::metrics::{evaluate, most_confident_errors};
use deepcat::model::{Model, Predictions};
use deepcat::model_file;
use deepcat::parallel::Group;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `deepcat evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Folder whose sub-folders are named after the model's classes.
    data_dir: PathBuf,
    /// Stop with an error when more than this fraction of the files cannot be used.
    #[arg(long, value_name = "F", default_value_t = deepcat::data::DEFAULT_MAX_SKIPPED)]
    max_skipped: f64,
    /// List the N most confidently wrong images.
    #[arg(long, value_name = "N", default_value_t = 0)]
    errors: usize,
    /// Print one JSON object instead of a report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: super::cache::CacheArgs,
    #[command(flatten)]
    tta: super::tta::TtaArgs,
    /// Hold at most this much image data at a time (e.g. 64MiB, 2GiB) [default: half the
    /// memory available]; a larger folder is evaluated in chunks.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    memory_limit: Option<u64>,
    #[command(flatten)]
    device: super::device::DeviceArgs,
}

/// A model's predictions on every image of a folder of class sub-folders.
pub(super) struct Classified {
    pub predictions: Predictions,
    /// The true class of each prediction's image.
    pub labels: Vec<usize>,
    /// The image file of each prediction.
    pub paths: Vec<PathBuf>,
    pub skipped: Vec<SkippedFile>,
}

/// Loads the images under `data_dir` exactly as `model` was trained to see them, in chunks
/// that fit the memory budget, and classifies them; warns of skipped files and of cache
/// trouble on standard error.
pub(super) fn classify(
    model: &Model,
    data_dir: &Path,
    max_skipped: f64,
    cache: &super::cache::CacheArgs,
    memory_limit: Option<u64>,
    device: &super::device::DeviceArgs,
) -> Result<Classified> {
    let forward = device.forward(model)?;
    let chunk = deepcat::data::memory::images_per_chunk(model.preprocess.features(), memory_limit)?;
    let mut predictions = Predictions::empty(model.classes.len());
    let (mut labels, mut paths) = (Vec::new(), Vec::new());
    let (skipped, cached) = visit_labelled(
        data_dir,
        &model.classes.names,
        &model.preprocess,
        max_skipped,
        cache.cache().as_ref(),
        chunk,
        |data| {
            predictions.append(model.predict_on(data.x.view(), forward.as_deref())?);
            labels.extend(data.labels);
            paths.extend(data.paths);
            Ok(())
        },
    )
    .with_context(|| format!("evaluating on {}", data_dir.display()))?;
    warn_skipped(&skipped);
    super::cache::warn(&cached);
    Ok(Classified {
        predictions,
        labels,
        paths,
        skipped,
    })
}

/// [`classify`] with the work shared among the processes `mpirun` started: each decodes and
/// classifies its share of the files, and every process gets all the results, in file order.
fn classify_shared(
    model: &Model,
    data_dir: &Path,
    max_skipped: f64,
    memory_limit: Option<u64>,
    group: &Group,
) -> Result<Classified> {
    let chunk = deepcat::data::memory::images_per_chunk(model.preprocess.features(), memory_limit)?
        / group.local().0.max(1);
    let mut predictions = Predictions::empty(model.classes.len());
    let (mut labels, mut paths) = (Vec::new(), Vec::new());
    let skipped = visit_labelled_share(
        data_dir,
        &model.classes.names,
        &model.preprocess,
        max_skipped,
        chunk,
        group,
        |data| {
            predictions.append(model.predict(data.x.view()));
            labels.extend(data.labels);
            paths.extend(data.paths);
            Ok(())
        },
    )
    .with_context(|| format!("evaluating on {}", data_dir.display()))?;
    let mut all = Classified {
        predictions: predictions.gather(group),
        labels: Vec::new(),
        paths: Vec::new(),
        skipped,
    };
    for part in group.gather(json!([labels, paths]).to_string().as_bytes()) {
        let (l, f): (Vec<usize>, Vec<PathBuf>) = serde_json::from_slice(&part)?;
        all.labels.extend(l);
        all.paths.extend(f);
    }
    if group.is_root() {
        warn_skipped(&all.skipped);
    }
    Ok(all)
}

pub fn run(a: EvaluateArgs, group: &Group) -> Result<ExitCode> {
    check_max_skipped(a.max_skipped)?;
    let file = model_file::load(&a.model)?;
    let model = a.tta.apply(file.model);
    let Classified {
        predictions,
        labels,
        paths,
        skipped,
    } = if group.is_solo() {
        classify(
            &model,
            &a.data_dir,
            a.max_skipped,
            &a.cache,
            a.memory_limit,
            &a.device,
        )?
    } else {
        classify_shared(&model, &a.data_dir, a.max_skipped, a.memory_limit, group)?
    };
    if !group.is_root() {
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = evaluate(&model.classes, &labels, &predictions);
    let errors = most_confident_errors(&model.classes, &paths, &labels, &predictions, a.errors);
    if a.json {
        let mut out = serde_json::to_value(&metrics)?;
        out["positive"] = json!(model.classes.positive_name());
        out["errors"] = json!(errors);
        out["skipped"] = json!(skipped);
        out["model"] = json!(a.model);
        println!("{out}");
    } else {
        println!(
            "Accuracy: {:.4} on {} images ({} files skipped)\n",
            metrics.accuracy,
            metrics.size,
            skipped.len()
        );
        print!("{}", metrics.report());
        if !errors.is_empty() {
            println!("\nMost confidently wrong images:");
            for e in &errors {
                println!("  {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
