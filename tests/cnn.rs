//! Convolutional networks end to end: the real `deepcat` binary trains tiny CNNs (`--arch`),
//! saves version-2 model files, and `summary`, `predict` and `evaluate` use them; bad
//! architectures are refused before any image is read; a committed version-1 model still
//! predicts what it predicted when it was made.
//!
//! Tests that need `../shared/data` (present in CI) print a message and pass when it is absent,
//! unless DEEPCAT_REQUIRE_DATA is set (as CI sets it), when they fail;
//! the others build their own images (or use the committed ones in `tests/fixtures/`).

mod common;

use common::{deepcat, repo, shared_data, stderr_of};

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Committed test files.
fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The last line of standard output, parsed as JSON.
fn last_json(output: &[u8]) -> Value {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Every line of standard output, each parsed as JSON (`predict --json`).
fn json_lines(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Runs the command and asserts it succeeded, showing its standard error if not.
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    out
}

/// Runs the command and checks it fails with exit code `code` and a message containing every
/// one of `needles`, without a panic; returns standard error.
fn fails_with(cmd: &mut Command, code: i32, needles: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in stderr:\n{err}");
    }
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    err
}

/// A small learnable two-class folder: reddish vs bluish noisy 12×12 squares.
fn synthetic(root: &Path, per_class: usize) {
    for (class, base) in [("cats", [200u8, 60, 40]), ("dogs", [40u8, 60, 200])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = RgbImage::from_fn(12, 12, |x, y| {
                let n = ((x * 31 + y * 17 + i as u32 * 13) % 40) as u8;
                Rgb([
                    base[0].saturating_add(n),
                    base[1].saturating_add(n),
                    base[2].saturating_add(n),
                ])
            });
            img.save(dir.join(format!("{class}_{i:03}.png"))).unwrap();
        }
    }
}

/// The `__metadata__` of a safetensors file, read straight from its header (8-byte
/// little-endian length, then JSON), without deepcat's loader.
fn metadata(path: &Path) -> serde_json::Map<String, Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]
        .as_object()
        .unwrap_or_else(|| panic!("no __metadata__ in {header}"))
        .clone()
}

/// The probabilities of one `predict --json` line, checked to be in [0, 1] and to sum to 1.
fn checked_probabilities(line: &Value, classes: usize) -> Vec<f64> {
    let probs: Vec<f64> = line["probabilities"]
        .as_object()
        .unwrap_or_else(|| panic!("no probabilities in {line}"))
        .values()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), classes, "{line}");
    for p in &probs {
        assert!((0.0..=1.0).contains(p), "{line}");
    }
    let sum: f64 = probs.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "probabilities sum to {sum}: {line}"
    );
    let best = probs.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        (line["probability"].as_f64().unwrap() - best).abs() < 1e-9,
        "the predicted class has the highest probability: {line}"
    );
    probs
}

/// The tiny CNN of these tests.
const TINY: &str = "conv4 bn relu pool conv8 bn relu pool gap";

