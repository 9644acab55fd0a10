//! Model files: truncated, corrupted, foreign, wrong version, inconsistent; a fuzzed loader.
//!
//! The loader must answer every file with either a model that passed all its checks or an
//! [`Error::Model`] naming the file and what is wrong; never a panic, never a huge allocation.
//! The CLI turns that error into exit code 1.
//!
//! The proptest properties run 256 cases each by default; `PROPTEST_CASES=20000` runs more.
//! Files in `corpus/models/` are inputs that once made the loader misbehave (or hand-made
//! cases, see `corpus_files_are_refused_with_the_expected_message`): each is loaded on every
//! run and must be refused cleanly.

use crate::{deepcat, fails_with, solid_ish, succeeds, synthetic};
use deepcat::Error;
use deepcat::data::{Preprocess, ResizeFilter};
use deepcat::model::{Classes, Model};
use deepcat::model_file::{ModelFile, SavedOptimizer, load, save};
use deepcat::nn::spec::parse_body;
use deepcat::nn::{Architecture, Geometry, Init, LayerSpec, Network};
use deepcat::optim::OptimizerConfig;
use ndarray::{Array2, ArrayD};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A small untrained model: 4×4 RGB inputs (48 features), hidden layers 5 and 3.
fn small_model(classes: &[&str]) -> Model {
    let classes = Classes::new(classes.iter().map(|s| s.to_string()).collect(), None).unwrap();
    let preprocess = Preprocess {
        size: 4,
        filter: ResizeFilter::Bilinear,
        ..Preprocess::default()
    };
    let arch = Architecture::dense(Geometry::image(4), &[5, 3], classes.outputs(), 0.0);
    let mut rng = deepcat::nn::Mt19937::new(9);
    Model {
        network: Network::new(&arch, Init::Document, &mut rng).unwrap(),
        classes,
        preprocess,
        tta: false,
    }
}

/// The version-2 seed's layers before the head.
const CNN_BODY: &str = "conv4 bn relu pool gap";

/// A small untrained CNN: 8×8 RGB inputs, `conv4 bn relu pool gap` then the head. Its batch
/// norm's running statistics are set away from their initial 0 and 1, so a loader that filled
/// them in by default would be noticed.
fn small_cnn(classes: &[&str]) -> Model {
    let classes = Classes::new(classes.iter().map(|s| s.to_string()).collect(), None).unwrap();
    let preprocess = Preprocess {
        size: 8,
        filter: ResizeFilter::Nearest,
        ..Preprocess::default()
    };
    let arch = Architecture {
        input: Geometry::image(8),
        body: parse_body(CNN_BODY).unwrap(),
        outputs: classes.outputs(),
    };
    let mut rng = deepcat::nn::Mt19937::new(5);
    let mut network = Network::new(&arch, Init::He, &mut rng).unwrap();
    for (i, mut b) in network.buffers_mut().into_iter().enumerate() {
        let base = if i == 0 { 0.25 } else { 1.5 }; // running_mean, running_var
        for (j, v) in b.iter_mut().enumerate() {
            *v = base + 0.125 * j as f32;
        }
    }
    Model {
        network,
        classes,
        preprocess,
        tta: false,
    }
}

/// A small untrained residual network on 8×8 inputs: a stem, an identity block and a
/// projection block, its running statistics set away from 0 and 1 as [`small_cnn`]'s.
fn small_resnet(classes: &[&str]) -> Model {
    let mut model = small_cnn(classes);
    let arch = Architecture {
        input: Geometry::image(8),
        body: parse_body("conv4 bn relu res4 res(conv8s2 bn relu conv8 bn | conv8k1s2 bn) gap")
            .unwrap(),
        outputs: model.classes.outputs(),
    };
    let mut network = Network::new(&arch, Init::He, &mut deepcat::nn::Mt19937::new(6)).unwrap();
    for (i, mut b) in network.buffers_mut().into_iter().enumerate() {
        for (j, v) in b.iter_mut().enumerate() {
            *v = 0.5 + 0.25 * (i % 2) as f32 + 0.125 * j as f32;
        }
    }
    model.network = network;
    model
}

/// A valid version-3 model file: the three-class residual network with Adam state.
fn resnet_adam_bytes() -> Vec<u8> {
    let mut model = small_resnet(&["a", "b", "c"]);
    let opt = adam_state(&mut model);
    saved_bytes(&model, Some(&opt))
}

/// A valid version-2 model file: the two-class CNN (sigmoid head), without optimiser state.
fn cnn_bytes() -> Vec<u8> {
    saved_bytes(&small_cnn(&["cats", "dogs"]), None)
}

/// A valid version-2 model file: the three-class CNN (softmax head) with Adam state.
fn cnn_three_class_adam_bytes() -> Vec<u8> {
    let mut model = small_cnn(&["a", "b", "c"]);
    let opt = adam_state(&mut model);
    saved_bytes(&model, Some(&opt))
}

/// `layers` metadata for `body` (text form) followed by a dense head of `outputs` units.
fn layers_json(body: &str, outputs: usize) -> String {
    let mut layers = if body.is_empty() {
        Vec::new()
    } else {
        parse_body(body).unwrap()
    };
    layers.push(LayerSpec::dense(outputs));
    serde_json::to_string(&layers).unwrap()
}

/// Adam state after one step on `model` (which it changes).
fn adam_state(model: &mut Model) -> SavedOptimizer {
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
    SavedOptimizer {
        config,
        state: opt.state().clone(),
        slot_names: opt.slot_names().iter().map(|s| s.to_string()).collect(),
    }
}

/// The bytes `save` writes for `model`.
fn saved_bytes(model: &Model, optimizer: Option<&SavedOptimizer>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(
        &path,
        model,
        optimizer,
        Some(&serde_json::json!({"seed": 1})),
    )
    .unwrap();
    std::fs::read(&path).unwrap()
}

/// A valid two-class model file (sigmoid head), without optimiser state.
fn two_class_bytes() -> Vec<u8> {
    saved_bytes(&small_model(&["cats", "dogs"]), None)
}

/// A valid three-class model file (softmax head) with Adam state.
fn three_class_adam_bytes() -> Vec<u8> {
    let mut model = small_model(&["a", "b", "c"]);
    let opt = adam_state(&mut model);
    saved_bytes(&model, Some(&opt))
}

/// One tensor, owned: name, dtype, shape, little-endian bytes.
#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A valid safetensors file taken apart: metadata and tensors (sorted by name).
fn split(bytes: &[u8]) -> (Option<HashMap<String, String>>, Vec<Tensor>) {
    let meta = SafeTensors::read_metadata(bytes)
        .unwrap()
        .1
        .metadata()
        .clone();
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| Tensor {
            name,
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            data: v.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    (meta, tensors)
}

/// A valid safetensors file from metadata and tensors.
fn assemble(meta: Option<HashMap<String, String>>, tensors: &[Tensor]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap();
            (t.name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, meta).unwrap()
}

/// Like [`assemble`], or `None` where safetensors refuses to write the file (a tensor named
/// `__metadata__`, say): the fuzzer then has nothing to load.
fn try_assemble(meta: Option<HashMap<String, String>>, tensors: &[Tensor]) -> Option<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            Some((
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).ok()?,
            ))
        })
        .collect::<Option<_>>()?;
    safetensors::serialize(views, meta).ok()
}

/// `bytes` with metadata entries set (`Some`) or removed (`None`), tensors unchanged.
fn with_meta(bytes: &[u8], entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let (meta, tensors) = split(bytes);
    let mut meta = meta.unwrap();
    for &(key, value) in entries {
        match value {
            Some(v) => meta.insert(key.to_string(), v.to_string()),
            None => meta.remove(key),
        };
    }
    assemble(Some(meta), &tensors)
}

/// `bytes` with its tensors edited by `edit`, metadata unchanged.
fn with_tensors(bytes: &[u8], edit: impl FnOnce(&mut Vec<Tensor>)) -> Vec<u8> {
    let (meta, mut tensors) = split(bytes);
    edit(&mut tensors);
    assemble(meta, &tensors)
}

/// Bytes per element of the whole-byte dtypes used here.
fn dtype_size(d: Dtype) -> usize {
    match d {
        Dtype::U8 | Dtype::I8 | Dtype::BOOL => 1,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        _ => 8,
    }
}

/// The safetensors header length `n`: the header is `bytes[8..8 + n]`, the data follows.
fn header_len(bytes: &[u8]) -> usize {
    usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap()
}

/// Where tensor `name`'s data starts in the file.
fn data_start(bytes: &[u8], name: &str) -> usize {
    let (n, meta) = SafeTensors::read_metadata(bytes).unwrap();
    8 + n + meta.info(name).unwrap().data_offsets.0
}

/// A scratch folder for model files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `bytes` to `name` in the folder and returns its path.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `bytes` to `name` and loads it.
    fn load(&self, name: &str, bytes: &[u8]) -> (PathBuf, deepcat::Result<ModelFile>) {
        let path = self.write(name, bytes);
        let result = load(&path);
        (path, result)
    }

    /// Writes `bytes` to `name`, loads it, and checks it is refused as a bad model file naming
    /// it; returns the message.
    fn refused(&self, name: &str, bytes: &[u8]) -> String {
        let (path, result) = self.load(name, bytes);
        refusal(&path, result)
    }
}

/// Checks `result` is an [`Error::Model`] naming `path`; returns the message.
fn refusal(path: &Path, result: deepcat::Result<ModelFile>) -> String {
    match result {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e @ Error::Model { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "the message does not name the file: {msg}"
            );
            msg
        }
        Err(e) => panic!("not a model-file error: {e:?}"),
    }
}

