//! `deepcat explain`: one PNG per photo, the photo with a heat map of where the model looked
//! (see `deepcat::explain` for the maths).

use anyhow::{Context, Result};
use clap::Args;
use deepcat::data::{MAX_PIXELS, decode_photo};
use deepcat::explain::{self, overlay};
use deepcat::model::Model;
use deepcat::model_file;
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `deepcat explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Photos to explain.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The folder the overlays go to (made if missing, its parent must exist).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Explain this class instead of the predicted one.
    #[arg(long, value_name = "NAME")]
    class: Option<String>,
    /// Print one JSON object per photo: where its overlay went and what was predicted.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExplainArgs) -> Result<ExitCode> {
    prepare_out(&a.out)?;
    let model = model_file::load(&a.model)?.model;
    let class = match &a.class {
        None => None,
        Some(name) => match model.classes.names.iter().position(|n| n == name) {
            Some(c) => Some(c),
            None => super::usage!(
                "--class {name:?} is not one of the model's classes ({})",
                model.classes.names.join(", ")
            ),
        },
    };
    let mut taken = HashSet::new();
    let mut failed = false;
    for path in &a.images {
        let out = a.out.join(overlay_name(path, &mut taken));
        match explain_one(&model, path, class, &out) {
            Ok(line) if a.json => println!("{line}"),
            Ok(line) => println!(
                "{}: {} ({:.3}), heat for {} ({}) -> {}",
                path.display(),
                line["class"].as_str().unwrap_or_default(),
                line["probability"].as_f64().unwrap_or_default(),
                line["explained"].as_str().unwrap_or_default(),
                line["method"].as_str().unwrap_or_default(),
                out.display()
            ),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Makes the output folder if it is missing; its parent must exist.
fn prepare_out(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Ok(());
    }
    if out.exists() {
        super::usage!("--out {} is a file; give a folder", out.display());
    }
    let parent = model_file::folder_of(out);
    if !parent.is_dir() {
        super::usage!(
            "--out {}: folder {} does not exist",
            out.display(),
            parent.display()
        );
    }
    std::fs::create_dir(out).with_context(|| format!("cannot make folder {}", out.display()))
}

/// `photo.png` for `photo.jpg`; `photo-2.png`, `photo-3.png`, ... when two photos share a
/// name.
fn overlay_name(path: &Path, taken: &mut HashSet<String>) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "photo".into(), |s| s.to_string_lossy().into_owned());
    let mut name = format!("{stem}.png");
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{stem}-{n}.png");
    }
    name
}

/// Explains one photo and writes its overlay to `out`; the JSON object describing it.
fn explain_one(
    model: &Model,
    path: &Path,
    class: Option<usize>,
    out: &Path,
) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (photo, row) = decode_photo(&bytes, &model.preprocess, MAX_PIXELS)
        .map_err(|reason| anyhow::anyhow!("cannot use {}: {reason}", path.display()))?;
    let e = explain::explain(model, &row, class)?;
    let image = overlay::overlay(&photo, &e.heat.map, overlay::MAX_SIDE);
    let png = overlay::png(&image).map_err(anyhow::Error::msg)?;
    model_file::write_atomically(out, &png)?;
    let names = &model.classes.names;
    let mut line = e
        .prediction
        .to_json(0, names, names.len(), Some(&path.to_string_lossy()));
    line["overlay"] = json!(out);
    line["explained"] = json!(names[e.heat.class]);
    line["method"] = json!(e.heat.method.name());
    line["width"] = json!(image.width());
    line["height"] = json!(image.height());
    Ok(line)
}