#[test]
fn a_tiny_cnn_on_real_images_saves_a_v2_model_that_summary_predict_and_evaluate_agree_on() {
    let Some(root) = shared_data("catvnoncat") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cnn.safetensors");
    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(root.join("train"))
            .arg("--test-dir")
            .arg(root.join("test"))
            .args(["--size", "16", "--arch", TINY, "--epochs", "2"])
            .args(["--json", "--quiet", "--model"])
            .arg(&model),
    );
    let train = last_json(&out.stdout);
    assert_eq!(train["classes"], json!(["cat", "non-cat"]));
    assert_eq!(train["train_size"], 209);
    assert_eq!(train["test_size"], 50);
    assert_eq!(train["features"], 16 * 16 * 3);
    assert_eq!(train["recipe"], "conv", "{train}");
    // The conv recipe's batch of 32: ⌈209 / 32⌉ = 7 steps per epoch.
    assert_eq!(train["iterations"], 14, "{train}");
    assert_eq!(train["epochs"], 2, "{train}");
    let test_accuracy = train["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_accuracy));

    // The file is version 2 and describes the layers, the head's dense layer last.
    let meta = metadata(&model);
    assert_eq!(meta["format"], "deepcat");
    assert_eq!(meta["format_version"], "2");
    assert_eq!(meta["head"], "sigmoid");
    assert!(!meta.contains_key("layer_sizes"), "{meta:?}");
    let layers: Vec<Value> = serde_json::from_str(meta["layers"].as_str().unwrap()).unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "conv",
            "batchnorm",
            "relu",
            "maxpool",
            "conv",
            "batchnorm",
            "relu",
            "maxpool",
            "gap",
            "dense"
        ]
    );
    assert_eq!(layers[0]["channels"], 4);
    assert_eq!(layers[0]["kernel"], 3);
    assert_eq!(layers[0]["stride"], 1);
    assert_eq!(layers[9]["units"], 1);

    // summary: every layer with its output shape and parameter counts, worked out by hand.
    let out = succeeds(deepcat().arg("summary").arg(&model).arg("--json"));
    let s = last_json(&out.stdout);
    let summary = &s["summary"];
    assert_eq!(summary["head"], "sigmoid", "{s}");
    assert_eq!(
        summary["input"],
        json!({"height": 16, "width": 16, "channels": 3})
    );
    // (name, token, output h×w×c, trainable, non-trainable)
    let expected: &[(&str, &str, [u64; 3], u64, u64)] = &[
        ("conv1", "conv4", [16, 16, 4], 4 * 3 * 3 * 3 + 4, 0), // 112
        ("batchnorm1", "bn", [16, 16, 4], 2 * 4, 2 * 4),       // γ, β; mean, var
        ("relu1", "relu", [16, 16, 4], 0, 0),
        ("maxpool1", "pool", [8, 8, 4], 0, 0),
        ("conv2", "conv8", [8, 8, 8], 8 * 4 * 3 * 3 + 8, 0), // 296
        ("batchnorm2", "bn", [8, 8, 8], 2 * 8, 2 * 8),
        ("relu2", "relu", [8, 8, 8], 0, 0),
        ("maxpool2", "pool", [4, 4, 8], 0, 0),
        ("gap1", "gap", [1, 1, 8], 0, 0),
        ("dense1", "dense1", [1, 1, 1], 8 + 1, 0),
    ];
    let rows = summary["layers"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "{s}");
    for (row, (name, token, [h, w, c], trainable, non_trainable)) in rows.iter().zip(expected) {
        assert_eq!(row["name"], *name, "{row}");
        assert_eq!(row["layer"], *token, "{row}");
        assert_eq!(
            row["output"],
            json!({"height": h, "width": w, "channels": c}),
            "{row}"
        );
        assert_eq!(row["trainable"], *trainable, "{row}");
        assert_eq!(row["non_trainable"], *non_trainable, "{row}");
    }
    assert_eq!(s["trainable"], 112 + 8 + 296 + 16 + 9);
    assert_eq!(s["non_trainable"], 8 + 16);
    assert_eq!(train["parameters"], s["trainable"]);
    assert_eq!(s["architecture"], TINY);
    assert_eq!(s["image_size"], 16);

    // predict: a probability per class, in [0, 1], summing to 1.
    let pngs: Vec<PathBuf> = ["test_000.png", "test_001.png", "test_002.png"]
        .iter()
        .map(|f| root.join("test/cat").join(f))
        .chain(std::iter::once(root.join("test/non-cat/test_005.png")))
        .collect();
    let out = succeeds(
        deepcat()
            .arg("predict")
            .arg(&model)
            .args(&pngs)
            .arg("--json"),
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), pngs.len());
    for l in &lines {
        checked_probabilities(l, 2);
        assert!(l["class"] == "cat" || l["class"] == "non-cat", "{l}");
    }

    // evaluate reads the test folder again with the model's preprocessing and gets exactly the
    // accuracy train measured on it in memory.
    let out = succeeds(
        deepcat()
            .arg("evaluate")
            .arg(&model)
            .arg(root.join("test"))
            .arg("--json"),
    );
    let eval = last_json(&out.stdout);
    assert_eq!(eval["size"], 50);
    assert_eq!(eval["accuracy"], train["test_accuracy"], "{eval}");
}