/// Everything a loaded model must satisfy, whatever file it came from: the loader's checks
/// held, and the model can be used.
fn assert_usable(file: &ModelFile) {
    let model = &file.model;
    let net = &model.network;
    assert!(
        net.is_finite(),
        "a loaded model has NaN or infinite weights"
    );
    let sizes = net.sizes();
    assert!(sizes.len() >= 2 && !sizes.contains(&0), "{sizes:?}");
    assert_eq!(sizes[0], model.preprocess.features());
    assert!((1..=4096).contains(&model.preprocess.size));
    let names = &model.classes.names;
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    assert!(
        names.len() >= 2 && distinct.len() == names.len(),
        "{names:?}"
    );
    assert_eq!(
        model.classes.positive.is_some(),
        names.len() == 2,
        "two classes need a positive class, more must have none: {:?}",
        model.classes
    );
    assert_eq!(*sizes.last().unwrap(), model.classes.outputs());
    assert_eq!(net.head(), model.classes.head());
    assert_layers_fit(file);
    if let Some(opt) = &file.optimizer {
        opt.config
            .check()
            .unwrap_or_else(|e| panic!("a loaded optimiser is out of range: {e}"));
        let expected: Vec<&str> = opt.config.build().slot_names().to_vec();
        assert_eq!(opt.slot_names, expected);
        let params = net.named_params();
        // Every parameter has its slots, or none has (an optimiser saved before its first step).
        let fresh = opt.state.slots.is_empty() && opt.state.step == 0;
        if !opt.slot_names.is_empty() && !fresh {
            assert_eq!(opt.state.slots.len(), params.len());
        }
        for (slots, (_, p)) in opt.state.slots.iter().zip(&params) {
            assert_eq!(slots.len(), opt.slot_names.len());
            for s in slots {
                assert_eq!(s.shape(), p.shape());
                assert!(s.iter().all(|v| v.is_finite()));
            }
        }
    }
    // Usable: a prediction on one row runs.
    let x = Array2::<f32>::zeros((1, model.preprocess.features()));
    let p = model.predict(x.view());
    assert_eq!(p.classes.len(), 1);
    assert_eq!(p.probabilities.dim(), (1, names.len()));
    // And gives probabilities, whenever the values are moderate (huge ones may overflow in
    // the products, which no loader can rule out): a batch norm's negative running variance,
    // say, gives NaN for every image.
    let moderate = net
        .named_params()
        .iter()
        .chain(&net.named_buffers())
        .all(|(_, a)| a.iter().all(|v| v.abs() <= 1e3));
    if moderate {
        assert!(
            p.probabilities.iter().all(|v| v.is_finite()),
            "a loaded model predicts {:?} for a black image",
            p.probabilities
        );
    }
}

/// The loaded network's layers chain from the image geometry to the classes' head, and it holds
/// exactly the tensors, of exactly the shapes, its layers need: for both versions (a version-1
/// network is dense layers with ReLU between them, read as `size × size × 3` images).
fn assert_layers_fit(file: &ModelFile) {
    let model = &file.model;
    let net = &model.network;
    let size = model.preprocess.size as usize;
    assert_eq!(net.input(), Geometry::image(size));
    let arch = net.architecture();
    assert_eq!(arch.outputs, model.classes.outputs());
    assert_eq!(arch.head(), net.head());
    for layer in &arch.body {
        layer
            .check()
            .unwrap_or_else(|e| panic!("a loaded layer has bad settings: {e}"));
    }
    let inputs = arch
        .inputs()
        .unwrap_or_else(|e| panic!("the loaded layers do not chain from {size}×{size}: {e}"));
    let geometries = net.geometries();
    assert_eq!(geometries.len(), inputs.len());
    assert_eq!(*geometries.last().unwrap(), Geometry::flat(arch.outputs));
    let mut expected_params = Vec::new();
    let mut expected_buffers = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (spec, input) in arch.layers().iter().zip(&inputs) {
        let n = counts.entry(spec.kind()).or_insert(0);
        *n += 1;
        let shapes = spec.tensors(*input);
        for (name, shape) in shapes.params {
            expected_params.push((format!("{}{n}.{name}", spec.kind()), shape));
        }
        for (name, shape) in shapes.buffers {
            expected_buffers.push((format!("{}{n}.{name}", spec.kind()), shape));
        }
    }
    let shapes = |named: Vec<(String, ndarray::ArrayViewD<'_, f32>)>| -> Vec<(String, Vec<usize>)> {
        named
            .into_iter()
            .map(|(name, a)| (name, a.shape().to_vec()))
            .collect()
    };
    assert_eq!(shapes(net.named_params()), expected_params);
    assert_eq!(shapes(net.named_buffers()), expected_buffers);
}

/// A model loaded from `bytes` says what the file's metadata says: nothing was filled in by
/// default or silently dropped.
fn assert_matches_metadata(file: &ModelFile, bytes: &[u8]) {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let meta = header
        .metadata()
        .as_ref()
        .expect("a loaded file has metadata");
    assert_eq!(meta["format"], "deepcat");
    let version = meta["format_version"].parse::<u32>().ok();
    assert!(matches!(version, Some(1..=3)), "version {version:?}");
    let model = &file.model;
    let names: Vec<String> = serde_json::from_str(&meta["classes"]).unwrap();
    assert_eq!(model.classes.names, names);
    assert_eq!(
        model.classes.positive_name().unwrap_or(""),
        meta["positive"],
        "positive class"
    );
    assert_eq!(
        meta["image_size"].parse::<u32>().ok(),
        Some(model.preprocess.size)
    );
    assert_eq!(meta["resize"], model.preprocess.filter.name());
    assert_eq!(meta["pixel_layout"], "hwc_rgb");
    assert_eq!(meta["normalisation"], "divide_by_255");
    if version == Some(1) {
        // The document's dense network: its widths, ReLU between, the head's activation last.
        let sizes: Vec<usize> = serde_json::from_str(&meta["layer_sizes"]).unwrap();
        assert_eq!(model.network.sizes(), sizes);
        assert!(model.network.is_dense_stack());
        let activations: Vec<String> = serde_json::from_str(&meta["activations"]).unwrap();
        assert_eq!(activations.len(), sizes.len() - 1);
        assert_eq!(
            activations.last().map(String::as_str),
            Some(model.network.head().name())
        );
    } else {
        // Every layer as listed, in order, the head's dense layer last; no layer_sizes there.
        let layers: Vec<LayerSpec> = serde_json::from_str(&meta["layers"]).unwrap();
        assert_eq!(model.network.specs(), layers);
        assert_eq!(meta["head"], model.network.head().name());
    }
    match (&file.optimizer, meta.get("optimizer")) {
        (None, None) => {}
        (Some(opt), Some(text)) => {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                value.get("step").and_then(|s| s.as_u64()),
                Some(opt.state.step),
                "optimizer step in {text}"
            );
        }
        (loaded, written) => panic!("optimizer {loaded:?} loaded from {written:?}"),
    }
}

/// Loads `bytes` from a file in `scratch`: a panic fails the test (after saving the input to
/// `$DEEPCAT_FUZZ_SAVE`, when set); a model must be usable; an error must name the file.
fn load_never_panics(scratch: &Scratch, bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    let path = scratch.write("fuzz.safetensors", bytes);
    let outcome = std::panic::catch_unwind(|| match load(&path) {
        Ok(file) => {
            assert_usable(&file);
            assert_matches_metadata(&file, bytes);
            None
        }
        Err(e @ Error::Model { .. }) => Some(e.to_string()),
        Err(e) => panic!("not a model-file error: {e:?}"),
    });
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(msg)) => {
            prop_assert!(
                msg.contains(&path.display().to_string()),
                "message does not name the file: {}",
                msg
            );
            Ok(())
        }
        Err(panic) => {
            if let Some(dir) = std::env::var_os("DEEPCAT_FUZZ_SAVE") {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                let out = Path::new(&dir).join(format!("{:016x}.bin", h.finish()));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(out, bytes);
            }
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!("panicked: {what}")))
        }
    }
}

/// 256 cases per property unless `PROPTEST_CASES` says otherwise; no regression files
/// written into the source tree (findings go to `corpus/models/` by hand).
fn fuzz_config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config.failure_persistence = None;
    config
}

// ---------------------------------------------------------------------------------------------
// Library: truncated and corrupted files
// ---------------------------------------------------------------------------------------------

#[test]
fn every_truncation_of_a_model_is_refused_naming_the_file() {
    let scratch = Scratch::new();
    // Every prefix of the small model; of the larger one (with optimiser state), every prefix
    // that cuts the header and every 7th in the data.
    let small = two_class_bytes();
    let large = three_class_adam_bytes();
    let cnn = cnn_three_class_adam_bytes();
    let resnet = resnet_adam_bytes();
    let header_end = 8 + header_len(&large);
    let cnn_header_end = 8 + header_len(&cnn);
    let resnet_header_end = 8 + header_len(&resnet);
    let cuts = (0..small.len())
        .map(|cut| (&small, cut))
        .chain(
            (0..large.len())
                .filter(|&c| c <= header_end || c % 7 == 0)
                .map(|cut| (&large, cut)),
        )
        .chain(
            (0..cnn.len())
                .filter(|&c| c <= cnn_header_end || c % 5 == 0)
                .map(|cut| (&cnn, cut)),
        )
        .chain(
            (0..resnet.len())
                .filter(|&c| c <= resnet_header_end || c % 11 == 0)
                .map(|cut| (&resnet, cut)),
        );
    for (bytes, cut) in cuts {
        let msg = scratch.refused("cut.safetensors", &bytes[..cut]);
        assert!(
            msg.contains("truncated or corrupt"),
            "cut at {cut} of {}: {msg}",
            bytes.len()
        );
    }
}

#[test]
fn trailing_garbage_after_a_model_is_refused() {
    let scratch = Scratch::new();
    let mut bytes = two_class_bytes();
    bytes.extend_from_slice(b"garbage");
    let msg = scratch.refused("long.safetensors", &bytes);
    assert!(msg.contains("truncated or corrupt"), "{msg}");
}

