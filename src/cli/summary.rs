//! `deepcat summary`: a saved model's layers, output shapes and parameter counts, as Keras's
//! `model.summary()` prints them.

use anyhow::Result;
use clap::Args;
use deepcat::model_file;
use deepcat::nn::spec::describe;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `deepcat summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SummaryArgs) -> Result<ExitCode> {
    let file = model_file::load(&a.model)?;
    let model = &file.model;
    let summary = model.network.summary();
    if a.json {
        let out = json!({
            "model": a.model,
            "classes": model.classes.names,
            "positive": model.classes.positive_name(),
            "image_size": model.preprocess.size,
            "architecture": describe(&model.network.architecture().body),
            "summary": summary,
            "trainable": summary.trainable(),
            "non_trainable": summary.non_trainable(),
        });
        println!("{out}");
    } else {
        println!(
            "Model {}: {} classes ({}), {}×{} RGB input, layers \"{}\"\n",
            a.model.display(),
            model.classes.len(),
            model.classes.names.join(", "),
            model.preprocess.size,
            model.preprocess.size,
            describe(&model.network.architecture().body)
        );
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}