#[test]
fn a_cnn_on_three_classes_gets_a_softmax_head_and_three_probabilities() {
    let Some(root) = shared_data("natural_images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let classes = ["airplane", "car", "flower"];
    for class in classes {
        std::fs::create_dir_all(d.join("data").join(class)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(15) {
            std::fs::copy(f, d.join("data").join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--size",
        "16",
        "--arch",
        "conv4 relu pool gap",
        "--epochs",
        "1",
        "--json",
        "--quiet",
        "--model",
        "m.safetensors",
    ]));
    let v = last_json(&out.stdout);
    assert_eq!(v["classes"], json!(classes));
    assert!(v["positive"].is_null(), "{v}");
    assert_eq!(
        v["train_size"].as_u64().unwrap() + v["test_size"].as_u64().unwrap(),
        45
    );
    let meta = metadata(&d.join("m.safetensors"));
    assert_eq!(meta["format_version"], "2");
    assert_eq!(meta["head"], "softmax");
    assert_eq!(meta["positive"], "");
    let layers: Vec<Value> = serde_json::from_str(meta["layers"].as_str().unwrap()).unwrap();
    assert_eq!(
        layers.last().unwrap(),
        &json!({"kind": "dense", "units": 3}),
        "{layers:?}"
    );

    let out =
        succeeds(
            deepcat()
                .current_dir(d)
                .args(["predict", "m.safetensors", "data/car", "--json"]),
        );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 15);
    for l in &lines {
        checked_probabilities(l, 3);
        let names: Vec<&String> = l["probabilities"].as_object().unwrap().keys().collect();
        for c in classes {
            assert!(names.iter().any(|n| *n == c), "{c} missing in {l}");
        }
        assert_eq!(l["top"].as_array().unwrap().len(), 3, "{l}");
    }
}

/// Training data for the tests that need no particular images: `catvnoncat`'s training folder
/// when it is there (real photos, so the matrix products are big enough to be split between
/// threads), else a synthetic two-class folder made in `dir`.
fn cnn_data(dir: &Path) -> PathBuf {
    let p = repo().join("../shared/data/catvnoncat/train");
    if p.is_dir() {
        return p;
    }
    eprintln!("note: {} not found; using synthetic images", p.display());
    let data = dir.join("synthetic");
    synthetic(&data, 40);
    data
}

#[test]
fn a_cnn_trained_with_one_thread_or_two_gives_byte_identical_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = cnn_data(dir.path());
    let mut files = Vec::new();
    for threads in ["1", "2"] {
        let model = dir.path().join(format!("t{threads}.safetensors"));
        succeeds(
            deepcat()
                .args(["--threads", threads, "train"])
                .arg(&data)
                .args(["--size", "16", "--arch", TINY, "--epochs", "2"])
                .args(["--seed", "3", "--quiet", "--model"])
                .arg(&model),
        );
        files.push(std::fs::read(&model).unwrap());
    }
    assert!(
        files[0] == files[1],
        "--threads 1 and --threads 2 wrote different model files ({} and {} bytes)",
        files[0].len(),
        files[1].len()
    );
    // A different seed gives different weights: the comparison above can fail.
    let other = dir.path().join("seed4.safetensors");
    succeeds(
        deepcat()
            .args(["--threads", "2", "train"])
            .arg(&data)
            .args(["--size", "16", "--arch", TINY, "--epochs", "2"])
            .args(["--seed", "4", "--quiet", "--model"])
            .arg(&other),
    );
    assert!(std::fs::read(&other).unwrap() != files[0]);
}

/// The optimiser's step count saved in a model file.
fn saved_step(model: &Path) -> u64 {
    let meta = metadata(model);
    let opt: Value = serde_json::from_str(meta["optimizer"].as_str().unwrap()).unwrap();
    opt["step"]
        .as_u64()
        .unwrap_or_else(|| panic!("no step in {opt}"))
}

#[test]
fn a_checkpointed_cnn_resumes_for_more_epochs_and_refuses_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = cnn_data(d);
    let model = d.join("m.safetensors");
    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(&data)
            .args(["--size", "16", "--arch", TINY, "--epochs", "2"])
            .args(["--checkpoint-every", "1", "--json", "--quiet", "--model"])
            .arg(&model),
    );
    let first = last_json(&out.stdout);
    let per_epoch = first["train_size"].as_u64().unwrap().div_ceil(32);
    assert_eq!(first["iterations"], 2 * per_epoch, "{first}");
    assert_eq!(first["history"].as_array().unwrap().len(), 2);
    assert_eq!(saved_step(&model), 2 * per_epoch);
    assert_eq!(metadata(&model)["format_version"], "2");

    // Resume: the saved architecture (no --arch given), one more epoch, Adam's state carried.
    let resumed_model = d.join("resumed.safetensors");
    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(&data)
            .arg("--resume")
            .arg(&model)
            .args(["--epochs", "1", "--json", "--quiet", "--model"])
            .arg(&resumed_model),
    );
    let resumed = last_json(&out.stdout);
    assert_eq!(resumed["iterations"], per_epoch, "{resumed}");
    assert_eq!(resumed["architecture"], first["architecture"]);
    assert_eq!(resumed["train_size"], first["train_size"]);
    assert_eq!(
        saved_step(&resumed_model),
        3 * per_epoch,
        "the optimiser's step count goes on from the resumed model's"
    );
    assert!(
        std::fs::read(&resumed_model).unwrap() != std::fs::read(&model).unwrap(),
        "one more epoch changed nothing"
    );
    // The same architecture named explicitly is accepted too.
    succeeds(
        deepcat()
            .arg("train")
            .arg(&data)
            .arg("--resume")
            .arg(&model)
            .args(["--arch", TINY, "--epochs", "1", "--quiet", "--model"])
            .arg(d.join("again.safetensors")),
    );

    // Another architecture: refused as a usage error naming both sets of layers.
    let err = fails_with(
        deepcat()
            .arg("train")
            .arg(&data)
            .arg("--resume")
            .arg(&model)
            .args([
                "--arch",
                "conv6 bn relu pool gap",
                "--epochs",
                "1",
                "--quiet",
            ])
            .arg("--model")
            .arg(d.join("other.safetensors")),
        2,
        &["resume"],
    );
    assert!(
        err.contains("conv4") && err.contains("conv6"),
        "the message names the saved and the asked-for layers:\n{err}"
    );
    assert!(!d.join("other.safetensors").exists());
}

