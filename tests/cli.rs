//! End-to-end tests: the real `deepcat` binary on real and deliberately broken images.
//!
//! Tests that need `../shared/data` (present in CI) print a message and pass when it is absent,
//! unless DEEPCAT_REQUIRE_DATA is set (as CI sets it), when they fail,
//! so a fresh clone's `cargo test` still works; everything else builds its own images.

mod common;

use common::{deepcat, repo, shared_data, stderr_of};

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The last line of standard output, parsed as JSON.
fn last_json(output: &[u8]) -> Value {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Runs the command and asserts it succeeded, showing its standard error if not.
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    out
}

/// A small learnable two-class folder: reddish vs bluish noisy squares.
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

/// `deepcat train` on `catvnoncat` (its own test folder, 64 px, JSON, quiet) with `extra`
/// flags, saving to `model`; must succeed.
fn train_catvnoncat(root: &Path, extra: &[&str], model: &Path) -> std::process::Output {
    succeeds(
        deepcat()
            .arg("train")
            .arg(root.join("train"))
            .arg("--test-dir")
            .arg(root.join("test"))
            .args(["--size", "64", "--json", "--quiet"])
            .args(extra)
            .arg("--model")
            .arg(model),
    )
}

#[test]
fn train_then_predict_and_evaluate_agree_on_real_images() {
    let Some(root) = shared_data("catvnoncat") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cat.safetensors");
    let out = train_catvnoncat(&root, &["--iterations", "300"], &model);
    let train = last_json(&out.stdout);
    for key in [
        "classes",
        "positive",
        "train_size",
        "test_size",
        "features",
        "layers",
        "iterations",
        "costs",
        "train_accuracy",
        "test_accuracy",
        "load_seconds",
        "train_seconds",
        "skipped",
        "model",
    ] {
        assert!(!train[key].is_null(), "missing {key} in {train}");
    }
    assert_eq!(train["classes"], serde_json::json!(["cat", "non-cat"]));
    assert_eq!(train["positive"], "cat");
    assert_eq!(train["train_size"], 209);
    assert_eq!(train["test_size"], 50);
    assert_eq!(train["features"], 64 * 64 * 3);
    assert_eq!(train["layers"], serde_json::json!([12288, 20, 7, 5, 1]));
    let costs = train["costs"].as_array().unwrap();
    assert_eq!(costs.len(), 3, "recorded at 0, 100, 200");
    assert!(costs[2].as_f64().unwrap() < costs[0].as_f64().unwrap());
    assert!(model.exists());

    // evaluate applies the model's own preprocessing and gets the same test accuracy.
    let out = succeeds(
        deepcat()
            .arg("evaluate")
            .arg(&model)
            .arg(root.join("test"))
            .arg("--json"),
    );
    let eval = last_json(&out.stdout);
    assert_eq!(eval["accuracy"], train["test_accuracy"]);
    assert_eq!(eval["size"], 50);
    let confusion = eval["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);

    // predict on a folder gives one JSON line per image, consistent with evaluate.
    let out = succeeds(
        deepcat()
            .arg("predict")
            .arg(&model)
            .arg(root.join("test/cat"))
            .arg("--json"),
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 33);
    let predicted_cats = lines.iter().filter(|l| l["class"] == "cat").count() as u64;
    assert_eq!(
        predicted_cats,
        confusion[0][0].as_u64().unwrap(),
        "true cats predicted as cat"
    );
    for l in &lines {
        let p = l["probability"].as_f64().unwrap();
        assert!(
            (0.5..=1.0).contains(&p),
            "the predicted class has the higher probability: {l}"
        );
    }
}

/// Loading, `--seed`'s initial weights, the forward pass and the cost, all against one NumPy
/// computation: the `catvnoncat` training images read with Pillow, `np.random.seed(1)`, the
/// document's `initialize([12288, 20, 7, 5, 1])` and forward pass in float64 give a first cost
/// of 0.7717493284.
#[test]
fn the_first_cost_is_the_one_numpy_computes_from_the_same_seed() {
    let Some(root) = shared_data("catvnoncat") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let out = train_catvnoncat(&root, &["--seed", "1", "--iterations", "1"], &model);
    let first = last_json(&out.stdout)["costs"][0].as_f64().unwrap();
    assert!(
        (first - 0.771_749_328_4).abs() < 1e-6,
        "first cost {first}, NumPy's 0.7717493284"
    );
}

#[test]
fn bundled_demo_data_trains_with_defaults_except_length() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let out = succeeds(
        deepcat()
            .current_dir(repo())
            .args([
                "train",
                "data",
                "--size",
                "32",
                "--iterations",
                "1500",
                "--json",
                "--quiet",
                "--model",
            ])
            .arg(&model),
    );
    let v = last_json(&out.stdout);
    assert_eq!(v["classes"], serde_json::json!(["cats", "random_images"]));
    assert_eq!(v["positive"], "cats");
    assert_eq!(v["train_size"], 1348);
    assert_eq!(v["test_size"], 337);
    assert_eq!(v["skipped"], serde_json::json!([]));
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.7, "{v}");
}

