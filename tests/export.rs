//! ONNX export end to end: the real `deepcat` binary trains tiny models on the bundled photos
//! (`data/`), `deepcat export` writes them as ONNX, and tract (a Rust ONNX runtime, reading
//! the file with its own types generated from `onnx.proto`) runs them on photos they were not
//! trained on. Its probabilities must equal deepcat's own within 1e-5, for a dense network, a
//! CNN whose dense layer reads an image and a residual network, each with a sigmoid head (two
//! classes) and a softmax head (three), some with test-time flips. Refusals come with clear
//! messages.

mod common;

use common::{deepcat, repo, stderr_of};

use deepcat::data::load_bytes;
use deepcat::model::Model;
use deepcat::model_file;
use prost::Message;
use std::path::{Path, PathBuf};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

/// How far exported probabilities may be from deepcat's.
const TOLERANCE: f32 = 1e-5;
/// Training photos per class: enough to train on, few enough to be quick.
const PER_CLASS: usize = 24;

/// The bundled photos of `class` (`cats` or `random_images`), sorted.
fn bundled(class: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("data").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// A data folder under `root` with a class folder per `(name, photos)`.
fn classes(root: &Path, spec: &[(&str, &[PathBuf])]) -> PathBuf {
    for (name, photos) in spec {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for p in *photos {
            std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    root.to_path_buf()
}

/// Two classes (sigmoid head) and three (softmax head) of real photos, and photos none of
/// them was trained on.
struct Photos {
    two: PathBuf,
    three: PathBuf,
    unseen: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

fn photos() -> Photos {
    let dir = tempfile::tempdir().unwrap();
    let (cats, random) = (bundled("cats"), bundled("random_images"));
    let n = PER_CLASS;
    let two = classes(
        &dir.path().join("two"),
        &[("cats", &cats[..n]), ("random_images", &random[..n])],
    );
    let three = classes(
        &dir.path().join("three"),
        &[
            ("cats_a", &cats[..n]),
            ("cats_b", &cats[n..2 * n]),
            ("random", &random[..n]),
        ],
    );
    let unseen = cats[3 * n..3 * n + 5]
        .iter()
        .chain(&random[3 * n..3 * n + 5])
        .cloned()
        .collect();
    Photos {
        two,
        three,
        unseen,
        _dir: dir,
    }
}

/// Trains a model on `data` with `flags` (small and quick) and saves it as `model`.
fn train(data: &Path, model: &Path, flags: &[&str]) {
    let out = deepcat()
        .arg("train")
        .arg(data)
        .args(["--size", "16", "--quiet", "--seed", "3", "--model"])
        .arg(model)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// `deepcat export model onnx`, which must succeed.
fn export(model: &Path, onnx: &Path) {
    let out = deepcat()
        .arg("export")
        .arg(model)
        .arg(onnx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// `photos` as the ONNX input: deepcat's own preprocessing (resize, bytes), then `/255` and
/// channels first. Also the same rows as deepcat reads them, for its own prediction.
fn inputs(model: &Model, photos: &[PathBuf]) -> (Tensor, Vec<u8>) {
    let s = model.preprocess.size as usize;
    let mut bytes = Vec::new();
    for p in photos {
        bytes.extend(load_bytes(p, &model.preprocess).unwrap());
    }
    let n = photos.len();
    let nchw = tract_ndarray::Array4::from_shape_fn((n, 3, s, s), |(i, c, y, x)| {
        f32::from(bytes[i * s * s * 3 + (y * s + x) * 3 + c]) / 255.0
    });
    (nchw.into_tensor(), bytes)
}

/// Runs the ONNX file with tract on `photos`; returns its probabilities and deepcat's.
fn both(model_path: &Path, onnx: &Path, photos: &[PathBuf]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let model = model_file::load(model_path).unwrap().model;
    let (input, bytes) = inputs(&model, photos);
    let runnable = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = runnable.run(tvec!(input.into())).unwrap();
    let got = out[0].to_plain_array_view::<f32>().unwrap();
    let rows =
        ndarray::Array2::from_shape_vec((photos.len(), bytes.len() / photos.len()), bytes).unwrap();
    let expected = model.predict(&rows).probabilities;
    assert_eq!(got.shape(), expected.shape(), "(N, classes)");
    (
        got.outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect(),
        expected.outer_iter().map(|r| r.to_vec()).collect(),
    )
}

/// Trains, exports and compares one model on `photos`.
fn round_trip(name: &str, data: &Path, flags: &[&str], photos: &[PathBuf], dir: &Path) {
    let model = dir.join(format!("{name}.safetensors"));
    let onnx = dir.join(format!("{name}.onnx"));
    train(data, &model, flags);
    export(&model, &onnx);
    let (got, expected) = both(&model, &onnx, photos);
    let mut worst = 0.0f32;
    for (g, e) in got.iter().zip(&expected) {
        for (a, b) in g.iter().zip(e) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst <= TOLERANCE,
        "{name}: ONNX probabilities differ from deepcat's by {worst}\nonnx: {got:?}\ndeepcat: {expected:?}"
    );
    // The probabilities vary from photo to photo: a constant output would match whatever
    // the layouts did.
    let first: Vec<f32> = expected.iter().map(|r| r[0]).collect();
    let spread = first
        .iter()
        .fold(0.0f32, |m, v| m.max((v - first[0]).abs()));
    assert!(
        spread > 1e-3,
        "{name}: the model answers the same for every photo: {first:?}"
    );
}

#[test]
fn dense_models_export_with_both_heads() {
    let p = photos();
    let dir = tempfile::tempdir().unwrap();
    let dense = ["--layers", "8,4", "--iterations", "30", "--lr", "0.01"];
    round_trip("dense2", &p.two, &dense, &p.unseen, dir.path());
    let mut flipped = dense.to_vec();
    flipped.extend(["--tta", "flip", "--resize", "bilinear"]);
    round_trip("dense3", &p.three, &flipped, &p.unseen, dir.path());
}

#[test]
fn cnn_models_export_with_both_heads() {
    let p = photos();
    let dir = tempfile::tempdir().unwrap();
    // The dense layer reads a 4×4×8 image: its columns are permuted to channels first.
    let cnn = [
        "--arch",
        "conv4 bn relu pool conv8k5s2 bn relu dense6 relu dropout0.2",
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ];
    round_trip("cnn2", &p.two, &cnn, &p.unseen, dir.path());
    let mut flipped = cnn.to_vec();
    flipped.extend(["--tta", "flip"]);
    round_trip("cnn3", &p.three, &flipped, &p.unseen, dir.path());
}

#[test]
fn residual_models_export_with_both_heads() {
    let p = photos();
    let dir = tempfile::tempdir().unwrap();
    let resnet = [
        "--arch",
        "conv4 bn relu res4 res8s2 res(conv8 bn relu dense5 | dense5) gap dropout0.3",
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ];
    round_trip("res2", &p.two, &resnet, &p.unseen, dir.path());
    round_trip("res3", &p.three, &resnet, &p.unseen, dir.path());
}

/// The metadata properties, read with tract's types generated from `onnx.proto`.
fn metadata(onnx: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(onnx).unwrap();
    let proto = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(proto.producer_name, "deepcat");
    let graph = proto.graph.unwrap();
    assert_eq!(graph.input[0].name, "input");
    assert_eq!(graph.output[0].name, "probabilities");
    proto
        .metadata_props
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
}

#[test]
fn the_file_says_how_to_prepare_its_input_and_refusals_are_clear() {
    let p = photos();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("m.safetensors");
    train(
        &p.two,
        &model,
        &["--iterations", "2", "--resize", "lanczos"],
    );
    export(&model, &d.join("m.onnx"));
    let meta = metadata(&d.join("m.onnx"));
    assert_eq!(meta["classes"], r#"["cats","random_images"]"#);
    assert_eq!(meta["positive_class"], "cats");
    assert_eq!(meta["image_size"], "16");
    assert_eq!(meta["resize_filter"], "lanczos");
    assert_eq!(meta["tta"], "none");
    assert!(meta["input_layout"].contains("NCHW") && meta["input_layout"].contains("255"));
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Not a deepcat model.
    std::fs::write(d.join("notes.safetensors"), b"just some text").unwrap();
    let out = deepcat()
        .current_dir(d)
        .args(["export", "notes.safetensors", "x.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot use model file notes.safetensors") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!d.join("x.onnx").exists());

    // A folder that does not exist: refused before the model is even read.
    let out = deepcat()
        .current_dir(d)
        .args(["export", "m.safetensors", "nowhere/m.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("output nowhere/m.onnx: folder nowhere does not exist"),
        "{}",
        stderr_of(&out)
    );
}