#[test]
fn flipped_bytes_in_the_header_are_refused_or_harmless() {
    let scratch = Scratch::new();
    for bytes in [
        three_class_adam_bytes(),
        cnn_three_class_adam_bytes(),
        resnet_adam_bytes(),
    ] {
        let n = header_len(&bytes);
        let (mut refused, mut loaded) = (0, 0);
        for at in 0..8 + n {
            for mask in [0x01u8, 0x20, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= mask;
                match scratch.load("flip.safetensors", &b) {
                    (_, Ok(file)) => {
                        assert_usable(&file);
                        assert_matches_metadata(&file, &b);
                        loaded += 1;
                    }
                    (path, result) => {
                        refusal(&path, result);
                        refused += 1;
                    }
                }
            }
        }
        // Most header flips break the JSON or a check; a few (in the informational "training"
        // entry, say) are harmless.
        assert!(
            refused > 0 && refused > loaded,
            "{refused} refused, {loaded} loaded"
        );
    }
}

#[test]
fn flipped_bytes_in_the_data_change_one_value_or_are_refused() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    let start = 8 + header_len(&bytes);
    let original = load(&scratch.write("orig.safetensors", &bytes)).unwrap();
    let original: Vec<f32> = original
        .model
        .network
        .named_params()
        .iter()
        .flat_map(|(_, p)| p.iter().copied().collect::<Vec<_>>())
        .collect();
    let (mut refused, mut changed) = (0, 0);
    for at in start..bytes.len() {
        for mask in [0x01u8, 0xc0] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            match scratch.load("flip.safetensors", &b) {
                (_, Ok(file)) => {
                    assert_usable(&file);
                    let values: Vec<f32> = file
                        .model
                        .network
                        .named_params()
                        .iter()
                        .flat_map(|(_, p)| p.iter().copied().collect::<Vec<_>>())
                        .collect();
                    let differ = values
                        .iter()
                        .zip(&original)
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    assert_eq!(differ, 1, "a flip at byte {at} changed {differ} values");
                    changed += 1;
                }
                (path, result) => {
                    let msg = refusal(&path, result);
                    assert!(msg.contains("NaN or infinite"), "{msg}");
                    refused += 1;
                }
            }
        }
    }
    // A single flipped byte of a small weight cannot make all exponent bits ones, so these
    // all load (NaN and infinity are `a_weight_or_optimiser_value_that_is_nan_or_infinite_...`).
    assert!(changed > 0, "{refused} refused, {changed} changed");
}

#[test]
fn a_weight_or_optimiser_value_that_is_nan_or_infinite_is_refused() {
    let scratch = Scratch::new();
    let v1 = three_class_adam_bytes();
    let v2 = cnn_three_class_adam_bytes();
    let v3 = resnet_adam_bytes();
    for (bytes, name) in [
        (&v3, "residual2.shortcut.conv1.weight"),
        (&v3, "residual1.batchnorm2.running_var"),
        (&v3, "optimizer.m.residual2.conv2.bias"),
        (&v1, "dense1.weight"),
        (&v1, "dense3.bias"),
        (&v1, "optimizer.v.dense2.weight"),
        (&v2, "conv1.weight"),
        (&v2, "batchnorm1.weight"),
        (&v2, "batchnorm1.running_mean"),
        (&v2, "batchnorm1.running_var"),
        (&v2, "dense1.bias"),
        (&v2, "optimizer.m.conv1.bias"),
    ] {
        let at = data_start(bytes, name) + 4; // the tensor's second value
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
            let msg = scratch.refused("nan.safetensors", &b);
            assert!(
                msg.contains(&format!("tensor {name} contains NaN or infinite values")),
                "{msg}"
            );
        }
    }
}

#[test]
fn a_corrupt_header_length_is_refused() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    let n = header_len(&bytes) as u64;
    let len = bytes.len() as u64;
    for claimed in [
        0,
        1,
        n - 1,
        n + 1,
        len,
        99_999_999,
        100_000_001,
        u64::MAX / 2,
        u64::MAX,
    ] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&claimed.to_le_bytes());
        let msg = scratch.refused("len.safetensors", &b);
        assert!(msg.contains("truncated or corrupt"), "{claimed}: {msg}");
    }
}

#[test]
fn a_header_claiming_a_giant_tensor_is_refused_without_allocating_it() {
    let scratch = Scratch::new();
    // 2^40 × 2^20 F32 values claimed, 8 bytes present; and a claim that overflows usize.
    for header in [
        r#"{"w":{"dtype":"F32","shape":[1099511627776,1048576],"data_offsets":[0,4611686018427387904]}}"#,
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
    ] {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0; 8]);
        let started = std::time::Instant::now();
        let msg = scratch.refused("giant.safetensors", &b);
        assert!(msg.contains("truncated or corrupt"), "{msg}");
        assert!(
            started.elapsed().as_secs() < 2,
            "took {:?}",
            started.elapsed()
        );
    }
    // A deepcat header whose hidden layer claims 10^12 units: refused at the first tensor.
    let bytes = with_meta(
        &two_class_bytes(),
        &[("layer_sizes", Some("[48,1000000000000,3,1]"))],
    );
    let msg = scratch.refused("giant.safetensors", &bytes);
    assert!(
        msg.contains("tensor dense1.weight has shape [5, 48], expected [1000000000000, 48]"),
        "{msg}"
    );
}

#[test]
fn a_missing_model_file_or_a_folder_is_an_error_naming_the_path() {
    let scratch = Scratch::new();
    let missing = scratch.dir.path().join("missing.safetensors");
    let msg = load(&missing).unwrap_err().to_string();
    assert!(
        msg.contains("cannot read model file") && msg.contains("missing.safetensors"),
        "{msg}"
    );
    let msg = load(scratch.dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains(&scratch.dir.path().display().to_string()),
        "{msg}"
    );
}

