//! The model file: safetensors weights plus the metadata needed to use them.
//!
//! Two versions. **Version 1** is the document's network, dense layers with ReLU between
//! them, and deepcat still writes it for such networks (so every deepcat since the first reads
//! them). **Version 2** records any architecture: the layer sequence and each layer's settings.
//!
//! Tensors (little-endian f32) are named by layer kind and number, 1-based, as the document's
//! `W1..W4`: `dense1.weight (units_out, units_in)`, `dense1.bias (units_out,)`; in version 2
//! also `conv1.weight (c_out, c_in, k, k)` (PyTorch's layout), `conv1.bias (c_out,)`,
//! `batchnorm1.weight` (γ), `batchnorm1.bias` (β), `batchnorm1.running_mean`,
//! `batchnorm1.running_var` (all `(channels,)`). Optimiser state, when saved for `--resume`,
//! sits beside them as `optimizer.<slot>.<tensor>`.
//!
//! Metadata (`__metadata__`, all values strings):
//!
//! | key | example | meaning |
//! |---|---|---|
//! | `format` | `deepcat` | always |
//! | `format_version` | `1` or `2` | see above |
//! | `classes` | `["cats","random_images"]` | class names; label = index |
//! | `positive` | `cats` | class the sigmoid output stands for (empty with softmax) |
//! | `image_size` | `128` | images are resized to this square |
//! | `resize` | `nearest` | `nearest`, `bilinear` or `lanczos` |
//! | `tta` | `flip` | `flip`: predictions average each image and its mirror; `none` (or absent) |
//! | `orientation` | `exif` | `exif`: EXIF orientation applied; `ignored` (or absent: files from before it was applied) |
//! | `pixel_layout` | `hwc_rgb` | rows are row, column, channel; RGB |
//! | `normalisation` | `divide_by_255` | pixel values scaled to `[0, 1]` |
//! | `layer_sizes` | `[49152,20,7,5,1]` | version 1: the document's `layers_dimensions` |
//! | `activations` | `["relu","relu","relu","sigmoid"]` | version 1: one per dense layer |
//! | `layers` | `[{"kind":"conv","channels":16,"kernel":3,"stride":1},{"kind":"batchnorm"},...]` | version 2: every layer, the output head's dense layer last ([`LayerSpec`]) |
//! | `head` | `sigmoid` | version 2: `sigmoid` or `softmax` |
//! | `optimizer` | `{"kind":"adam",...,"step":420}` | only with optimiser state |
//! | `training` | `{...}` | how it was trained (informational) |
//!
//! Files are written to a temporary file in the same folder and renamed into place, so an
//! interrupted save never leaves a half-written model where a good one was.

use crate::data::{Preprocess, ResizeFilter};
use crate::model::{Classes, Model};
use crate::nn::{Architecture, Dense, Geometry, LayerSpec, Network};
use crate::optim::{OptimizerConfig, OptimizerState};
use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, IxDyn};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The format identifier in every file.
pub const FORMAT: &str = "deepcat";
/// The newest format version this build writes and reads (it reads every older one too):
/// nested architectures (residual blocks).
pub const FORMAT_VERSION: u32 = 3;
/// The version of flat layer sequences (conv networks without blocks), still written for them
/// so that earlier deepcats read them.
pub const LAYERED_FORMAT_VERSION: u32 = 2;
/// The version of the document's dense networks, still written for them.
pub const DENSE_FORMAT_VERSION: u32 = 1;
/// The most layers a version-2 or -3 file may list, nested ones included (a sanity bound for
/// corrupt files).
const MAX_LAYERS: usize = 1000;
const PIXEL_LAYOUT: &str = "hwc_rgb";
const NORMALISATION: &str = "divide_by_255";
const ORIENTATION_EXIF: &str = "exif";
const ORIENTATION_IGNORED: &str = "ignored";
const TTA_FLIP: &str = "flip";
const TTA_NONE: &str = "none";
/// Largest image side a model may declare (a sanity bound for corrupt files).
const MAX_IMAGE_SIZE: u32 = 4096;

