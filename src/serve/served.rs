//! The model in service: read and checked completely before it serves, so a reload can
//! replace it without downtime and a bad file never replaces a good model.
//!
//! Each request takes the [`InService`] current when it starts and keeps it to the end: a
//! reload swaps in a new one (with its own batch worker) while requests in flight finish on
//! the model they started with. The old worker stops once its last request is answered.

use super::ServeConfig;
use super::batcher::Batcher;
use super::metrics::Metrics;
use crate::model::Model;
use crate::model_file::{self, ModelFile};
use crate::nn::Summary;
use crate::{Error, Result};
use bytes::Bytes;
use ndarray::Array2;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A model file read, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct Served {
    /// Where it was read from (and is read again on reload).
    pub path: PathBuf,
    /// What it holds.
    pub file: ModelFile,
    /// SHA-256 of the file's bytes, in hex.
    pub sha256: String,
}

/// Reads `path` and checks it completely: the file parses and every tensor has its shape
/// ([`model_file::load`]), the network runs on a black and a grey image and gives finite
/// probabilities that sum to 1, and the file did not change while it was read (a copy in
/// progress).
///
/// # Errors
/// [`Error::Model`] or [`Error::Io`] saying what is wrong.
pub fn load_checked(path: &Path) -> Result<Served> {
    let before = sha256_of(path)?;
    let file = model_file::load(path)?;
    check_runs(&file.model).map_err(|reason| Error::model(path, reason))?;
    let after = sha256_of(path)?;
    if before != after {
        return Err(Error::model(
            path,
            "the file changed while it was read (still being written?); try again once it is complete",
        ));
    }
    Ok(Served {
        path: path.to_path_buf(),
        file,
        sha256: after,
    })
}