#[test]
fn a_model_path_that_never_ends_is_refused_without_waiting_for_the_end() {
    // A named pipe whose writer sends a few bytes of something else and stays open (as
    // `/dev/zero` or a stalled download would): the loader used to read until the end, so
    // waited forever (or, for /dev/zero, until memory ran out). It now stops after the 8-byte
    // header length, which is absurd here.
    let scratch = Scratch::new();
    let fifo = scratch.dir.path().join("pipe.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipping: cannot make a named pipe here");
        return;
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        std::io::Write::write_all(&mut w, b"RIFF\x24\x08\x00\x00AVI LIST").unwrap();
        // Stay open until the reader is done (or gave up).
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    });
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = result_tx.send(load(&reader_path).map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = result_rx.recv_timeout(std::time::Duration::from_secs(5));
    let _ = done_tx.send(());
    writer.join().unwrap();
    let msg = result
        .expect("load still waiting for the end of a pipe after 5 s")
        .expect_err("a pipe of text was accepted as a model");
    assert!(
        msg.contains("pipe.safetensors") && msg.contains("not a readable safetensors file"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Library: files that are well-formed safetensors but not (this version of) a deepcat model
// ---------------------------------------------------------------------------------------------

#[test]
fn another_format_version_is_refused_naming_the_version() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    let set = |v: &str| with_meta(&bytes, &[("format_version", Some(v))]);
    // A version-1 file relabelled "2" is read as version 2, which lists its layers instead.
    let msg = scratch.refused("v2.safetensors", &set("2"));
    assert!(msg.contains("no \"layers\" entry"), "{msg}");
    for newer in ["4", "4294967295"] {
        let msg = scratch.refused("v4.safetensors", &set(newer));
        assert!(
            msg.contains(&format!("format version {newer}"))
                && msg.contains("reads versions 1 to 3"),
            "{msg}"
        );
    }
    // Version 3 reads every flat list version 2 holds: a version-2 file relabelled "3" loads.
    let (_, relabelled) = scratch.load(
        "v2as3.safetensors",
        &with_meta(&cnn_bytes(), &[("format_version", Some("3"))]),
    );
    assert!(relabelled.is_ok());
    // A version-3 file (residual blocks) relabelled "2" is refused: version 2 has no nesting.
    let msg = scratch.refused(
        "v3as2.safetensors",
        &with_meta(&resnet_adam_bytes(), &[("format_version", Some("2"))]),
    );
    assert!(
        msg.contains("nests layers") && msg.contains("format version 2"),
        "{msg}"
    );
    let msg = scratch.refused("v0.safetensors", &set("0"));
    assert!(
        msg.contains("format version 0") && msg.contains("reads versions 1 to 3"),
        "{msg}"
    );
    for bad in ["abc", "", "1.0", "-1", "99999999999999999999"] {
        let msg = scratch.refused("vabc.safetensors", &set(bad));
        assert!(
            msg.contains("format_version") && msg.contains("not a number"),
            "{bad:?}: {msg}"
        );
    }
    let msg = scratch.refused(
        "vnone.safetensors",
        &with_meta(&bytes, &[("format_version", None)]),
    );
    assert!(msg.contains("no \"format_version\" entry"), "{msg}");
}

#[test]
fn another_programs_safetensors_file_is_refused() {
    let scratch = Scratch::new();
    let weights = Tensor {
        name: "model.embed.weight".into(),
        dtype: Dtype::F32,
        shape: vec![2, 3],
        data: vec![0; 24],
    };
    // No metadata at all.
    let msg = scratch.refused(
        "foreign.safetensors",
        &assemble(None, std::slice::from_ref(&weights)),
    );
    assert!(msg.contains("no deepcat metadata"), "{msg}");
    // Someone else's metadata.
    let foreign: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let msg = scratch.refused(
        "pt.safetensors",
        &assemble(Some(foreign), std::slice::from_ref(&weights)),
    );
    assert!(msg.contains("not a deepcat model"), "{msg}");
    // An empty safetensors file (no tensors, no metadata).
    let msg = scratch.refused("empty.safetensors", &assemble(None, &[]));
    assert!(msg.contains("no deepcat metadata"), "{msg}");
    // Our tensors, but the metadata stripped.
    let (_, tensors) = split(&two_class_bytes());
    let msg = scratch.refused("stripped.safetensors", &assemble(None, &tensors));
    assert!(msg.contains("no deepcat metadata"), "{msg}");
    // Not safetensors at all: text, a PNG, JSON.
    let png = scratch.dir.path().join("img.png");
    solid_ish(&png, [1, 2, 3], 0);
    for (name, bytes) in [
        ("text.safetensors", b"hello, world".to_vec()),
        ("png.safetensors", std::fs::read(&png).unwrap()),
        ("json.safetensors", br#"{"format":"deepcat"}"#.to_vec()),
        ("empty.safetensors", Vec::new()),
    ] {
        let msg = scratch.refused(name, &bytes);
        assert!(msg.contains("not a readable safetensors file"), "{msg}");
    }
}

#[test]
fn tensor_shapes_that_disagree_with_the_metadata_are_refused() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    // Metadata rewritten: the first hidden layer claims 6 units, the file holds 5.
    let msg = scratch.refused(
        "sizes.safetensors",
        &with_meta(&bytes, &[("layer_sizes", Some("[48,6,3,1]"))]),
    );
    assert!(
        msg.contains("tensor dense1.weight has shape [5, 48], expected [6, 48]"),
        "{msg}"
    );
    // One layer fewer than the tensors: dense2.weight no longer fits.
    let msg = scratch.refused(
        "fewer.safetensors",
        &with_meta(
            &bytes,
            &[
                ("layer_sizes", Some("[48,5,1]")),
                ("activations", Some(r#"["relu","sigmoid"]"#)),
            ],
        ),
    );
    assert!(
        msg.contains("tensor dense2.weight has shape [3, 5]"),
        "{msg}"
    );
    // Inputs that do not match the image size.
    let msg = scratch.refused(
        "inputs.safetensors",
        &with_meta(&bytes, &[("image_size", Some("5"))]),
    );
    assert!(
        msg.contains("layer_sizes starts with 48 inputs, but 5×5 RGB images have 75"),
        "{msg}"
    );
    // Outputs that do not match the classes.
    let msg = scratch.refused(
        "outputs.safetensors",
        &with_meta(
            &bytes,
            &[
                ("classes", Some(r#"["a","b","c"]"#)),
                ("positive", Some("")),
            ],
        ),
    );
    assert!(
        msg.contains("the output layer has 1 units, but 3 classes need 3"),
        "{msg}"
    );
    // A tensor written with a transposed shape, and a bias with an extra axis.
    for (name, shape) in [("dense2.weight", vec![5, 3]), ("dense1.bias", vec![5, 1])] {
        let b = with_tensors(&bytes, |ts| {
            let t = ts.iter_mut().find(|t| t.name == name).unwrap();
            t.shape = shape.clone();
        });
        let msg = scratch.refused("transposed.safetensors", &b);
        assert!(
            msg.contains(&format!("tensor {name} has shape {shape:?}, expected")),
            "{msg}"
        );
    }
    // An optimiser slot shaped differently from its parameter.
    let b = with_tensors(&three_class_adam_bytes(), |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == "optimizer.m.dense2.weight")
            .unwrap();
        t.shape.reverse();
    });
    let msg = scratch.refused("slot.safetensors", &b);
    assert!(
        msg.contains("tensor optimizer.m.dense2.weight has shape [5, 3], expected [3, 5]"),
        "{msg}"
    );
}

#[test]
fn tensors_of_another_dtype_than_f32_are_refused() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    for dtype in [Dtype::F64, Dtype::F16, Dtype::BF16, Dtype::I32, Dtype::U8] {
        let b = with_tensors(&bytes, |ts| {
            let t = ts.iter_mut().find(|t| t.name == "dense2.bias").unwrap();
            t.dtype = dtype;
            t.data = vec![0; t.shape.iter().product::<usize>() * dtype_size(dtype)];
        });
        let msg = scratch.refused("dtype.safetensors", &b);
        assert!(
            msg.contains(&format!("tensor dense2.bias is {dtype:?}, expected F32")),
            "{msg}"
        );
    }
}

#[test]
fn a_missing_tensor_is_refused_by_name() {
    let scratch = Scratch::new();
    for (bytes, name) in [
        (two_class_bytes(), "dense1.weight"),
        (two_class_bytes(), "dense3.bias"),
        (three_class_adam_bytes(), "optimizer.v.dense1.bias"),
    ] {
        let b = with_tensors(&bytes, |ts| ts.retain(|t| t.name != name));
        let msg = scratch.refused("missing.safetensors", &b);
        assert!(msg.contains(&format!("tensor {name} is missing")), "{msg}");
    }
    // A tensor renamed (dense1 → dense0) is missing under its expected name.
    let b = with_tensors(&two_class_bytes(), |ts| {
        for t in ts.iter_mut() {
            t.name = t.name.replace("dense1.", "dense0.");
        }
    });
    let msg = scratch.refused("renamed.safetensors", &b);
    assert!(msg.contains("tensor dense1.weight is missing"), "{msg}");
}

#[test]
fn classes_must_be_at_least_two_distinct_names() {
    let scratch = Scratch::new();
    let bytes = two_class_bytes();
    for (classes, positive) in [
        (r#"["cats"]"#, "cats"),
        (r#"[]"#, ""),
        (r#"["cats","cats"]"#, "cats"),
    ] {
        let b = with_meta(
            &bytes,
            &[("classes", Some(classes)), ("positive", Some(positive))],
        );
        let msg = scratch.refused("classes.safetensors", &b);
        assert!(
            msg.contains("must be at least two distinct names"),
            "{classes}: {msg}"
        );
    }
    for classes in ["cats,dogs", r#"{"cats":0}"#, "[1,2]", "null", ""] {
        let b = with_meta(&bytes, &[("classes", Some(classes))]);
        let msg = scratch.refused("classes.safetensors", &b);
        assert!(
            msg.contains("metadata \"classes\"") && msg.contains("is not valid"),
            "{classes}: {msg}"
        );
    }
    let msg = scratch.refused(
        "classes.safetensors",
        &with_meta(&bytes, &[("classes", None)]),
    );
    assert!(msg.contains("no \"classes\" entry"), "{msg}");
}

#[test]
fn a_positive_class_that_does_not_fit_the_classes_is_refused() {
    let scratch = Scratch::new();
    // Not one of the two classes.
    let msg = scratch.refused(
        "positive.safetensors",
        &with_meta(&two_class_bytes(), &[("positive", Some("horses"))]),
    );
    assert!(
        msg.contains("positive class \"horses\" is not one of the classes"),
        "{msg}"
    );
    // Two classes but no positive class: which one the sigmoid means is unknown.
    let msg = scratch.refused(
        "positive.safetensors",
        &with_meta(&two_class_bytes(), &[("positive", Some(""))]),
    );
    assert!(msg.contains("no positive class"), "{msg}");
    // A positive class with three classes (softmax has none).
    let msg = scratch.refused(
        "positive.safetensors",
        &with_meta(&three_class_adam_bytes(), &[("positive", Some("a"))]),
    );
    assert!(
        msg.contains("positive class \"a\"") && msg.contains("3 classes"),
        "{msg}"
    );
}

#[test]
fn other_inconsistent_metadata_is_refused_with_the_entry_named() {
    let scratch = Scratch::new();
    let bytes = three_class_adam_bytes();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("format", Some("deepkat"), "not a deepcat model"),
        ("format", None, "not a deepcat model"),
        ("image_size", Some("0"), "image_size 0 is outside 1..=4096"),
        (
            "image_size",
            Some("100000"),
            "image_size 100000 is outside 1..=4096",
        ),
        (
            "image_size",
            Some("four"),
            "image_size \"four\" is not a number",
        ),
        ("image_size", None, "no \"image_size\" entry"),
        ("resize", Some("cubic"), "unknown resize filter \"cubic\""),
        (
            "pixel_layout",
            Some("chw_bgr"),
            "pixel_layout \"chw_bgr\" is not supported",
        ),
        (
            "normalisation",
            Some("imagenet"),
            "normalisation \"imagenet\" is not supported",
        ),
        (
            "layer_sizes",
            Some("[48]"),
            "must list at least input and output",
        ),
        (
            "layer_sizes",
            Some("[48,0,3,3]"),
            "must list at least input and output, all positive",
        ),
        (
            "layer_sizes",
            Some("[48,-5,3,3]"),
            "metadata \"layer_sizes\"",
        ),
        (
            "activations",
            Some(r#"["relu","tanh","softmax"]"#),
            "activations",
        ),
        (
            "activations",
            Some(r#"["relu","relu","sigmoid"]"#),
            "activations",
        ),
        (
            "optimizer",
            Some("{"),
            "optimizer metadata is not valid JSON",
        ),
        (
            "optimizer",
            Some(r#"{"kind":"lbfgs","step":1}"#),
            "optimizer metadata is not understood",
        ),
        (
            "optimizer",
            Some(r#"{"kind":"adam","beta1":0.9,"step":1}"#),
            "optimizer metadata is not understood",
        ),
    ];
    for (key, value, needle) in cases {
        let b = with_meta(&bytes, &[(*key, *value)]);
        let msg = scratch.refused("meta.safetensors", &b);
        assert!(
            msg.contains(needle),
            "{key}={value:?}: expected {needle:?} in {msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Library: version-2 files (any architecture) that are inconsistent
// ---------------------------------------------------------------------------------------------

#[test]
fn a_version_2_model_round_trips_its_layers_weights_and_running_statistics() {
    let scratch = Scratch::new();
    let model = small_cnn(&["cats", "dogs"]);
    let bytes = saved_bytes(&model, None);
    let meta = split(&bytes).0.unwrap();
    assert_eq!(meta["format_version"], "2");
    assert_eq!(meta["head"], "sigmoid");
    assert_eq!(meta["layers"], layers_json(CNN_BODY, 1));
    assert!(!meta.contains_key("layer_sizes") && !meta.contains_key("activations"));
    let (_, file) = scratch.load("cnn.safetensors", &bytes);
    let file = file.unwrap();
    assert_usable(&file);
    assert_matches_metadata(&file, &bytes);
    let net = &file.model.network;
    assert_eq!(net.specs(), model.network.specs());
    for (got, want) in [
        (net.named_params(), model.network.named_params()),
        (net.named_buffers(), model.network.named_buffers()),
    ] {
        assert_eq!(got.len(), want.len());
        for ((n1, a1), (n2, a2)) in got.iter().zip(&want) {
            assert_eq!(n1, n2);
            assert_eq!(a1, a2, "{n1}");
        }
    }
    let names: Vec<String> = net.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["batchnorm1.running_mean", "batchnorm1.running_var"]);
    // The same predictions as the network that was saved.
    let x = Array2::<f32>::from_shape_fn((3, 8 * 8 * 3), |(i, j)| ((i * 7 + j) % 11) as f32 / 10.0);
    assert_eq!(
        file.model.predict(x.view()).probabilities,
        model.predict(x.view()).probabilities
    );
}

#[test]
fn version_2_layers_that_are_not_a_list_of_layers_are_refused() {
    let scratch = Scratch::new();
    let bytes = cnn_bytes();
    let cases: &[(&str, &str)] = &[
        ("conv4 bn relu pool gap", "metadata \"layers\""),
        ("[", "is not a list"),
        ("", "is not a list"),
        (r#"{"kind":"dense","units":1}"#, "is not a list"),
        ("null", "is not a list"),
        ("[]", "lists 0 layers; a model has 1 to 1000"),
        (
            r#"[{"kind":"softmax"},{"kind":"dense","units":1}]"#,
            "softmax",
        ),
        (
            r#"[[],{"kind":"dense","units":1}]"#,
            "is not one deepcat knows",
        ),
        (
            r#"[{"kind":"conv","channels":4,"kernel":3},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            "stride",
        ),
    ];
    for (layers, needle) in cases {
        let msg = scratch.refused(
            "layers.safetensors",
            &with_meta(&bytes, &[("layers", Some(layers))]),
        );
        assert!(
            msg.contains(needle) && msg.contains("layers"),
            "layers={layers:?}: expected {needle:?} in {msg}"
        );
        assert!(msg.len() < 600, "a message too long to read: {msg}");
    }
    let msg = scratch.refused(
        "nolayers.safetensors",
        &with_meta(&bytes, &[("layers", None)]),
    );
    assert!(msg.contains("no \"layers\" entry"), "{msg}");
    // More layers than any model has: refused on the count, before anything is built.
    let many = format!(
        "[{}{{\"kind\":\"dense\",\"units\":1}}]",
        r#"{"kind":"relu"},"#.repeat(1000)
    );
    let msg = scratch.refused(
        "many.safetensors",
        &with_meta(&bytes, &[("layers", Some(&many))]),
    );
    assert!(
        msg.contains("lists 1001 layers; a model has 1 to 1000"),
        "{msg}"
    );
}

#[test]
fn a_version_2_layer_with_a_setting_this_deepcat_does_not_know_is_refused() {
    // A file from a newer deepcat whose layers have settings this one would ignore (a conv
    // layer's padding, a batch norm's epsilon) would be read as another network: refused, as
    // `LayerSpec`'s `deny_unknown_fields` intends, for every kind of layer.
    let scratch = Scratch::new();
    let bytes = cnn_bytes();
    let rest = r#"{"kind":"relu"},{"kind":"maxpool"},{"kind":"gap"},{"kind":"dense","units":1}]"#;
    let conv = r#"{"kind":"conv","channels":4,"kernel":3,"stride":1}"#;
    let bn = r#"{"kind":"batchnorm"}"#;
    let mut accepted = Vec::new();
    for (layers, field) in [
        (
            format!(
                r#"[{{"kind":"conv","channels":4,"kernel":3,"stride":1,"padding":"valid"}},{bn},{rest}"#
            ),
            "padding",
        ),
        (
            format!(
                r#"[{conv},{bn},{}"#,
                rest.replace(r#""units":1"#, r#""units":1,"bias":false"#)
            ),
            "bias",
        ),
        (
            format!(r#"[{conv},{{"kind":"batchnorm","epsilon":0.001}},{rest}"#),
            "epsilon",
        ),
        (
            format!(
                r#"[{conv},{bn},{}"#,
                rest.replace(r#"{"kind":"gap"}"#, r#"{"kind":"gap","keepdims":true}"#)
            ),
            "keepdims",
        ),
        (
            format!(
                r#"[{conv},{bn},{}"#,
                rest.replace(
                    r#"{"kind":"relu"}"#,
                    r#"{"kind":"relu","negative_slope":0.1}"#
                )
            ),
            "negative_slope",
        ),
    ] {
        match scratch.load(
            "unknown.safetensors",
            &with_meta(&bytes, &[("layers", Some(&layers))]),
        ) {
            (path, Err(e)) => {
                let msg = refusal(&path, Err(e));
                assert!(msg.contains(field), "{field}: {msg}");
            }
            (_, Ok(_)) => accepted.push(field),
        }
    }
    assert!(
        accepted.is_empty(),
        "layers with unknown settings {accepted:?} were accepted, the settings ignored"
    );
}

#[test]
fn a_version_2_layer_with_a_bad_setting_is_refused_naming_it() {
    let scratch = Scratch::new();
    let bytes = cnn_bytes();
    let conv = |channels: u64, kernel: u64, stride: u64| {
        format!(
            r#"[{{"kind":"conv","channels":{channels},"kernel":{kernel},"stride":{stride}}},{{"kind":"batchnorm"}},{{"kind":"relu"}},{{"kind":"maxpool"}},{{"kind":"gap"}},{{"kind":"dense","units":1}}]"#
        )
    };
    for (layers, needles) in [
        (conv(4, 4, 1), &["layer conv4k4", "odd"][..]),
        (
            conv(4, 17, 1),
            &["layer conv4k17", "odd and at most 15"][..],
        ),
        (conv(4, 3, 0), &["layer conv4s0", "stride"][..]),
        (conv(4, 3, 9), &["layer conv4s9", "stride"][..]),
        (conv(0, 3, 1), &["layer conv0", "at least one channel"][..]),
        (
            r#"[{"kind":"dropout","p":1.5},{"kind":"dense","units":1}]"#.to_string(),
            &["layer dropout1.5", "probability"][..],
        ),
        (
            r#"[{"kind":"dense","units":0},{"kind":"dense","units":1}]"#.to_string(),
            &["layer dense0", "at least one unit"][..],
        ),
    ] {
        let msg = scratch.refused(
            "setting.safetensors",
            &with_meta(&bytes, &[("layers", Some(&layers))]),
        );
        for n in needles {
            assert!(msg.contains(n), "{layers}: expected {n:?} in {msg}");
        }
    }
}

#[test]
fn a_version_2_model_must_end_with_a_dense_layer_of_one_unit_per_class_output() {
    let scratch = Scratch::new();
    let bytes = cnn_bytes();
    // The head's dense layer left out: the file's last layer is gap.
    let msg = scratch.refused(
        "nohead.safetensors",
        &with_meta(
            &bytes,
            &[(
                "layers",
                Some(&serde_json::to_string(&parse_body(CNN_BODY).unwrap()).unwrap()),
            )],
        ),
    );
    assert!(
        msg.contains("the last layer must be the dense output layer, got gap"),
        "{msg}"
    );
    // Three output units for two classes (one sigmoid unit), and one for three classes.
    let msg = scratch.refused(
        "units.safetensors",
        &with_meta(&bytes, &[("layers", Some(&layers_json(CNN_BODY, 3)))]),
    );
    assert!(
        msg.contains("the output layer has 3 units, but 2 classes need 1"),
        "{msg}"
    );
    let msg = scratch.refused(
        "units3.safetensors",
        &with_meta(
            &cnn_three_class_adam_bytes(),
            &[
                ("layers", Some(&layers_json(CNN_BODY, 1))),
                ("head", Some("sigmoid")),
            ],
        ),
    );
    // Either the head or the output count is named; both disagree with three classes.
    assert!(
        msg.contains("does not fit 3 classes") || msg.contains("3 classes need 3"),
        "{msg}"
    );
    // Classes changed under the file: two outputs... three classes need three.
    let msg = scratch.refused(
        "classes.safetensors",
        &with_meta(
            &bytes,
            &[
                ("classes", Some(r#"["a","b","c"]"#)),
                ("positive", Some("")),
                ("head", Some("softmax")),
            ],
        ),
    );
    assert!(
        msg.contains("the output layer has 1 units, but 3 classes need 3"),
        "{msg}"
    );
}

#[test]
fn a_version_2_head_that_does_not_fit_the_classes_is_refused() {
    let scratch = Scratch::new();
    for (bytes, head, needle) in [
        (
            cnn_bytes(),
            "softmax",
            "head \"softmax\" does not fit 2 classes (expected \"sigmoid\")",
        ),
        (
            cnn_three_class_adam_bytes(),
            "sigmoid",
            "head \"sigmoid\" does not fit 3 classes (expected \"softmax\")",
        ),
        (cnn_bytes(), "relu", "head \"relu\" does not fit 2 classes"),
        (cnn_bytes(), "", "does not fit 2 classes"),
    ] {
        let msg = scratch.refused(
            "head.safetensors",
            &with_meta(&bytes, &[("head", Some(head))]),
        );
        assert!(msg.contains(needle), "head={head:?}: {msg}");
    }
    let msg = scratch.refused(
        "nohead.safetensors",
        &with_meta(&cnn_bytes(), &[("head", None)]),
    );
    assert!(msg.contains("no \"head\" entry"), "{msg}");
}

#[test]
fn version_2_layers_that_do_not_fit_the_image_size_are_refused_naming_the_layer() {
    let scratch = Scratch::new();
    let bytes = cnn_bytes();
    // 8×8 → 4×4 → 2×2: two pools fit; with image_size 2, the second pool has one pixel.
    let two_pools = layers_json("conv4 bn relu pool pool gap", 1);
    let (_, file) = scratch.load(
        "fits.safetensors",
        &with_meta(&bytes, &[("layers", Some(&two_pools))]),
    );
    assert_usable(&file.expect("two pools fit 8×8 images (pools have no tensors)"));
    let msg = scratch.refused(
        "size2.safetensors",
        &with_meta(
            &bytes,
            &[("layers", Some(&two_pools)), ("image_size", Some("2"))],
        ),
    );
    assert!(
        msg.contains("the layers do not fit 2×2 RGB images")
            && msg.contains("layer 5 (pool)")
            && msg.contains("1×1×4"),
        "{msg}"
    );
    // The seed's one pool on 1×1 images.
    let msg = scratch.refused(
        "size1.safetensors",
        &with_meta(&bytes, &[("image_size", Some("1"))]),
    );
    assert!(
        msg.contains("the layers do not fit 1×1 RGB images") && msg.contains("layer 4 (pool)"),
        "{msg}"
    );
    // A conv network with global pooling reads any image size: the same weights at 16×16.
    let (_, file) = scratch.load(
        "size16.safetensors",
        &with_meta(&bytes, &[("image_size", Some("16"))]),
    );
    let file = file.expect("gap makes the layers fit any size");
    assert_usable(&file);
    assert_eq!(file.model.preprocess.size, 16);
    // Without gap, the dense head's weights are sized for one image size only.
    let no_gap = with_tensors(
        &with_meta(
            &bytes,
            &[("layers", Some(&layers_json("conv4 bn relu pool", 1)))],
        ),
        |ts| {
            let w = ts.iter_mut().find(|t| t.name == "dense1.weight").unwrap();
            w.shape = vec![1, 4 * 4 * 4];
            w.data = vec![0; 64 * 4];
        },
    );
    let (_, file) = scratch.load("nogap.safetensors", &no_gap);
    assert_usable(&file.expect("a dense head on the 4×4×4 pooled image"));
    let msg = scratch.refused(
        "nogap16.safetensors",
        &with_meta(&no_gap, &[("image_size", Some("16"))]),
    );
    assert!(
        msg.contains("tensor dense1.weight has shape [1, 64], expected [1, 256]"),
        "{msg}"
    );
}

#[test]
fn a_version_2_file_missing_a_tensor_or_with_one_misshapen_is_refused_naming_it() {
    let scratch = Scratch::new();
    let bytes = cnn_three_class_adam_bytes();
    for name in [
        "batchnorm1.running_var",
        "batchnorm1.running_mean",
        "batchnorm1.weight",
        "conv1.bias",
        "dense1.weight",
        "optimizer.v.batchnorm1.bias",
        "optimizer.m.conv1.weight",
    ] {
        let b = with_tensors(&bytes, |ts| ts.retain(|t| t.name != name));
        let msg = scratch.refused("missing.safetensors", &b);
        assert!(msg.contains(&format!("tensor {name} is missing")), "{msg}");
    }
    // A conv weight of the wrong shape: transposed channels, a 1×1 kernel, flattened.
    for shape in [
        vec![3, 4, 3, 3],
        vec![4, 3, 1, 1],
        vec![4, 27],
        vec![4, 3, 3, 3, 1],
    ] {
        let b = with_tensors(&bytes, |ts| {
            let t = ts.iter_mut().find(|t| t.name == "conv1.weight").unwrap();
            t.shape = shape.clone();
            t.data = vec![0; shape.iter().product::<usize>() * 4];
        });
        let msg = scratch.refused("conv.safetensors", &b);
        assert!(
            msg.contains(&format!(
                "tensor conv1.weight has shape {shape:?}, expected [4, 3, 3, 3]"
            )),
            "{msg}"
        );
    }
    // The layers claim 5 channels, the file holds 4.
    let msg = scratch.refused(
        "channels.safetensors",
        &with_meta(
            &bytes,
            &[("layers", Some(&layers_json("conv5 bn relu pool gap", 3)))],
        ),
    );
    assert!(
        msg.contains("tensor conv1.weight has shape [4, 3, 3, 3], expected [5, 3, 3, 3]"),
        "{msg}"
    );
    // A running statistic per channel: one too many.
    let b = with_tensors(&bytes, |ts| {
        let t = ts
            .iter_mut()
            .find(|t| t.name == "batchnorm1.running_var")
            .unwrap();
        t.shape = vec![5];
        t.data = vec![0; 20];
    });
    let msg = scratch.refused("var.safetensors", &b);
    assert!(
        msg.contains("tensor batchnorm1.running_var has shape [5], expected [4]"),
        "{msg}"
    );
}

#[test]
fn a_negative_batchnorm_running_variance_is_refused() {
    // Inference divides by √(running_var + ε): a negative variance gives NaN for every image,
    // so such a file is as unusable as one holding NaN.
    let scratch = Scratch::new();
    // The seed, and the seed's tensors read as `conv4 bn gap` (no ReLU after the batch norm,
    // which would turn the NaN into 0 and hide it).
    let seed = cnn_bytes();
    let no_relu = with_meta(&seed, &[("layers", Some(&layers_json("conv4 bn gap", 1)))]);
    let (_, file) = scratch.load("norelu.safetensors", &no_relu);
    assert_usable(&file.expect("conv4 bn gap fits the seed's tensors"));
    let mut accepted = Vec::new();
    for (what, bytes, bad) in [
        ("conv4 bn relu pool gap", &seed, -1.0f32),
        ("conv4 bn gap", &no_relu, -1.0),
        ("conv4 bn gap", &no_relu, -0.5),
    ] {
        let at = data_start(bytes, "batchnorm1.running_var") + 4;
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        match scratch.load("var.safetensors", &b) {
            (_, Ok(file)) => {
                let x = Array2::<f32>::zeros((1, file.model.preprocess.features()));
                let p = file.model.predict(x.view()).probabilities;
                accepted.push(format!(
                    "{what} with running_var {bad} accepted, predicts {:?} for a black image",
                    p.row(0).to_vec()
                ));
            }
            (path, result) => {
                let msg = refusal(&path, result);
                assert!(msg.contains("batchnorm1.running_var"), "{msg}");
            }
        }
    }
    assert!(accepted.is_empty(), "{}", accepted.join("; "));
}

#[test]
fn a_version_1_file_relabelled_version_2_or_back_is_refused() {
    let scratch = Scratch::new();
    // A version-2 file called version 1 has no layer_sizes.
    let msg = scratch.refused(
        "v2as1.safetensors",
        &with_meta(&cnn_bytes(), &[("format_version", Some("1"))]),
    );
    assert!(msg.contains("no \"layer_sizes\" entry"), "{msg}");
    // A version-1 file given version-2 metadata for its own layers loads as the same network.
    let v1 = two_class_bytes();
    let relabelled = with_meta(
        &v1,
        &[
            ("format_version", Some("2")),
            ("layers", Some(&layers_json("dense5 relu dense3 relu", 1))),
            ("head", Some("sigmoid")),
        ],
    );
    let (_, file) = scratch.load("v1as2.safetensors", &relabelled);
    let file = file.expect("dense layers described in version-2 form");
    assert_usable(&file);
    assert_eq!(file.model.network.sizes(), [48, 5, 3, 1]);
}

#[test]
fn optimiser_settings_out_of_range_or_a_missing_step_are_refused() {
    let scratch = Scratch::new();
    let bytes = three_class_adam_bytes();
    for (optimizer, needle) in [
        (
            r#"{"kind":"adam","beta1":4.9,"beta2":0.99,"epsilon":1e-7,"step":1}"#,
            "beta1",
        ),
        (
            r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":-1e-7,"step":1}"#,
            "epsilon",
        ),
        (
            r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7}"#,
            "step",
        ),
        (
            r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7,"step":-3}"#,
            "step",
        ),
        (
            r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7,"step":1.5}"#,
            "step",
        ),
    ] {
        let b = with_meta(&bytes, &[("optimizer", Some(optimizer))]);
        let msg = scratch.refused("opt.safetensors", &b);
        assert!(
            msg.contains("optimizer") && msg.contains(needle),
            "{optimizer}: {msg}"
        );
    }
    // Momentum's β out of range; the file's Adam slots are then simply unused.
    let b = with_meta(
        &bytes,
        &[(
            "optimizer",
            Some(r#"{"kind":"momentum","beta":1.5,"step":1}"#),
        )],
    );
    let msg = scratch.refused("opt.safetensors", &b);
    assert!(msg.contains("beta"), "{msg}");
}

#[test]
fn models_with_and_without_optimiser_state_still_load() {
    // The positive control for everything above: the unedited files load and are usable,
    // and re-assembling them (metadata and tensors unchanged) does not break them.
    let scratch = Scratch::new();
    for bytes in seeds() {
        let (_, file) = scratch.load("good.safetensors", bytes);
        let file = file.unwrap();
        assert_usable(&file);
        assert_matches_metadata(&file, bytes);
        let again = with_meta(bytes, &[]);
        let (_, file) = scratch.load("again.safetensors", &again);
        assert_usable(&file.unwrap());
    }
    // An optimiser saved before its first step has no slots yet.
    let model = small_model(&["cats", "dogs"]);
    let fresh = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };
    let saved = SavedOptimizer {
        config: fresh,
        state: Default::default(),
        slot_names: vec!["m".into(), "v".into()],
    };
    let (_, file) = scratch.load("fresh.safetensors", &saved_bytes(&model, Some(&saved)));
    let file = file.unwrap();
    assert_usable(&file);
    assert_eq!(file.optimizer.unwrap(), saved);
}

// ---------------------------------------------------------------------------------------------
// Corpus: inputs that once made the loader misbehave, and hand-made ones
// ---------------------------------------------------------------------------------------------

/// Folder of kept inputs.
fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/corpus/models")
}

/// Every corpus file with the words its refusal must contain. A file added to the folder
/// without an entry here fails the test.
const CORPUS: &[(&str, &str)] = &[
    (
        "fuzz-adam-epsilon-zero.bin",
        "optimizer settings out of range: --epsilon must be positive, got 0",
    ),
    (
        "fuzz-optimizer-without-step.bin",
        "has no \"step\" that is a whole number",
    ),
    ("fuzz-two-classes-empty-positive.bin", "no positive class"),
    (
        "flip-adam-beta1.bin",
        "optimizer settings out of range: --beta1 must be in [0, 1), got 1.9",
    ),
    (
        "hand-positive-not-a-class.bin",
        "positive class \"horses\" is not one of the classes [\"cats\", \"dogs\"]",
    ),
    (
        "hand-10000-layers.bin",
        "layer_sizes lists 9999 dense layers, but the file holds only 6 tensors",
    ),
    ("hand-giant-tensor-claim.bin", "truncated or corrupt"),
];

#[test]
fn corpus_files_are_refused_with_the_expected_message() {
    let mut seen = Vec::new();
    if let Ok(entries) = std::fs::read_dir(corpus_dir()) {
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                continue;
            }
            let needle = CORPUS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("corpus file {name} has no entry in CORPUS"))
                .1;
            let msg = refusal(&path, load(&path));
            assert!(msg.contains(needle), "{name}: expected {needle:?} in {msg}");
            assert!(msg.len() < 400, "{name}: a message too long to read: {msg}");
            seen.push(name);
        }
    }
    for (name, _) in CORPUS {
        assert!(
            seen.iter().any(|s| s == name),
            "corpus file {name} is missing"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzing (proptest): random files, mutated files, structurally edited files
// ---------------------------------------------------------------------------------------------

/// One edit of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte.
    Flip(Index, u8),
    /// Overwrite a byte.
    Set(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Insert a run of bytes.
    Insert(Index, Vec<u8>),
    /// Delete a run of up to this many bytes.
    Delete(Index, usize),
    /// Overwrite the 8-byte header-length prefix.
    HeaderLength(u64),
    /// Add `delta` to the header-length prefix (off-by-a-few claims).
    HeaderLengthBy(i64),
    /// XOR a byte inside the JSON header (where most checks live).
    FlipInHeader(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, run)| Mutation::Insert(i, run)),
        1 => (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => prop_oneof![
            any::<u64>(),
            0..4096u64,
            Just(u64::MAX),
            Just(100_000_000u64),
            Just(100_000_001u64),
        ]
        .prop_map(Mutation::HeaderLength),
        1 => (-16i64..=16).prop_map(Mutation::HeaderLengthBy),
        4 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::FlipInHeader(i, m)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, mask) => {
            let at = i.index(bytes.len());
            bytes[at] ^= mask;
        }
        Mutation::Set(i, v) => {
            let at = i.index(bytes.len());
            bytes[at] = *v;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Insert(i, run) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, run.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::HeaderLength(v) => {
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        Mutation::HeaderLengthBy(d) => {
            if bytes.len() >= 8 {
                let v = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                bytes[..8].copy_from_slice(&v.wrapping_add_signed(*d).to_le_bytes());
            }
        }
        Mutation::FlipInHeader(i, mask) => {
            if bytes.len() > 8 {
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let end = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_add(8)
                    .min(bytes.len());
                if end > 8 {
                    let at = 8 + i.index(end - 8);
                    bytes[at] ^= mask;
                }
            }
        }
    }
}

/// The valid files mutations start from: version 1 (dense) and version 2 (a CNN), each
/// two-class (sigmoid) and three-class with Adam state, and version 3 (a residual network).
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        vec![
            two_class_bytes(),
            three_class_adam_bytes(),
            cnn_bytes(),
            cnn_three_class_adam_bytes(),
            resnet_adam_bytes(),
        ]
    })
}

/// Metadata keys a deepcat file has, and one it does not.
const KEYS: &[&str] = &[
    "format",
    "format_version",
    "classes",
    "positive",
    "image_size",
    "resize",
    "orientation",
    "pixel_layout",
    "normalisation",
    "tta",
    "layer_sizes",
    "activations",
    "layers",
    "head",
    "optimizer",
    "training",
    "unknown",
];

/// `layers` values around the version-2 seeds' (`conv4 bn relu pool gap` and a head of 1 or 3
/// units): valid ones, and ones each check of the loader refuses.
fn layers_values() -> Vec<String> {
    let mut values: Vec<String> = [
        (CNN_BODY, 1),
        (CNN_BODY, 3),
        (CNN_BODY, 2),
        ("conv4 bn relu pool pool gap", 1),
        ("conv4 bn relu pool pool pool pool gap", 3),
        ("conv4 relu pool gap", 1),
        ("conv4 bn relu gap", 3),
        ("conv4 bn relu pool", 1),
        ("conv4s2 bn relu pool gap", 1),
        ("conv4k1 bn relu pool gap", 3),
        ("conv5 bn relu pool gap", 1),
        ("conv4 bn relu pool gap dropout0.5", 1),
        ("conv4 bn relu pool gap bn", 3),
        ("", 1),
        ("gap", 3),
        ("dense5 relu dense3 relu", 1),
        (
            "conv4 bn relu res4 res(conv8s2 bn relu conv8 bn | conv8k1s2 bn) gap",
            3,
        ),
        ("conv4 bn relu res4 res8s2 gap", 3),
        ("conv4 bn relu res8 gap", 1),
        ("conv4 res(conv4 res4) gap", 1),
        ("conv4 bn relu res(conv8s2 bn relu conv8 bn) gap", 3),
    ]
    .iter()
    .map(|(body, outputs)| layers_json(body, *outputs))
    .collect();
    values.extend(
        [
            r#"[{"kind":"conv","channels":4,"kernel":4,"stride":1},{"kind":"batchnorm"},{"kind":"relu"},{"kind":"maxpool"},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"conv","channels":4,"kernel":3,"stride":0},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"conv","channels":4,"kernel":3},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"softmax"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"dense","units":0}]"#,
            r#"[{"kind":"dropout","p":1.5},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"relu","extra":1},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"residual","body":[{"kind":"relu","extra":1}],"shortcut":[]},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"residual","body":[],"shortcut":[]},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"residual","body":[{"kind":"relu"}],"shortcut":[],"skip":1},{"kind":"gap"},{"kind":"dense","units":1}]"#,
            r#"[{"kind":"dense","units":18446744073709551616}]"#,
            r#"{"kind":"dense","units":1}"#,
            r#"[[]]"#,
            "[",
        ]
        .map(String::from),
    );
    values
}

/// Values that sit on the edges of what the loader checks.
fn meta_value() -> impl Strategy<Value = String> {
    let edges = prop::sample::select(vec![
        "",
        "0",
        "1",
        "2",
        "-1",
        "4",
        "5",
        "4096",
        "4097",
        "18446744073709551616",
        "1e3",
        "NaN",
        "null",
        "true",
        "[]",
        "{}",
        "[48]",
        "[48,5,3,1]",
        "[48,5,3,3]",
        "[48,5,1]",
        "[48,0,3,1]",
        "[48,5,3,2]",
        "[75,5,3,1]",
        r#"["a"]"#,
        r#"["a","a"]"#,
        r#"["a","b"]"#,
        r#"["a","b","c"]"#,
        r#"["cats","dogs"]"#,
        r#"["","x"]"#,
        "a",
        "b",
        "cats",
        "dogs",
        "deepcat",
        "nearest",
        "bilinear",
        "lanczos",
        "exif",
        "ignored",
        "hwc_rgb",
        "divide_by_255",
        r#"["relu","relu","sigmoid"]"#,
        r#"["relu","relu","softmax"]"#,
        r#"["relu","sigmoid"]"#,
        r#"{"kind":"gd","step":0}"#,
        r#"{"kind":"gd"}"#,
        r#"{"kind":"momentum","beta":0.9,"step":3}"#,
        r#"{"kind":"momentum","beta":1.0,"step":3}"#,
        r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7,"step":1}"#,
        r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":0,"step":1}"#,
        r#"{"kind":"adam","beta1":-0.5,"beta2":0.99,"epsilon":1e-7,"step":1}"#,
        r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7,"step":-1}"#,
        r#"{"kind":"adam","beta1":0.9,"beta2":0.99,"epsilon":1e-7}"#,
        "8",
        "16",
        "sigmoid",
        "softmax",
        "relu",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        6 => edges,
        2 => prop::sample::select(layers_values()),
        1 => "[ -~]{0,16}",
        1 => prop::collection::vec(0usize..80, 0..6)
            .prop_map(|v| serde_json::to_string(&v).unwrap()),
        1 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "cats", "dogs", ""]), 0..5)
            .prop_map(|v| serde_json::to_string(&v).unwrap()),
    ]
}

/// One structural edit: of the metadata, or of a tensor.
#[derive(Debug, Clone)]
enum Edit {
    SetMeta(&'static str, String),
    RemoveMeta(&'static str),
    RemoveTensor(Index),
    Reshape(Index, Vec<usize>),
    Retype(Index, Dtype),
    SetValue(Index, Index, f32),
    Rename(Index, String),
    AddTensor(String, Vec<usize>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let names = prop::sample::select(vec![
        "dense1.weight",
        "dense1.bias",
        "dense2.weight",
        "dense3.bias",
        "dense4.weight",
        "dense2.bias",
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "batchnorm1.weight",
        "batchnorm1.bias",
        "batchnorm1.running_mean",
        "batchnorm1.running_var",
        "optimizer.m.dense1.weight",
        "optimizer.velocity.dense1.weight",
        "optimizer.m.conv1.weight",
        "optimizer.v.batchnorm1.weight",
        "__metadata__",
        "",
    ])
    .prop_map(str::to_string);
    let shape = prop_oneof![
        3 => prop::collection::vec(
            prop_oneof![0usize..=8, prop::sample::select(vec![1usize, 3, 5, 48, 60])],
            0..=3,
        ),
        // Conv weights are (c_out, c_in, k, k).
        1 => prop::collection::vec(prop::sample::select(vec![0usize, 1, 3, 4, 5]), 4..=5),
    ];
    let dtype = prop::sample::select(vec![
        Dtype::F32,
        Dtype::F64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U8,
        Dtype::I64,
    ]);
    let value = prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE / 2.0),
        Just(-0.0f32),
        any::<f32>(),
    ];
    prop_oneof![
        4 => (prop::sample::select(KEYS), meta_value()).prop_map(|(k, v)| Edit::SetMeta(k, v)),
        1 => prop::sample::select(KEYS).prop_map(Edit::RemoveMeta),
        1 => any::<Index>().prop_map(Edit::RemoveTensor),
        2 => (any::<Index>(), shape.clone()).prop_map(|(i, s)| Edit::Reshape(i, s)),
        1 => (any::<Index>(), dtype).prop_map(|(i, d)| Edit::Retype(i, d)),
        2 => (any::<Index>(), any::<Index>(), value).prop_map(|(i, j, v)| Edit::SetValue(i, j, v)),
        1 => (any::<Index>(), names.clone()).prop_map(|(i, n)| Edit::Rename(i, n)),
        1 => (names, shape).prop_map(|(n, s)| Edit::AddTensor(n, s)),
    ]
}

fn apply_edit(meta: &mut HashMap<String, String>, tensors: &mut Vec<Tensor>, e: &Edit) {
    let pick = |i: &Index, ts: &Vec<Tensor>| (!ts.is_empty()).then(|| i.index(ts.len()));
    match e {
        Edit::SetMeta(k, v) => {
            meta.insert(k.to_string(), v.clone());
        }
        Edit::RemoveMeta(k) => {
            meta.remove(*k);
        }
        Edit::RemoveTensor(i) => {
            if let Some(at) = pick(i, tensors) {
                tensors.remove(at);
            }
        }
        Edit::Reshape(i, shape) => {
            if let Some(at) = pick(i, tensors) {
                let t = &mut tensors[at];
                t.shape = shape.clone();
                t.data = vec![0x3f; shape.iter().product::<usize>() * dtype_size(t.dtype)];
            }
        }
        Edit::Retype(i, dtype) => {
            if let Some(at) = pick(i, tensors) {
                let t = &mut tensors[at];
                t.dtype = *dtype;
                t.data = vec![0x3f; t.shape.iter().product::<usize>() * dtype_size(*dtype)];
            }
        }
        Edit::SetValue(i, j, v) => {
            if let Some(at) = pick(i, tensors) {
                let t = &mut tensors[at];
                if t.dtype == Dtype::F32 && !t.data.is_empty() {
                    let k = j.index(t.data.len() / 4) * 4;
                    t.data[k..k + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        Edit::Rename(i, name) => {
            if let Some(at) = pick(i, tensors)
                && !tensors.iter().any(|t| t.name == *name)
            {
                tensors[at].name = name.clone();
            }
        }
        Edit::AddTensor(name, shape) => {
            if !tensors.iter().any(|t| t.name == *name) {
                tensors.push(Tensor {
                    name: name.clone(),
                    dtype: Dtype::F32,
                    shape: shape.clone(),
                    data: vec![0; shape.iter().product::<usize>() * 4],
                });
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Any bytes at all: a model that passed every check, or a clean error.
    #[test]
    fn fuzz_random_bytes_never_panic_the_loader(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let scratch = Scratch::new();
        load_never_panics(&scratch, &bytes)?;
    }

    /// Random bytes behind a plausible header-length prefix, so the JSON parser is reached.
    #[test]
    fn fuzz_random_headers_never_panic_the_loader(
        header in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            "\\{[ -~]{0,200}\\}".prop_map(String::into_bytes),
        ],
        data in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let scratch = Scratch::new();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&data);
        load_never_panics(&scratch, &bytes)?;
    }

    /// A valid model with 1–8 byte-level mutations: flips, overwrites, truncation, inserted or
    /// deleted runs, a rewritten header-length prefix.
    #[test]
    fn fuzz_mutated_models_never_panic_and_loaded_ones_are_consistent(
        seed in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..=8),
    ) {
        let scratch = Scratch::new();
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        load_never_panics(&scratch, &bytes)?;
    }

    /// A valid model whose metadata entries and tensors are edited (a valid safetensors file
    /// every time, so every check of the loader is reached).
    #[test]
    fn fuzz_edited_models_never_panic_and_loaded_ones_are_consistent(
        seed in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..=4),
    ) {
        let scratch = Scratch::new();
        let seeds = seeds();
        let (meta, mut tensors) = split(&seeds[seed.index(seeds.len())]);
        let mut meta = meta.unwrap();
        for e in &edits {
            apply_edit(&mut meta, &mut tensors, e);
        }
        if let Some(bytes) = try_assemble(Some(meta), &tensors) {
            load_never_panics(&scratch, &bytes)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CLI: evaluate and predict with bad model files
// ---------------------------------------------------------------------------------------------

/// A data folder of cats/dogs images and a valid model for it (4×4, untrained) in `dir`.
fn cli_setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    synthetic(&data, 3);
    let model = dir.join("model.safetensors");
    std::fs::write(&model, two_class_bytes()).unwrap();
    let image = data.join("cats/cats_000.png");
    (data, model, image)
}

#[test]
fn evaluate_and_predict_accept_the_untampered_model() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model, image) = cli_setup(dir.path());
    succeeds(deepcat().arg("evaluate").arg(&model).arg(&data));
    succeeds(deepcat().arg("predict").arg(&model).arg(&image));
}

#[test]
fn evaluate_and_predict_with_a_truncated_model_exit_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model, image) = cli_setup(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let name = cut.display().to_string();
    for cmd in ["evaluate", "predict"] {
        let target = if cmd == "evaluate" { &data } else { &image };
        fails_with(
            deepcat().arg(cmd).arg(&cut).arg(target),
            1,
            &["cannot use model file", &name, "truncated or corrupt"],
        );
    }
}

#[test]
fn evaluate_and_predict_with_a_file_that_is_not_a_model_exit_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, image) = cli_setup(dir.path());
    // An image given where the model goes (arguments swapped), and a foreign safetensors file.
    let foreign = dir.path().join("foreign.safetensors");
    let t = Tensor {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![2],
        data: vec![0; 8],
    };
    std::fs::write(&foreign, assemble(None, &[t])).unwrap();
    for (bad, needle) in [
        (&image, "not a readable safetensors file"),
        (&foreign, "no deepcat metadata"),
    ] {
        let name = bad.display().to_string();
        for cmd in ["evaluate", "predict"] {
            let target = if cmd == "evaluate" { &data } else { &image };
            fails_with(
                deepcat().arg(cmd).arg(bad).arg(target),
                1,
                &["cannot use model file", &name, needle],
            );
        }
    }
}

#[test]
fn evaluate_and_predict_with_a_missing_model_exit_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, image) = cli_setup(dir.path());
    let missing = dir.path().join("no-such-model.safetensors");
    let name = missing.display().to_string();
    for cmd in ["evaluate", "predict"] {
        let target = if cmd == "evaluate" { &data } else { &image };
        fails_with(
            deepcat().arg(cmd).arg(&missing).arg(target),
            1,
            &["cannot read model file", &name],
        );
    }
}

#[test]
fn evaluate_on_folders_that_are_not_the_models_classes_exits_1_naming_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model, _) = cli_setup(dir.path());
    let other = dir.path().join("other");
    for (class, colour) in [("horses", [200u8, 10, 10]), ("zebras", [10u8, 10, 200])] {
        std::fs::create_dir_all(other.join(class)).unwrap();
        solid_ish(&other.join(class).join("a.png"), colour, 1);
    }
    let folder = other.join("horses").display().to_string();
    fails_with(
        deepcat().arg("evaluate").arg(&model).arg(&other),
        1,
        &[&folder, "is not one of the classes (cats, dogs)"],
    );
}

#[test]
fn a_model_trained_at_one_size_evaluates_images_of_other_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let train_dir = dir.path().join("train");
    synthetic(&train_dir, 10);
    let model = dir.path().join("m.safetensors");
    succeeds(
        deepcat()
            .arg("train")
            .arg(&train_dir)
            .args(["--size", "8", "--layers", "4", "--iterations", "20"])
            .args(["--test-split", "0.2", "--quiet", "--model"])
            .arg(&model),
    );
    // The same colours at 30×17, 5×5 and 8×8: the model's preprocessing resizes them to 8×8.
    let eval = dir.path().join("eval");
    let mut count: u64 = 0;
    for (class, base) in [("cats", [200u8, 60, 40]), ("dogs", [40u8, 60, 200])] {
        std::fs::create_dir_all(eval.join(class)).unwrap();
        for (w, h) in [(30u32, 17u32), (5, 5), (8, 8)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let n = ((x * 7 + y * 3) % 30) as u8;
                image::Rgb([base[0] + n, base[1] + n, base[2] + n])
            });
            img.save(eval.join(class).join(format!("{w}x{h}.png")))
                .unwrap();
            count += 1;
        }
    }
    let out = succeeds(
        deepcat()
            .arg("evaluate")
            .arg(&model)
            .arg(&eval)
            .arg("--json"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(json["size"], count, "{json}");
    let out = succeeds(
        deepcat()
            .arg("predict")
            .arg(&model)
            .arg(eval.join("dogs/30x17.png"))
            .arg("--json"),
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(line["class"] == "cats" || line["class"] == "dogs", "{line}");
}