#[test]
fn resuming_a_cnn_with_its_layers_reordered_or_removed_is_refused() {
    // Pools, ReLUs and batch-norm positions change what the saved weights compute, even where
    // every tensor keeps its shape: only dropout may differ when resuming.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = cnn_data(d);
    let model = d.join("m.safetensors");
    succeeds(
        deepcat()
            .arg("train")
            .arg(&data)
            .args(["--size", "16", "--arch", TINY, "--epochs", "1", "--quiet"])
            .arg("--model")
            .arg(&model),
    );
    let resume = |arch: &str| {
        let mut cmd = deepcat();
        cmd.arg("train")
            .arg(&data)
            .arg("--resume")
            .arg(&model)
            .args(["--arch", arch, "--epochs", "1", "--quiet", "--model"])
            .arg(d.join("resumed.safetensors"));
        cmd
    };
    // Dropout added: the same weights in the same layers, accepted.
    succeeds(&mut resume(&format!("{TINY} dropout0.5")));
    let mut accepted = Vec::new();
    for arch in [
        "conv4 bn relu pool conv8 relu bn pool gap", // bn and relu swapped
        "conv4 bn relu conv8 bn relu pool gap",      // a pool removed
        "conv4 bn pool conv8 bn relu pool gap",      // a relu removed
        "conv4 bn relu pool pool conv8 bn relu gap", // a pool moved
    ] {
        let out = resume(arch).output().unwrap();
        let err = stderr_of(&out);
        assert!(!err.contains("panicked"), "{err}");
        if out.status.code() == Some(2) {
            assert!(
                err.contains("resume") && err.contains(arch),
                "{arch}: {err}"
            );
        } else {
            accepted.push(format!("{arch:?} (exit {:?})", out.status.code()));
        }
    }
    assert!(
        accepted.is_empty(),
        "resumed {TINY:?} as {}: the saved weights now compute something else",
        accepted.join(", ")
    );
}

/// `deepcat train no/such/folder ARGS` in a scratch folder: checks it exits 2 with every one of
/// `needles`, and that the data folder was never looked at (the architecture is checked before
/// any image is read).
fn bad_arch(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_with(
        deepcat()
            .current_dir(dir.path())
            .args(["train", "no/such/folder"])
            .args(args),
        2,
        needles,
    );
    assert!(
        !err.contains("does not exist") && !err.contains("no/such/folder"),
        "{args:?}: the data folder was read before the architecture was checked:\n{err}"
    );
    assert!(
        err.lines().count() <= 4,
        "a short message, not a dump:\n{err}"
    );
}

#[test]
fn an_unknown_layer_in_the_architecture_is_a_usage_error_naming_it() {
    bad_arch(
        &["--arch", "conv4 softmax"],
        &["--arch", "unknown layer \"softmax\""],
    );
    bad_arch(&["--arch", ""], &["--arch", "empty"]);
}

#[test]
fn an_even_conv_kernel_is_a_usage_error_naming_the_layer() {
    bad_arch(
        &["--arch", "conv8k4 relu gap"],
        &["--arch", "conv8k4", "odd"],
    );
}

