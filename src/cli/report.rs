//! `deepcat report`: a saved model's HTML report, evaluated on a folder of class sub-folders.
//! (The report `deepcat train --report` writes comes from the library's training flow.)

use super::check_max_skipped;
use super::evaluate::{Classified, classify};
use anyhow::{Context, Result};
use clap::Args;
use deepcat::model_file;
use deepcat::report::{self, Evaluation, Report, TrainingSummary};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Flags of `deepcat report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Folder whose sub-folders are named after the model's classes.
    data_dir: PathBuf,
    /// Where to write the HTML page.
    #[arg(long, value_name = "PATH", default_value = "report.html")]
    out: PathBuf,
    /// Show the N most confidently wrong images.
    #[arg(long, value_name = "N", default_value_t = report::DEFAULT_MISTAKES)]
    mistakes: usize,
    /// Stop with an error when more than this fraction of the files cannot be used.
    #[arg(long, value_name = "F", default_value_t = deepcat::data::DEFAULT_MAX_SKIPPED)]
    max_skipped: f64,
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

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    check_max_skipped(a.max_skipped)?;
    super::check_writable(&a.out, "--out")?;
    let file = model_file::load(&a.model)?;
    let model = a.tta.apply(file.model);
    let started = Instant::now();
    let Classified {
        predictions,
        labels,
        paths,
        skipped,
    } = classify(
        &model,
        &a.data_dir,
        a.max_skipped,
        &a.cache,
        a.memory_limit,
        &a.device,
    )?;
    let folder = a.data_dir.display().to_string();
    let mut evaluation = Evaluation::new(
        &folder,
        &model.classes,
        &labels,
        &paths,
        &predictions,
        a.mistakes,
    );
    evaluation.skipped = Some(skipped);
    evaluation.seconds = Some(started.elapsed().as_secs_f64());
    evaluation.explain_mistakes(&model);
    let report = Report {
        title: report::TITLE.into(),
        lead: format!(
            "Model {}, evaluated on {folder} ({} images).",
            a.model.display(),
            evaluation.metrics.size
        ),
        training: file
            .training
            .as_ref()
            .map(|t| TrainingSummary::from_json(t, &model.classes.names)),
        classes: model.classes,
        evaluation: Some(evaluation),
    };
    report::write(&report, &a.out)
        .with_context(|| format!("writing the report to {}", a.out.display()))?;
    println!("Saved report to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