#[test]
fn human_output_prints_the_documents_cost_lines_and_accuracies() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 20);
    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(dir.path())
            .args([
                "--size",
                "12",
                "--iterations",
                "120",
                "--lr",
                "0.05",
                "--model",
            ])
            .arg(dir.path().join("m.safetensors")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Cost after iteration 0:",
        "Cost after iteration 50:",
        "Cost after iteration 100:",
        "Cost after iteration 119:",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("Cost after iteration 51:"));
    assert!(
        text.contains("Train accuracy:") && text.contains("Test accuracy:"),
        "{text}"
    );
    assert!(
        text.contains("precision") && text.contains("confusion matrix"),
        "{text}"
    );
}

#[test]
fn unusable_files_are_skipped_with_reasons_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 12);
    let cats = dir.path().join("cats");
    std::fs::write(cats.join("zero.jpg"), b"").unwrap();
    std::fs::write(cats.join("notes.jpg"), b"this is a text file, not a photo").unwrap();
    std::fs::write(cats.join("Thumbs.db"), [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let good = std::fs::read(cats.join("cats_000.png")).unwrap();
    std::fs::write(cats.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend(std::iter::repeat_n(0x5A, 300));
    std::fs::write(cats.join("corrupt.jpg"), corrupt).unwrap();

    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(dir.path())
            .args([
                "--size",
                "12",
                "--iterations",
                "20",
                "--max-skipped",
                "0.5",
                "--json",
                "--quiet",
                "--model",
            ])
            .arg(dir.path().join("m.safetensors")),
    );
    let v = last_json(&out.stdout);
    let skipped = v["skipped"].as_array().unwrap();
    let names: Vec<String> = skipped
        .iter()
        .map(|s| {
            Path::new(s["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for bad in [
        "zero.jpg",
        "notes.jpg",
        "Thumbs.db",
        "truncated.png",
        "corrupt.jpg",
    ] {
        assert!(
            names.iter().any(|n| n == bad),
            "{bad} not reported in {names:?}"
        );
    }
    let used = v["train_size"].as_u64().unwrap() + v["test_size"].as_u64().unwrap();
    assert_eq!(used, 24, "every good image is used");
    let reason = |name: &str| {
        skipped
            .iter()
            .find(|s| s["path"].as_str().unwrap().ends_with(name))
            .unwrap()["reason"]
            .clone()
    };
    assert_eq!(reason("zero.jpg"), "empty file");
    assert!(
        reason("notes.jpg")
            .as_str()
            .unwrap()
            .contains("not an image")
    );
    assert!(reason("truncated.png").as_str().unwrap().contains("PNG"));
    let err = stderr_of(&out);
    assert!(
        err.contains("warning: skipped") && err.contains("notes.jpg"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

/// Runs `deepcat args...`, expects failure with a message containing `needle`, and no panic.
fn fails_with(args: &[&str], cwd: &Path, needle: &str) {
    let out = deepcat().current_dir(cwd).args(args).output().unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn unusable_setups_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(&["train", "no/such/folder"], d, "does not exist");

    std::fs::create_dir_all(d.join("one/cats")).unwrap();
    RgbImage::new(4, 4).save(d.join("one/cats/a.png")).unwrap();
    fails_with(&["train", "one"], d, "only one class folder");

    synthetic(&d.join("empty"), 3);
    std::fs::create_dir_all(d.join("empty/birds")).unwrap();
    fails_with(&["train", "empty"], d, "birds is empty");

    synthetic(&d.join("junk"), 3);
    std::fs::create_dir_all(d.join("junk/birds")).unwrap();
    std::fs::write(d.join("junk/birds/a.jpg"), b"not an image").unwrap();
    fails_with(
        &["train", "junk", "--test-split", "0.1"],
        d,
        "no usable training images",
    );

    synthetic(&d.join("ok"), 4);
    fails_with(&["train", "ok", "--test-split", "1.5"], d, "--test-split");
    fails_with(&["train", "ok", "--lr=-1"], d, "--lr");
    fails_with(&["train", "ok", "--layers", "20,x"], d, "--layers");
    fails_with(&["train", "ok", "--augment", "rotate"], d, "rotate");
    fails_with(&["train", "ok", "--positive", "birds"], d, "--positive");
    fails_with(
        &["train", "ok", "--model", "missing/dir/m.safetensors"],
        d,
        "does not exist",
    );
    fails_with(&["train", "ok", "--patience", "3"], d, "--val-split");
    fails_with(
        &["train", "ok", "--optimizer", "adam", "--exact-path", "gram"],
        d,
        "not linear",
    );
}

/// Trains a quick model on synthetic data in `d/data` and returns its path, `d/m.safetensors`.
fn small_model(d: &Path) -> PathBuf {
    synthetic(&d.join("data"), 8);
    let model = d.join("m.safetensors");
    deepcat()
        .arg("train")
        .arg(d.join("data"))
        .args(["--size", "12", "--iterations", "5", "--quiet", "--model"])
        .arg(&model)
        .assert()
        .success();
    model
}

#[test]
fn broken_model_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d);
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(d.join("cut.safetensors"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    std::fs::write(d.join("text.safetensors"), b"hello").unwrap();
    let image = d.join("data/cats/cats_000.png");
    let image = image.to_str().unwrap();
    fails_with(&["predict", "cut.safetensors", image], d, "truncated");
    fails_with(&["evaluate", "cut.safetensors", "data"], d, "truncated");
    fails_with(
        &["predict", "text.safetensors", image],
        d,
        "text.safetensors",
    );
    fails_with(
        &["predict", "nothing.safetensors", image],
        d,
        "nothing.safetensors",
    );
    // A model trained on other classes cannot evaluate this folder.
    std::fs::create_dir_all(d.join("other/birds")).unwrap();
    std::fs::copy(image, d.join("other/birds/b.png")).unwrap();
    fails_with(
        &["evaluate", "m.safetensors", "other"],
        d,
        "not one of the classes",
    );
}

#[test]
fn predict_reports_unreadable_files_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_model(d);
    std::fs::write(d.join("notes.jpg"), b"text").unwrap();
    let out = deepcat()
        .current_dir(d)
        .args([
            "predict",
            "m.safetensors",
            "data/cats/cats_001.png",
            "notes.jpg",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a named file that cannot be read is an error"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cats_001.png"));
    assert!(stderr_of(&out).contains("notes.jpg"));
}

#[test]
fn checkpoints_resume_and_plots_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic(&d.join("data"), 15);
    let out = succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--size",
        "12",
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--optimizer",
        "momentum",
        "--lr",
        "0.02",
        "--val-split",
        "0.2",
        "--checkpoint-every",
        "2",
        "--plot",
        "curves",
        "--json",
        "--quiet",
        "--model",
        "m.safetensors",
    ]));
    let v = last_json(&out.stdout);
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        6,
        "one record per epoch"
    );
    assert!(v["history"][0]["val_accuracy"].is_number());
    assert_eq!(v["epochs"], 6);
    for f in ["m.safetensors", "curves.png", "curves.svg"] {
        assert!(d.join(f).exists(), "{f}");
    }
    let png = image::open(d.join("curves.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);
    assert!(
        std::fs::read_to_string(d.join("curves.svg"))
            .unwrap()
            .contains("<svg")
    );

    let out = succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--resume",
        "m.safetensors",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--optimizer",
        "momentum",
        "--lr",
        "0.02",
        "--json",
        "--quiet",
        "--model",
        "m2.safetensors",
    ]));
    let resumed = last_json(&out.stdout);
    assert!(
        resumed["train_accuracy"].as_f64().unwrap() >= 0.9,
        "{resumed}"
    );
    fails_with(
        &["train", "data", "--resume", "m.safetensors", "--size", "16"],
        d,
        "--resume",
    );
}