/// An optimiser's settings and memory, saved so training can resume where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedOptimizer {
    /// Which optimiser and its settings.
    pub config: OptimizerConfig,
    /// Its memory, aligned with [`Network::named_params`].
    pub state: OptimizerState,
    /// Its slot names (see [`Optimizer::slot_names`](crate::optim::Optimizer::slot_names)).
    pub slot_names: Vec<String>,
}

/// Everything a model file holds.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The classifier.
    pub model: Model,
    /// Optimiser state, when it was saved.
    pub optimizer: Option<SavedOptimizer>,
    /// How the model was trained, as written (informational).
    pub training: Option<serde_json::Value>,
}

fn f32_bytes(a: &ArrayViewD<'_, f32>) -> Vec<u8> {
    a.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `model` (and optionally optimiser state and a training summary) to `path`
/// atomically.
///
/// # Errors
/// [`Error::Io`] if the folder does not exist or cannot be written; [`Error::Model`] if a
/// weight is NaN or infinite (such a model is refused, not saved).
pub fn save(
    path: &Path,
    model: &Model,
    optimizer: Option<&SavedOptimizer>,
    training: Option<&serde_json::Value>,
) -> Result<()> {
    let net = &model.network;
    if !net.is_finite() {
        return Err(Error::model(
            path,
            "refusing to save: the weights contain NaN or infinite values",
        ));
    }
    let mut meta = preprocessing_metadata(model);
    meta.extend(network_metadata(net));
    if let Some(t) = training {
        meta.insert("training".into(), t.to_string());
    }

    let named = net.named_params();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .iter()
        .chain(&net.named_buffers())
        .map(|(name, p)| (name.clone(), p.shape().to_vec(), f32_bytes(p)))
        .collect();
    if let Some(opt) = optimizer {
        let mut value = serde_json::to_value(opt.config)
            .map_err(|e| Error::model(path, format!("cannot encode the optimiser: {e}")))?;
        value["step"] = opt.state.step.into();
        meta.insert("optimizer".into(), value.to_string());
        for (slots, (name, _)) in opt.state.slots.iter().zip(&named) {
            for (slot, slot_name) in slots.iter().zip(&opt.slot_names) {
                tensors.push((
                    format!("optimizer.{slot_name}.{name}"),
                    slot.shape().to_vec(),
                    f32_bytes(&slot.view()),
                ));
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| Error::model(path, format!("cannot encode {name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<(String, TensorView<'_>)>>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::model(path, format!("cannot encode: {e}")))?;
    write_atomically(path, &canonical_header(bytes))
}

/// The metadata every version has: format, classes, and how photos become rows.
fn preprocessing_metadata(model: &Model) -> HashMap<String, String> {
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert(
        "classes".into(),
        serde_json::Value::from(model.classes.names.clone()).to_string(),
    );
    meta.insert(
        "positive".into(),
        model.classes.positive_name().unwrap_or("").into(),
    );
    meta.insert("image_size".into(), model.preprocess.size.to_string());
    meta.insert("resize".into(), model.preprocess.filter.name().into());
    meta.insert(
        "orientation".into(),
        if model.preprocess.exif_orientation {
            ORIENTATION_EXIF
        } else {
            ORIENTATION_IGNORED
        }
        .into(),
    );
    meta.insert(
        "tta".into(),
        if model.tta { TTA_FLIP } else { TTA_NONE }.into(),
    );
    meta.insert("pixel_layout".into(), PIXEL_LAYOUT.into());
    meta.insert("normalisation".into(), NORMALISATION.into());
    meta
}

/// The version and the description of the layers: version 1 (`layer_sizes`, `activations`)
/// for the document's kind of network, version 2 (`layers`, `head`) for a flat sequence of
/// other layers, version 3 (the same keys, layers nested) when a layer holds layers.
fn network_metadata(net: &Network) -> HashMap<String, String> {
    let mut meta: HashMap<String, String> = HashMap::new();
    if net.is_dense_stack() {
        meta.insert("format_version".into(), DENSE_FORMAT_VERSION.to_string());
        meta.insert(
            "layer_sizes".into(),
            serde_json::Value::from(net.sizes()).to_string(),
        );
        let dense_count = net.sizes().len() - 1;
        let activations: Vec<&str> = (0..dense_count)
            .map(|l| {
                if l + 1 < dense_count {
                    "relu"
                } else {
                    net.head().name()
                }
            })
            .collect();
        meta.insert(
            "activations".into(),
            serde_json::Value::from(activations).to_string(),
        );
    } else {
        let version = if net.is_nested() {
            FORMAT_VERSION
        } else {
            LAYERED_FORMAT_VERSION
        };
        meta.insert("format_version".into(), version.to_string());
        meta.insert(
            "layers".into(),
            serde_json::to_string(&net.specs()).unwrap_or_default(),
        );
        meta.insert("head".into(), net.head().name().into());
    }
    meta
}

/// The safetensors header as deepcat writes it: keys sorted, so the same model always gives
/// the same bytes (the `safetensors` crate writes the metadata in hash-map order, which changes
/// from run to run).
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    #[serde(rename = "__metadata__")]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    tensors: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Rewrites the header of a file just encoded by `safetensors::serialize` with sorted keys,
/// padded with spaces to a multiple of 8 bytes as the format recommends. Tensor offsets count
/// from the end of the header, so the data is unchanged.
fn canonical_header(encoded: Vec<u8>) -> Vec<u8> {
    let sorted = encoded
        .get(..8)
        .and_then(|n| Some(u64::from_le_bytes(n.try_into().ok()?) as usize))
        .and_then(|n| encoded.get(8..8 + n).map(|h| (n, h)))
        .and_then(|(n, header)| {
            let header: Header = serde_json::from_slice(header).ok()?;
            Some((n, serde_json::to_vec(&header).ok()?))
        });
    // What safetensors just wrote always parses; keep its bytes if that ever changes.
    let Some((old_len, mut header)) = sorted else {
        return encoded;
    };
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + encoded.len() - 8 - old_len);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out.extend(&encoded[8 + old_len..]);
    out
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, then renames it over
/// `path`: readers see the old file or the new one, never a mix.
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = folder_of(path);
    let context = || format!("cannot write {}", path.display());
    let mut tmp = temporary_in(dir).map_err(|e| Error::io(context(), e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(context(), e))?;
    // Temporary files are created private (0600); a model or plot is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777);
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(context(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(context(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(context(), e.error))?;
    // Make the rename itself durable. Best effort: the new file is already in place, and some
    // file systems cannot sync a folder.
    #[cfg(unix)]
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// The folder `path` is (or will be) in: its parent, or `.` for a bare file name.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new hidden temporary file in `dir`, as [`write_atomically`] makes before renaming it.
fn temporary_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".deepcat-")
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// Whether [`write_atomically`] could write in `dir`: makes and removes the temporary file it
/// would make there. For checking before long work whose result must be saved.
///
/// # Errors
/// The operating system's reason the file cannot be made.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    temporary_in(dir).map(drop)
}

/// `value` as `{:?}` shows it, cut to a readable length: messages quote metadata, and a
/// corrupt file's metadata can be megabytes long.
fn shown(value: &impl std::fmt::Debug) -> String {
    const MAX: usize = 120;
    let text = format!("{value:?}");
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} characters)", &text[..cut], text.chars().count()),
        None => text,
    }
}

struct Reader<'a> {
    path: &'a Path,
    meta: HashMap<String, String>,
}

impl Reader<'_> {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::model(self.path, reason)
    }

    fn get(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.bad(format!("metadata has no {key:?} entry")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let text = self.get(key)?;
        serde_json::from_str(text).map_err(|e| {
            self.bad(format!(
                "metadata {key:?} = {} is not valid: {e}",
                shown(&text)
            ))
        })
    }
}

fn read_tensor(
    st: &SafeTensors<'_>,
    reader: &Reader<'_>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<f32>> {
    let view = st
        .tensor(name)
        .map_err(|_| reader.bad(format!("tensor {name} is missing")))?;
    if view.dtype() != Dtype::F32 {
        return Err(reader.bad(format!("tensor {name} is {:?}, expected F32", view.dtype())));
    }
    if view.shape() != shape {
        return Err(reader.bad(format!(
            "tensor {name} has shape {:?}, expected {shape:?}",
            view.shape()
        )));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(reader.bad(format!("tensor {name} contains NaN or infinite values")));
    }
    // safetensors checked that the byte count fits the shape; an error here would be a bug.
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| {
        reader.bad(format!(
            "tensor {name} does not fit its shape {shape:?}: {e}"
        ))
    })
}

/// Largest safetensors header (the limit of the `safetensors` crate, which refuses more).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads a model file, but never more than its safetensors header says it holds: the 8-byte
/// header length, the header, then the data up to the largest tensor end the header gives
/// (and one byte more, so trailing bytes are still noticed). Something that is not a model
/// (a video given by mistake, `/dev/zero`, a pipe that never ends) costs a few bytes of
/// memory, not the whole file or all of memory. What was read is checked by `safetensors`.
fn read_model_bytes(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let context = || format!("cannot read model file {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(context(), e))?;
    // A regular file's length: room for what is left of it is reserved up front.
    let length = file.metadata().map_or(0, |m| m.len());
    let mut read = |bytes: &mut Vec<u8>, limit: u64| {
        let left = length.saturating_sub(bytes.len() as u64).min(limit);
        bytes.reserve(usize::try_from(left).unwrap_or(0));
        (&mut file)
            .take(limit)
            .read_to_end(bytes)
            .map_err(|e| Error::io(context(), e))
    };
    let mut bytes = Vec::new();
    read(&mut bytes, 8)?;
    let Ok(prefix) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(bytes); // too short: safetensors says so
    };
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES {
        return Ok(bytes); // safetensors refuses it without reading on
    }
    read(&mut bytes, n)?;
    if bytes.len() as u64 != 8 + n {
        return Ok(bytes); // truncated in the header
    }
    // The data ends where the furthest tensor ends; a header that is not JSON ends here.
    let data_end = serde_json::from_slice::<HashMap<String, serde_json::Value>>(&bytes[8..])
        .map(|header| {
            header
                .values()
                .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    read(&mut bytes, data_end.saturating_add(1))?;
    Ok(bytes)
}

/// Reads and checks a model file, of either version.
///
/// # Errors
/// [`Error::Model`] saying what is wrong: not a safetensors file, truncated, not written by
/// deepcat, a newer format version, inconsistent metadata, or missing / misshapen tensors.
pub fn load(path: &Path) -> Result<ModelFile> {
    let bytes = read_model_bytes(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::model(
            path,
            format!("not a readable safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::model(path, format!("cannot read safetensors header: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| Error::model(path, "no deepcat metadata (was it written by deepcat?)"))?;
    let r = Reader { path, meta };

    let version = read_version(&r)?;
    let classes = read_classes(&r)?;
    let preprocess = read_preprocess(&r)?;
    let tta = match r.meta.get("tta").map(String::as_str) {
        Some(TTA_FLIP) => true,
        // Files from before test-time flips say nothing.
        Some(TTA_NONE) | None => false,
        Some(other) => return Err(r.bad(format!("unknown test-time augmentation {other:?}"))),
    };
    let network = if version == DENSE_FORMAT_VERSION {
        read_dense_network(&r, &st, &classes, &preprocess)?
    } else {
        read_layered_network(&r, &st, &classes, &preprocess, version)?
    };
    let optimizer = read_optimizer(&r, &st, &network)?;
    let training = r
        .meta
        .get("training")
        .and_then(|t| serde_json::from_str(t).ok());
    Ok(ModelFile {
        model: Model {
            network,
            classes,
            preprocess,
            tta,
        },
        optimizer,
        training,
    })
}

/// `format` and `format_version`: a deepcat file of a version this build reads.
fn read_version(r: &Reader<'_>) -> Result<u32> {
    if r.get("format").ok() != Some(FORMAT) {
        return Err(r.bad("not a deepcat model (metadata \"format\" is not \"deepcat\")"));
    }
    let version_text = r.get("format_version")?;
    let version: u32 = version_text.parse().map_err(|_| {
        r.bad(format!(
            "format_version {} is not a number",
            shown(&version_text)
        ))
    })?;
    if !(DENSE_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(r.bad(format!(
            "format version {version}, but this deepcat reads versions {DENSE_FORMAT_VERSION} \
             to {FORMAT_VERSION}; use a matching deepcat"
        )));
    }
    Ok(version)
}

/// `classes` and `positive`, checked against each other.
fn read_classes(r: &Reader<'_>) -> Result<Classes> {
    let names: Vec<String> = r.json("classes")?;
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    if names.len() < 2 || unique.len() != names.len() {
        return Err(r.bad(format!(
            "classes {} must be at least two distinct names",
            shown(&names)
        )));
    }
    let positive = r.get("positive")?;
    // Two classes share one sigmoid output, which stands for the positive class; more classes
    // have one softmax output each and no positive class.
    if names.len() == 2 && positive.is_empty() {
        return Err(r.bad(format!(
            "two classes {} but no positive class (metadata \"positive\" is empty), so which \
             class the output means is unknown",
            shown(&names)
        )));
    }
    if names.len() > 2 && !positive.is_empty() {
        return Err(r.bad(format!(
            "positive class {} given, but {} classes have a softmax output and no positive class",
            shown(&positive),
            names.len()
        )));
    }
    if !positive.is_empty() && !names.iter().any(|n| n == positive) {
        return Err(r.bad(format!(
            "positive class {} is not one of the classes {}",
            shown(&positive),
            shown(&names)
        )));
    }
    Classes::new(names.clone(), (!positive.is_empty()).then_some(positive))
        .map_err(|e| r.bad(format!("classes and positive class disagree: {e}")))
}

/// `image_size`, `resize`, `orientation`, `pixel_layout` and `normalisation`.
fn read_preprocess(r: &Reader<'_>) -> Result<Preprocess> {
    let size_text = r.get("image_size")?;
    let size: u32 = size_text
        .parse()
        .map_err(|_| r.bad(format!("image_size {} is not a number", shown(&size_text))))?;
    if size == 0 || size > MAX_IMAGE_SIZE {
        return Err(r.bad(format!("image_size {size} is outside 1..={MAX_IMAGE_SIZE}")));
    }
    let resize = r.get("resize")?;
    let filter = ResizeFilter::from_name(resize)
        .ok_or_else(|| r.bad(format!("unknown resize filter {}", shown(&resize))))?;
    for (key, expected) in [
        ("pixel_layout", PIXEL_LAYOUT),
        ("normalisation", NORMALISATION),
    ] {
        let got = r.get(key)?;
        if got != expected {
            return Err(r.bad(format!(
                "{key} {} is not supported (expected {expected:?})",
                shown(&got)
            )));
        }
    }
    let exif_orientation = match r.meta.get("orientation").map(String::as_str) {
        Some(ORIENTATION_EXIF) => true,
        // deepcat wrote no such entry before it applied EXIF orientation.
        Some(ORIENTATION_IGNORED) | None => false,
        Some(other) => return Err(r.bad(format!("unknown orientation {other:?}"))),
    };
    Ok(Preprocess {
        size,
        filter,
        exif_orientation,
    })
}

/// Version 1: `layer_sizes` and `activations`, then `dense1.weight`, `dense1.bias`, ...
fn read_dense_network(
    r: &Reader<'_>,
    st: &SafeTensors<'_>,
    classes: &Classes,
    preprocess: &Preprocess,
) -> Result<Network> {
    let size = preprocess.size;
    let sizes: Vec<usize> = r.json("layer_sizes")?;
    if sizes.len() < 2 || sizes.contains(&0) {
        return Err(r.bad(format!(
            "layer_sizes {} must list at least input and output, all positive",
            shown(&sizes)
        )));
    }
    if sizes[0] != preprocess.features() {
        return Err(r.bad(format!(
            "layer_sizes starts with {} inputs, but {size}×{size} RGB images have {}",
            sizes[0],
            preprocess.features()
        )));
    }
    let outputs = sizes[sizes.len() - 1]; // at least two entries, checked above
    if outputs != classes.outputs() {
        return Err(r.bad(format!(
            "the output layer has {outputs} units, but {} classes need {}",
            classes.len(),
            classes.outputs()
        )));
    }
    // Two tensors per dense layer: a file cannot describe more layers than it holds (and an
    // absurd count must not cost memory before the tensors are looked up).
    if sizes.len() - 1 > st.len() {
        return Err(r.bad(format!(
            "layer_sizes lists {} dense layers, but the file holds only {} tensors",
            sizes.len() - 1,
            st.len()
        )));
    }
    let activations: Vec<String> = r.json("activations")?;
    let head = classes.head();
    let expected: Vec<&str> = (0..sizes.len() - 1)
        .map(|l| {
            if l + 2 < sizes.len() {
                "relu"
            } else {
                head.name()
            }
        })
        .collect();
    if activations != expected {
        return Err(r.bad(format!(
            "activations {} are not supported here (expected {})",
            shown(&activations),
            shown(&expected)
        )));
    }

    let mut dense = Vec::new();
    for l in 1..sizes.len() {
        let w = read_tensor(
            st,
            r,
            &format!("dense{l}.weight"),
            &[sizes[l], sizes[l - 1]],
        )?;
        let b = read_tensor(st, r, &format!("dense{l}.bias"), &[sizes[l]])?;
        // read_tensor checked the shapes, so these conversions cannot fail.
        let w: Array2<f32> = w
            .into_dimensionality()
            .map_err(|e| r.bad(format!("dense{l}.weight is not a matrix: {e}")))?;
        let b: Array1<f32> = b
            .into_dimensionality()
            .map_err(|e| r.bad(format!("dense{l}.bias is not a vector: {e}")))?;
        dense.push(Dense::with_bias(w, b));
    }
    Ok(Network::from_dense(dense, head).with_input(Geometry::image(size as usize)))
}

/// Version 2 (and 3): `layers` and `head`, then each layer's tensors by name.
fn read_layered_network(
    r: &Reader<'_>,
    st: &SafeTensors<'_>,
    classes: &Classes,
    preprocess: &Preprocess,
    version: u32,
) -> Result<Network> {
    let mut layers = read_layer_specs(r, version)?;
    let outputs = check_head(r, classes, layers.pop())?;
    let arch = Architecture {
        input: Geometry::image(preprocess.size as usize),
        body: layers,
        outputs,
    };
    let fetch = |name: &str, shape: &[usize]| {
        let tensor = read_tensor(st, r, name, shape)?;
        if name.ends_with(".running_var") && tensor.iter().any(|&v| v < 0.0) {
            return Err(r.bad(format!("tensor {name} holds a negative variance")));
        }
        Ok(tensor)
    };
    Network::from_tensors(&arch, fetch).map_err(|e| match e {
        Error::Config(why) => r.bad(format!(
            "the layers do not fit {}×{} RGB images: {why}",
            preprocess.size, preprocess.size
        )),
        other => other,
    })
}

/// The `layers` metadata, output layer included: bounded in count before parsing (a corrupt
/// header must not cost memory), each layer checked, nothing unknown accepted.
fn read_layer_specs(r: &Reader<'_>, version: u32) -> Result<Vec<LayerSpec>> {
    let layers_text = r.get("layers")?;
    let count = serde_json::from_str::<Vec<serde_json::Value>>(layers_text)
        .map_err(|e| {
            r.bad(format!(
                "metadata \"layers\" = {} is not a list: {e}",
                shown(&layers_text)
            ))
        })?
        .len();
    if count == 0 || count > MAX_LAYERS {
        return Err(r.bad(format!(
            "metadata \"layers\" lists {count} layers; a model has 1 to {MAX_LAYERS}"
        )));
    }
    let values: Vec<serde_json::Value> = r.json("layers")?;
    let layers = values
        .into_iter()
        .map(|value| read_layer_spec(r, value, version))
        .collect::<Result<Vec<_>>>()?;
    let total: usize = layers.iter().map(count_layers).sum();
    if total > MAX_LAYERS {
        return Err(r.bad(format!(
            "metadata \"layers\" holds {total} layers with the nested ones; a model has at most \
             {MAX_LAYERS}"
        )));
    }
    Ok(layers)
}

/// One layer of the `layers` metadata.
fn read_layer_spec(r: &Reader<'_>, value: serde_json::Value, version: u32) -> Result<LayerSpec> {
    let layer: LayerSpec = serde_json::from_value(value.clone()).map_err(|e| {
        r.bad(format!(
            "layer {} is not one deepcat knows: {e}",
            shown(&value.to_string())
        ))
    })?;
    // A setting this deepcat does not know would be silently ignored: refuse it.
    let known = serde_json::to_value(&layer).unwrap_or_default();
    if !same_keys(&value, &known) {
        return Err(r.bad(format!(
            "layer {} has settings this deepcat does not know (it reads {known})",
            shown(&value.to_string())
        )));
    }
    layer
        .check()
        .map_err(|e| r.bad(format!("layer {}: {e}", layer.token())))?;
    if layer.is_nested() && version < FORMAT_VERSION {
        return Err(r.bad(format!(
            "layer {} nests layers, which format version {version} cannot hold (version \
             {FORMAT_VERSION} can)",
            layer.token()
        )));
    }
    Ok(layer)
}

/// The head named in the metadata must fit the classes, and the last layer must be the dense
/// output layer with one unit per output: returns its units.
fn check_head(r: &Reader<'_>, classes: &Classes, last: Option<LayerSpec>) -> Result<usize> {
    let head = classes.head();
    let head_name = r.get("head")?;
    if head_name != head.name() {
        return Err(r.bad(format!(
            "head {} does not fit {} classes (expected {:?})",
            shown(&head_name),
            classes.len(),
            head.name()
        )));
    }
    let outputs = match last {
        Some(LayerSpec::Dense(d)) => d.units,
        other => {
            return Err(r.bad(format!(
                "the last layer must be the dense output layer, got {}",
                other.map_or("nothing".into(), |l| l.token())
            )));
        }
    };
    if outputs != classes.outputs() {
        return Err(r.bad(format!(
            "the output layer has {outputs} units, but {} classes need {}",
            classes.len(),
            classes.outputs()
        )));
    }
    Ok(outputs)
}

/// The layer and every layer nested in it.
fn count_layers(layer: &LayerSpec) -> usize {
    match layer {
        LayerSpec::Residual(r) => {
            1 + r
                .body
                .iter()
                .chain(&r.shortcut)
                .map(count_layers)
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Whether two JSON objects have the same keys.
fn same_keys(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => a.len() == b.len() && a.keys().all(|k| b.contains_key(k)),
        _ => false,
    }
}

/// `optimizer` and its state tensors, if saved.
fn read_optimizer(
    r: &Reader<'_>,
    st: &SafeTensors<'_>,
    network: &Network,
) -> Result<Option<SavedOptimizer>> {
    Ok(match r.meta.get("optimizer") {
        None => None,
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| r.bad(format!("optimizer metadata is not valid JSON: {e}")))?;
            let step = value.get("step").and_then(|s| s.as_u64()).ok_or_else(|| {
                r.bad(format!(
                    "optimizer metadata {} has no \"step\" that is a whole number ≥ 0",
                    shown(&text)
                ))
            })?;
            let config: OptimizerConfig = serde_json::from_value(value)
                .map_err(|e| r.bad(format!("optimizer metadata is not understood: {e}")))?;
            config
                .check()
                .map_err(|e| r.bad(format!("optimizer settings out of range: {e}")))?;
            let slot_names: Vec<String> = config
                .build()
                .slot_names()
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut slots = Vec::new();
            // An optimiser saved before its first step has no memory yet, so no tensors.
            let fresh = step == 0 && !st.names().iter().any(|n| n.starts_with("optimizer."));
            if !slot_names.is_empty() && !fresh {
                for (name, p) in network.named_params() {
                    let mut per_param = Vec::new();
                    for slot in &slot_names {
                        per_param.push(read_tensor(
                            st,
                            r,
                            &format!("optimizer.{slot}.{name}"),
                            p.shape(),
                        )?);
                    }
                    slots.push(per_param);
                }
            }
            Some(SavedOptimizer {
                config,
                state: OptimizerState { step, slots },
                slot_names,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Init;

    fn small_model(classes: &[&str]) -> Model {
        let classes = Classes::new(classes.iter().map(|s| s.to_string()).collect(), None).unwrap();
        let preprocess = Preprocess {
            size: 4,
            filter: ResizeFilter::Bilinear,
            exif_orientation: true,
        };
        let arch = Architecture::dense(Geometry::image(4), &[5, 3], classes.outputs(), 0.0);
        let mut rng = crate::nn::Mt19937::new(9);
        Model {
            network: Network::new(&arch, Init::Document, &mut rng).unwrap(),
            classes,
            preprocess,
            tta: false,
        }
    }

    #[test]
    fn save_then_load_round_trips_weights_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        for classes in [&["cats", "dogs"][..], &["a", "b", "c"][..]] {
            let model = small_model(classes);
            let path = dir.path().join("m.safetensors");
            save(&path, &model, None, Some(&serde_json::json!({"seed": 1}))).unwrap();
            let back = load(&path).unwrap();
            assert_eq!(back.model.classes, model.classes);
            assert_eq!(back.model.preprocess, model.preprocess);
            assert_eq!(back.model.network.sizes(), model.network.sizes());
            assert_eq!(back.model.network.head(), model.network.head());
            for ((n1, p1), (n2, p2)) in back
                .model
                .network
                .named_params()
                .iter()
                .zip(model.network.named_params())
            {
                assert_eq!(n1, &n2);
                assert_eq!(p1, &p2);
            }
            assert_eq!(back.training.unwrap()["seed"], 1);
            assert!(back.optimizer.is_none());
        }
    }

    #[test]
    fn optimiser_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = small_model(&["cats", "dogs"]);
        let config = OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.99,
            epsilon: 1e-7,
        };
        let mut opt = config.build();
        let grads: Vec<ArrayD<f32>> = model
            .network
            .named_params()
            .iter()
            .map(|(_, p)| p.mapv(|v| v * 0.1))
            .collect();
        opt.step(&mut model.network.params_mut(), &grads, 0.01);
        let saved = SavedOptimizer {
            config,
            state: opt.state().clone(),
            slot_names: opt.slot_names().iter().map(|s| s.to_string()).collect(),
        };
        let path = dir.path().join("m.safetensors");
        save(&path, &model, Some(&saved), None).unwrap();
        let back = load(&path).unwrap().optimizer.unwrap();
        assert_eq!(back, saved);
    }

    #[test]
    fn refuses_truncated_foreign_and_inconsistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = small_model(&["cats", "dogs"]);
        let path = dir.path().join("m.safetensors");
        save(&path, &model, None, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.safetensors") && err.contains("truncated"),
            "{err}"
        );

        let text = dir.path().join("text.safetensors");
        std::fs::write(&text, b"hello").unwrap();
        assert!(load(&text).is_err());

        // A valid safetensors file without our metadata.
        let foreign = dir.path().join("foreign.safetensors");
        let data = vec![0u8; 8];
        let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        std::fs::write(
            &foreign,
            safetensors::serialize([("w", view)], None).unwrap(),
        )
        .unwrap();
        assert!(load(&foreign).unwrap_err().to_string().contains("metadata"));

        // Rewrite the metadata with a size that does not match the weights.
        let mut meta = SafeTensors::read_metadata(&bytes)
            .unwrap()
            .1
            .metadata()
            .clone()
            .unwrap();
        meta.insert("image_size".into(), "5".into());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, TensorView<'_>)> = st.tensors();
        let bad = dir.path().join("bad.safetensors");
        std::fs::write(&bad, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("layer_sizes"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let missing = dir.path().join("no/such/folder/m.safetensors");
        assert!(
            write_atomically(&missing, b"x")
                .unwrap_err()
                .to_string()
                .contains("cannot write")
        );
    }
}
