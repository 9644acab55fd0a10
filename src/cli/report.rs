//! `deepcat report`: a saved model's HTML report, evaluated on a folder of class sub-folders;
//! and the report `deepcat train --report` writes after training.

use super::check_max_skipped;
use super::evaluate::{Classified, classify};
use anyhow::{Context, Result};
use clap::Args;
use deepcat::data::Examples;
use deepcat::model::Model;
use deepcat::model_file;
use deepcat::report::{self, Evaluation, Report, TrainingSummary};
use std::path::{Path, PathBuf};
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
    /// Hold at most this much image data at a time (e.g. 64MiB, 2GiB) [default: half the
    /// memory available]; a larger folder is evaluated in chunks.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    memory_limit: Option<u64>,
}

const TITLE: &str = "deepcat training report";

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    check_max_skipped(a.max_skipped)?;
    super::train::check_writable(&a.out, "--out")?;
    let file = model_file::load(&a.model)?;
    let model = file.model;
    let started = Instant::now();
    let Classified {
        predictions,
        labels,
        paths,
        skipped,
    } = classify(&model, &a.data_dir, a.max_skipped, &a.cache, a.memory_limit)?;
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
    let report = Report {
        title: TITLE.into(),
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

/// After `deepcat train`: the report of the model just saved with `training` (its training
/// JSON), evaluated on the test set when there is one.
pub(super) fn write_after_training(
    path: &Path,
    model_path: &Path,
    training: &serde_json::Value,
    model: &Model,
    test: Option<&dyn Examples>,
) -> Result<()> {
    let evaluation = test.map(|t| -> Result<Evaluation> {
        let predictions = model.predict_all(t)?;
        let name = "the test set";
        let mistakes = report::DEFAULT_MISTAKES;
        Ok(Evaluation::new(
            name,
            &model.classes,
            t.labels(),
            t.paths(),
            &predictions,
            mistakes,
        ))
    });
    let evaluation = evaluation.transpose()?;
    let test_size = evaluation.as_ref().map_or(0, |e| e.metrics.size);
    let report = Report {
        title: TITLE.into(),
        lead: format!(
            "Model {}, just trained; evaluated on its test set ({test_size} images).",
            model_path.display()
        ),
        classes: model.classes.clone(),
        training: Some(TrainingSummary::from_json(training, &model.classes.names)),
        evaluation,
    };
    report::write(&report, path)
        .with_context(|| format!("writing the report to {}", path.display()))
}