#[test]
fn many_classes_get_a_softmax_and_top_k_predictions() {
    let Some(root) = shared_data("natural_images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for class in ["airplane", "car", "flower"] {
        std::fs::create_dir_all(d.join("data").join(class)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(40) {
            std::fs::copy(f, d.join("data").join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = succeeds(deepcat().current_dir(d).args([
        "train",
        "data",
        "--size",
        "16",
        "--layers",
        "32",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--batch-size",
        "16",
        "--epochs",
        "15",
        "--augment",
        "flip",
        "--errors",
        "3",
        "--json",
        "--quiet",
        "--model",
        "m.safetensors",
    ]));
    let v = last_json(&out.stdout);
    assert_eq!(v["layers"], serde_json::json!([768, 32, 3]));
    assert!(v["positive"].is_null());
    assert_eq!(v["exact_path"], "direct");
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.5, "{v}");
    let per_class = v["test_metrics"]["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 3);
    assert!(v["test_metrics"]["roc_auc"].is_null());
    assert!(v["errors"].as_array().unwrap().len() <= 3);

    let out = succeeds(deepcat().current_dir(d).args([
        "predict",
        "m.safetensors",
        "data/car",
        "--json",
        "--top",
        "2",
    ]));
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["top"].as_array().unwrap().len(), 2);
    let sum: f64 = first["probabilities"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-4);
}

#[test]
fn predict_stops_quietly_when_its_reader_goes_away() {
    // `deepcat predict MODEL data | head -1`: the pipe closes after one line, with about 100 KB
    // of results still to print. Writing then fails with a broken pipe, which must end the
    // run quietly (no panic message), not crash it.
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Std, Stdio};
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("deepcat"))
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .arg("predict")
        .arg(repo().join("tests/fixtures/v1.safetensors"))
        .arg(repo().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deepcat predict");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("read the first line");
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().expect("deepcat predict ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.contains("data/"), "first line: {first}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        out.status.success(),
        "status {:?}, stderr: {stderr}",
        out.status
    );
}

#[test]
fn evaluate_in_chunks_under_a_memory_limit_gives_the_same_report() {
    // The bundled photos (83 MB of bytes at 128 px) under a 10 MiB limit: about fifty chunks,
    // decoded and classified one after another; the report must not change.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    deepcat()
        .args(["train", "data", "--iterations", "20", "--quiet", "--model"])
        .arg(&model)
        .assert()
        .success();
    let report = |extra: &[&str]| {
        let out = deepcat()
            .arg("evaluate")
            .arg(&model)
            .args(["data", "--json", "--errors", "5", "--no-cache"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let whole = report(&[]);
    let chunked = report(&["--memory-limit", "10MiB"]);
    assert_eq!(whole["size"], 1685);
    assert_eq!(whole, chunked);
    // A limit below one image is a usage error, not a run that loads nothing.
    deepcat()
        .arg("evaluate")
        .arg(&model)
        .args(["data", "--memory-limit", "1KiB"])
        .assert()
        .code(2);
}
