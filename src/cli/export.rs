//! `deepcat export`: a saved model as an ONNX file (see `deepcat::export::onnx` for what the
//! file holds and how its input is prepared).

use super::check_writable;
use anyhow::{Context, Result};
use clap::Args;
use deepcat::export::onnx;
use deepcat::model_file;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `deepcat export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// The ONNX file to write (its folder must exist).
    out: PathBuf,
    /// Print one JSON object saying what was written.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    check_writable(&a.out, "output")?;
    let model = model_file::load(&a.model)?.model;
    onnx::save(&model, &a.out)
        .with_context(|| format!("cannot export {} as ONNX", a.model.display()))?;
    let size = model.preprocess.size;
    if a.json {
        let out = json!({
            "model": a.model,
            "onnx": a.out,
            "opset": onnx::OPSET,
            "input": onnx::INPUT,
            "input_shape": ["N", 3, size, size],
            "output": onnx::OUTPUT,
            "output_shape": ["N", model.classes.len()],
            "classes": model.classes.names,
            "resize": model.preprocess.filter.name(),
            "tta": model.tta,
        });
        println!("{out}");
    } else {
        println!(
            "Wrote {} (ONNX opset {}): input {:?} float32 (N, 3, {size}, {size}) in [0, 1], \
             resized with {}; output {:?} (N, {}) for classes {}{}",
            a.out.display(),
            onnx::OPSET,
            onnx::INPUT,
            model.preprocess.filter.name(),
            onnx::OUTPUT,
            model.classes.len(),
            model.classes.names.join(", "),
            if model.tta {
                "; averages each image with its mirror (--tta flip)"
            } else {
                ""
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}
