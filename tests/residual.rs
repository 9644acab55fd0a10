//! Residual networks end to end: the real `deepcat` binary trains a tiny ResNet on the bundled
//! photos, saves a version-3 model with hierarchical parameter names, and `summary`,
//! `predict`, `evaluate`, `report`, `serve` and `--resume` use it (`--tta none` turns its
//! test-time flips off); the same run gives the same bytes for any `--threads`, from decoded,
//! cached or streamed images, and through the library's `flow::run`; the resnet recipe (AdamW, one cycle, label smoothing, test-time flips,
//! bilinear resizing) is what a residual architecture brings.

mod common;

use common::deepcat;

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The bundled demo photos (cats and random images, 30×30 JPEGs).
fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

const ARCH: &str = "conv8 bn relu pool res8 res(conv16s2 bn relu conv16 bn | conv16k1s2 bn) gap";

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("deepcat runs");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn last_json(output: &[u8]) -> Value {
    let text = String::from_utf8_lossy(output);
    serde_json::from_str(text.lines().last().expect("output")).expect("JSON")
}

/// Trains the tiny ResNet for one epoch into `model` with `threads` threads.
fn train(model: &Path, threads: usize, extra: &[&str]) -> Value {
    let out = run_ok(
        deepcat()
            .arg("train")
            .arg(data())
            .args([
                "--size", "16", "--arch", ARCH, "--epochs", "1", "--json", "--quiet",
            ])
            .args(["--threads", &threads.to_string()])
            .arg("--model")
            .arg(model)
            .args(extra),
    );
    last_json(&out.stdout)
}

/// The safetensors header's metadata.
fn metadata(model: &Path) -> serde_json::Map<String, Value> {
    let bytes = std::fs::read(model).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut meta = header["__metadata__"].as_object().unwrap().clone();
    let names: Vec<Value> = header
        .as_object()
        .unwrap()
        .keys()
        .map(|k| Value::from(k.clone()))
        .collect();
    meta.insert("tensor_names".into(), Value::from(names));
    meta
}

#[test]
fn a_residual_model_trains_saves_as_version_3_and_is_used_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("res.safetensors");
    let report = train(&model, 2, &[]);
    assert_eq!(report["recipe"], "resnet");
    assert_eq!(report["tta"], true);
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.0);

    let meta = metadata(&model);
    assert_eq!(meta["format_version"], "3");
    assert_eq!(meta["tta"], "flip");
    assert_eq!(meta["resize"], "bilinear");
    let layers: Value = serde_json::from_str(meta["layers"].as_str().unwrap()).unwrap();
    assert_eq!(layers[4]["kind"], "residual");
    assert_eq!(layers[5]["shortcut"][0]["kind"], "conv");
    let names = meta["tensor_names"].to_string();
    for name in [
        "residual1.conv2.weight",
        "residual1.batchnorm2.running_var",
        "residual2.shortcut.conv1.weight",
        "residual2.shortcut.batchnorm1.bias",
        "optimizer.m.residual2.conv1.weight",
    ] {
        assert!(names.contains(name), "{name} not in {names}");
    }

    let summary = run_ok(deepcat().arg("summary").arg(&model));
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains("residual2") && text.contains("res8"),
        "{text}"
    );
    assert!(text.contains("  shortcut.conv1"), "{text}");

    let cat = data().join("cats/cat_0000.jpg");
    let out = run_ok(deepcat().arg("predict").arg(&model).arg(&cat).arg("--json"));
    let p = last_json(&out.stdout);
    assert!(p["probability"].as_f64().unwrap() >= 0.5);

    let out = run_ok(
        deepcat()
            .arg("evaluate")
            .arg(&model)
            .arg(data())
            .arg("--json"),
    );
    let e = last_json(&out.stdout);
    assert!(e["accuracy"].as_f64().is_some(), "{e}");

    // The model records test-time flips; --tta none turns them off for one command.
    let flipped = p["probability"].as_f64().unwrap();
    let out = run_ok(
        deepcat()
            .arg("predict")
            .arg(&model)
            .arg(&cat)
            .args(["--json", "--tta", "none"]),
    );
    let plain = last_json(&out.stdout)["probability"].as_f64().unwrap();
    assert!(
        (plain - flipped).abs() > 1e-7,
        "--tta none gave the flipped answer {flipped}"
    );

    // The report evaluates it on a folder.
    let page = dir.path().join("report.html");
    run_ok(
        deepcat()
            .arg("report")
            .arg(&model)
            .arg(data())
            .arg("--out")
            .arg(&page),
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("id=\"confusion\"") && html.contains("resnet"),
        "{html:.400}"
    );

    // The server answers as predict does, flips included, and without them under --tta none.
    let image = std::fs::read(&cat).unwrap();
    let served = serve_once(&model, &[], &image);
    let got = served["probability"].as_f64().unwrap();
    assert!(
        (got - flipped).abs() < 1e-5,
        "served {got}, predicted {flipped}"
    );
    let served = serve_once(&model, &["--tta", "none"], &image);
    let got = served["probability"].as_f64().unwrap();
    assert!(
        (got - plain).abs() < 1e-5,
        "served {got} under --tta none, predicted {plain}"
    );

    // Resuming continues from the saved weights and AdamW state.
    let resumed = dir.path().join("resumed.safetensors");
    let r = train(
        &resumed,
        2,
        &["--resume", model.to_str().unwrap(), "--seed", "1"],
    );
    assert_eq!(r["recipe"], "resnet");
}