#[test]
fn pools_that_leave_no_pixels_are_a_usage_error_naming_the_layer() {
    // 8 → 4 → 2 → 1: the fourth pool has nothing to pool.
    bad_arch(
        &["--size", "8", "--arch", "pool pool pool pool"],
        &["layer 4 (pool)", "1×1"],
    );
    // The same with conv layers in front: the position counts every layer.
    bad_arch(
        &["--size", "8", "--arch", "conv4 pool pool pool pool gap"],
        &["layer 5 (pool)"],
    );
}

#[test]
fn dropout_with_a_preset_and_no_dense_layers_is_a_usage_error() {
    // --dropout applies to the dense layers of --layers; the preset has none.
    bad_arch(&["--arch", "cnn", "--dropout", "0.5"], &["--dropout"]);
    // With --layers there are dense layers for it: the flags are accepted (the run then fails
    // on the missing folder, exit 1).
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        deepcat()
            .current_dir(dir.path())
            .args(["train", "no/such/folder", "--arch", "cnn", "--layers", "8"])
            .args(["--dropout", "0.5"]),
        1,
        &["does not exist"],
    );
}

#[test]
fn train_summary_prints_the_layer_table_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic(&d.join("data"), 10);
    let out = succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--size",
        "12",
        "--arch",
        "conv4 bn relu pool gap",
        "--epochs",
        "1",
        "--summary",
        "--model",
        "m.safetensors",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "conv1",
        "batchnorm1",
        "maxpool1",
        "gap1",
        "dense1",
        "12×12×4",
        "6×6×4",
        "(sigmoid)",
        // conv 4·3·3·3 + 4 = 112, batch norm 4 + 4 trained and 4 + 4 running, dense 4 + 1.
        "Total params: 133",
        "Trainable params: 125",
        "Non-trainable params: 8",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let table = text.find("Total params").unwrap();
    let report = text
        .find("Train accuracy")
        .unwrap_or_else(|| panic!("no report in\n{text}"));
    assert!(table < report, "the table comes before training:\n{text}");
}

#[test]
fn summary_of_a_dense_model_lists_its_dense_layers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic(&d.join("data"), 6);
    succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--size",
        "4",
        "--layers",
        "5",
        "--iterations",
        "2",
        "--quiet",
        "--model",
        "m.safetensors",
    ]));
    assert_eq!(metadata(&d.join("m.safetensors"))["format_version"], "1");
    let out = succeeds(
        deepcat()
            .current_dir(d)
            .args(["summary", "m.safetensors", "--json"]),
    );
    let s = last_json(&out.stdout);
    let names: Vec<&str> = s["summary"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dense1", "relu1", "dense2"], "{s}");
    assert_eq!(s["trainable"], (48 * 5 + 5) + (5 + 1), "{s}");
    assert_eq!(s["non_trainable"], 0);
    // And the table form.
    let out = succeeds(deepcat().current_dir(d).args(["summary", "m.safetensors"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dense1") && text.contains("Total params: 251"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// A committed version-1 model (tests/fixtures/, see its README.md)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_committed_version_1_model_predicts_what_it_predicted_when_made() {
    let model = fixture("v1.safetensors");
    assert_eq!(
        metadata(&model)["format_version"],
        "1",
        "the fixture is a version-1 file"
    );
    let expected: Vec<Value> = json_lines(&std::fs::read(fixture("v1-predict.jsonl")).unwrap());
    let images = ["cat.png", "non-cat.png"];
    assert_eq!(expected.len(), images.len());
    let out = succeeds(
        deepcat()
            .current_dir(repo().join("tests/fixtures"))
            .args(["predict", "v1.safetensors"])
            .args(images)
            .arg("--json"),
    );
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), expected.len());
    for ((g, e), image) in got.iter().zip(&expected).zip(images) {
        assert!(
            g["path"].as_str().unwrap().ends_with(image),
            "{g} for {image}"
        );
        assert_eq!(g["class"], e["class"], "{image}: {g} vs {e}");
        let (gp, ep) = (
            g["probabilities"].as_object().unwrap(),
            e["probabilities"].as_object().unwrap(),
        );
        assert_eq!(
            gp.keys().collect::<Vec<_>>(),
            ep.keys().collect::<Vec<_>>(),
            "{image}"
        );
        for (class, p) in ep {
            let (p, q) = (p.as_f64().unwrap(), gp[class].as_f64().unwrap());
            assert!(
                (p - q).abs() < 1e-6,
                "{image}: P({class}) is {q}, was {p} when the fixture was made"
            );
        }
        checked_probabilities(g, 2);
    }
    // The two images are told apart, so a model that ignored its input would fail this.
    assert_ne!(got[0]["class"], got[1]["class"], "{got:?}");
}