fn sha256_of(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The network's answer for two plain images must be probabilities: a file whose weights
/// parse but hold NaN or infinities would otherwise answer every request with nonsense.
fn check_runs(model: &Model) -> std::result::Result<(), String> {
    let features = model.preprocess.features();
    let x = Array2::from_shape_fn((2, features), |(i, _)| if i == 0 { 0u8 } else { 128 });
    let p = model.predict(x.view());
    let classes = model.classes.len();
    if p.probabilities.dim() != (2, classes) {
        return Err(format!(
            "the network gives {:?} outputs for 2 images, not (2, {classes})",
            p.probabilities.dim()
        ));
    }
    for row in p.probabilities.rows() {
        let sum: f32 = row.sum();
        if row.iter().any(|v| !v.is_finite()) || (sum - 1.0).abs() > 1e-3 {
            return Err(format!(
                "the network's probabilities are not finite or do not sum to 1 ({row}): \
                 corrupt weights?"
            ));
        }
    }
    Ok(())
}

/// A model with its batch worker and the answers that depend only on it.
#[derive(Debug)]
pub(super) struct InService {
    pub model: Arc<Model>,
    pub batcher: Batcher,
    /// `GET /api/model`'s body.
    pub metadata: Bytes,
    /// The `top` of each answer: as `deepcat predict`'s default.
    pub top: usize,
    pub sha256: String,
}

impl InService {
    /// Starts a batch worker for `served`'s model.
    ///
    /// # Errors
    /// If the worker's thread cannot start, or the model cannot be copied to the device.
    pub fn start(
        served: &Served,
        config: &ServeConfig,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let mut model = served.file.model.clone();
        if let Some(flips) = config.tta {
            model.tta = flips;
        }
        let forward = crate::device::forward_on(config.device, &model.network)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let model = Arc::new(model);
        // The worker stops when the last Batcher clone is dropped: no need to join it.
        let (batcher, _worker) = Batcher::start(
            (Arc::clone(&model), forward),
            config.queue,
            super::MAX_BATCH,
            Arc::clone(metrics),
        )?;
        let classes = model.classes.len();
        Ok(InService {
            metadata: Bytes::from(metadata(served, config).to_string()),
            top: if classes == 2 { 2 } else { 3.min(classes) },
            model,
            batcher,
            sha256: served.sha256.clone(),
        })
    }
}

/// `GET /api/model`: classes, preprocessing, architecture (as tokens and in short), parameter
/// counts, how the model was trained (as saved), its file's hash and this server's limits.
fn metadata(served: &Served, config: &ServeConfig) -> Value {
    let model = &served.file.model;
    let summary = model.network.summary();
    let test_accuracy = served
        .file
        .training
        .as_ref()
        .and_then(|t| t.get("test_accuracy"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "classes": model.classes.names,
        "positive": model.classes.positive_name(),
        "image_size": model.preprocess.size,
        "preprocessing": {
            "size": model.preprocess.size,
            "resize": model.preprocess.filter.name(),
            "exif_orientation": model.preprocess.exif_orientation,
            "pixel_layout": "hwc_rgb",
            "normalisation": "divide_by_255",
            "test_time_flips": config.tta.unwrap_or(model.tta),
        },
        "architecture": crate::nn::spec::describe(&model.network.architecture().body),
        "architecture_short": short_form(&summary),
        "head": summary.head,
        "summary": summary,
        "parameters": summary.trainable() + summary.non_trainable(),
        "trainable": summary.trainable(),
        "non_trainable": summary.non_trainable(),
        "training": served.file.training,
        "test_accuracy": test_accuracy,
        "sha256": served.sha256,
        "limits": {
            "max_upload_bytes": config.max_upload,
            "max_pixels": config.max_pixels,
            "max_batch": super::MAX_BATCH,
            "decode_budget_pixels": config.decode_budget,
        },
    })
}

/// The architecture in a line a person reads at a glance, from the summary: runs of layers
/// of one kind become one step with their widths, e.g. `64×64×3 → conv 16, 32, 64 (batch
/// norm, ReLU, max pool) → global average pool → dense 2 (softmax)`. The only place the
/// server reads the summary's rows: adapt here when the summary's shape changes.
pub fn short_form(summary: &Summary) -> String {
    let mut steps: Vec<(String, Vec<String>, Vec<&str>)> = Vec::new();
    let (output, body) = match summary.layers.split_last() {
        Some((last, body)) => (last.layer.as_str(), body),
        None => ("", &summary.layers[..]),
    };
    for row in body {
        let token = row.layer.as_str();
        let digits = token.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let kind = &token[..token.len() - digits.len()];
        let (name, extra) = match kind {
            "conv" => ("conv", None),
            "dense" => ("dense", None),
            "bn" => ("", Some("batch norm")),
            "relu" => ("", Some("ReLU")),
            "pool" => ("", Some("max pool")),
            "dropout" => ("", Some("dropout")),
            "gap" => ("global average pool", None),
            other => (other, None),
        };
        match (name, extra, steps.last_mut()) {
            ("", Some(e), Some(last)) => {
                if !last.2.contains(&e) {
                    last.2.push(e);
                }
            }
            (n, _, Some(last)) if !n.is_empty() && last.0 == n && !digits.is_empty() => {
                last.1.push(digits.to_string());
            }
            (n, e, _) => {
                let widths = if digits.is_empty() {
                    vec![]
                } else {
                    vec![digits.to_string()]
                };
                let label = if n.is_empty() { e.unwrap_or(token) } else { n };
                steps.push((label.to_string(), widths, vec![]));
            }
        }
    }
    let mut parts = vec![summary.input.to_string()];
    for (name, widths, extras) in steps {
        let mut s = name;
        if !widths.is_empty() {
            s = format!("{s} {}", widths.join(", "));
        }
        if !extras.is_empty() {
            s = format!("{s} ({})", extras.join(", "));
        }
        parts.push(s);
    }
    let units = output.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    parts.push(format!("output {units} ({})", summary.head));
    parts.join(" → ")
}