/// Starts `deepcat serve MODEL FLAGS` on a free port, posts `image` to `/api/predict`, stops the
/// server and returns its JSON answer.
fn serve_once(model: &Path, flags: &[&str], image: &[u8]) -> Value {
    use std::io::{Read, Write};
    let (mut child, port) = common::spawn_server(model, flags);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        s,
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        image.len()
    )
    .unwrap();
    s.write_all(image).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn a_residual_run_gives_the_same_model_bytes_in_memory_cached_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let runs: [(&str, Vec<&str>); 4] = [
        ("decoded", vec!["--no-cache"]),
        ("cache-filled", vec!["--cache", cache]),
        ("cache-read", vec!["--cache", cache]),
        (
            "streamed",
            vec!["--cache", cache, "--memory-limit", "200KiB"],
        ),
    ];
    let mut bytes = Vec::new();
    for (name, flags) in &runs {
        let model = dir.path().join(format!("{name}.safetensors"));
        let report = train(&model, 2, flags);
        assert_eq!(report["streamed"], *name == "streamed", "{name}: {report}");
        bytes.push((name, std::fs::read(&model).unwrap()));
    }
    for (name, b) in &bytes[1..] {
        assert!(
            *b == bytes[0].1,
            "the residual model trained {name} differs from the one trained on decoded images"
        );
    }
}

#[test]
fn the_library_flow_writes_the_same_model_as_the_command_line() {
    use deepcat::data::{Preprocess, SplitSpec};
    use deepcat::flow::{Job, Outputs};
    use deepcat::train::{Length, Recipe};
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("cli.safetensors");
    train(&cli, 2, &["--no-cache"]);

    let body = deepcat::nn::spec::parse_body(ARCH).unwrap();
    let recipe = Recipe::for_body(&body);
    let mut config = recipe.config(body);
    config.length = Length::Epochs(1);
    let lib = dir.path().join("lib.safetensors");
    let job = Job {
        split: SplitSpec {
            data_dir: data(),
            test_dir: None,
            test_split: 0.2,
            val_split: 0.0,
            preprocess: Preprocess {
                size: 16,
                filter: recipe.resize,
                ..Preprocess::default()
            },
            seed: deepcat::train::DEFAULT_SEED,
            max_skipped: deepcat::data::DEFAULT_MAX_SKIPPED,
            cache: None,
        },
        config,
        recipe: recipe.name.into(),
        positive: None,
        resume: None,
        memory_limit: None,
        outputs: Outputs {
            model: lib.clone(),
            plot: None,
            report: None,
            checkpoint_every: None,
        },
        errors: 0,
    };
    let outcome = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| deepcat::flow::run(job, &mut [], &mut ()))
        .unwrap();
    assert!(outcome.saved && outcome.scores.is_some());
    assert!(
        std::fs::read(&cli).unwrap() == std::fs::read(&lib).unwrap(),
        "deepcat::flow::run and deepcat train wrote different models"
    );
}

#[test]
fn a_residual_run_gives_the_same_model_bytes_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (
        dir.path().join("t1.safetensors"),
        dir.path().join("t2.safetensors"),
    );
    train(&one, 1, &[]);
    train(&two, 2, &[]);
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
        "a residual model trained on 1 and 2 threads differs"
    );
}

#[test]
fn a_block_whose_branches_disagree_is_refused_before_any_image_is_read() {
    let out = deepcat()
        .arg("train")
        .arg("/nonexistent-folder")
        .args(["--size", "16", "--arch", "conv8 res16"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("res16") && err.contains("identity shortcut") && err.contains("16×16×8"),
        "{err}"
    );
}
