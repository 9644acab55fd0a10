//! The guarantees: divergence stops at once and saves nothing bad; saving is atomic even when
//! the process is killed mid-save; Ctrl-C stops cleanly; same seed, same model and JSON.

use super::{deepcat, fails_with, stderr_of, succeeds, synthetic};
use deepcat::model_file;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A training run on `root` saving to `model`, as a child process we can signal.
fn spawn_train(root: &Path, model: &Path, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("deepcat"))
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .arg("train")
        .arg(root)
        .args(["--quiet", "--model"])
        .arg(model)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deepcat")
}

/// Waits until `path` exists (or fails the test after a minute).
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn a_diverging_run_stops_at_once_and_never_saves_nan_weights() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 8);
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, b"the user's previous model").unwrap();
    // One wide hidden layer: after the first giant step some of its units are hugely active
    // and the next logits overflow. (With 20,7,5 every unit of a narrow layer can die instead,
    // leaving logits that are enormous but finite, which is not what this test is about.)
    let run = |extra: &[&str]| {
        let err = fails_with(
            deepcat()
                .arg("train")
                .arg(&root)
                .args(["--size", "8", "--layers", "32", "--lr", "1e30"])
                .args(["--iterations", "100"])
                .args(["--quiet", "--model"])
                .arg(&model)
                .args(extra),
            1,
            &["training diverged at iteration 2", "smaller learning rate"],
        );
        assert!(err.contains("--lr 1e29"), "{err}");
    };
    run(&[]);
    assert!(
        std::fs::read(&model).unwrap() == b"the user's previous model",
        "nothing is saved over the user's file"
    );
    // Checkpoints go to --model: the one after step 1 (huge but finite weights) is the last
    // good one and stays; step 2's NaN weights are never written.
    run(&["--checkpoint-every", "1"]);
    let kept = model_file::load(&model).expect("the last good checkpoint loads");
    assert!(kept.model.network.is_finite());
    assert_eq!(kept.training.unwrap()["checkpoint_after_steps"], 1);
}

#[test]
fn killing_the_process_mid_save_leaves_a_complete_model_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 8);
    let model = dir.path().join("m.safetensors");
    // A bigger first layer makes each save take a while (about 0.4 MB, synced to disk), so
    // kills land inside saves as well as between them.
    let extra = [
        "--size",
        "32",
        "--layers",
        "32",
        "--iterations",
        "1000000",
        "--checkpoint-every",
        "1",
    ];
    // 60 kills at 0–46 ms after the first save, in an order that differs from run to run.
    let offset = u64::from(std::process::id());
    let delays: Vec<u64> = (0..60u64).map(|i| (i * 7 + offset) % 47).collect();
    let mut generations = std::collections::HashSet::new();
    for &delay in &delays {
        let mut child = spawn_train(&root, &model, &extra);
        wait_for(&model);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let loaded = model_file::load(&model)
            .unwrap_or_else(|e| panic!("after a kill {delay} ms in, the model is broken: {e}"));
        let step = loaded
            .training
            .as_ref()
            .map(|t| t["checkpoint_after_steps"].clone());
        generations.insert(format!("{step:?}"));
    }
    assert!(
        generations.len() > 1,
        "the kills hit different saves: {generations:?}"
    );
    // Temporary files of interrupted saves are hidden and never mistaken for the model; each
    // one left behind is a kill that landed inside a save.
    let mut inside_a_save = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with(".deepcat-") {
            inside_a_save += 1;
        } else {
            assert!(name == "data" || name == "m.safetensors", "{name}");
        }
    }
    eprintln!(
        "{inside_a_save} of {} kills landed inside a save",
        delays.len()
    );
    assert!(
        inside_a_save > 0,
        "no kill landed inside a save: the test proved nothing"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_cleanly_and_keeps_the_progress_when_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 8);
    let model = dir.path().join("m.safetensors");
    let long = [
        "--size",
        "8",
        "--iterations",
        "100000000",
        "--checkpoint-every",
        "1000",
    ];
    let child = spawn_train(&root, &model, &long);
    wait_for(&model);
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("Interrupted after") && err.contains("--resume"),
        "{err}"
    );
    let saved = model_file::load(&model).expect("a usable model");
    let steps = saved.training.unwrap()["interrupted_after_steps"]
        .as_u64()
        .unwrap();
    assert!(steps >= 1000, "{steps}");
    assert!(
        saved.optimizer.is_some(),
        "optimiser state is kept for --resume"
    );
    // It resumes.
    succeeds(
        deepcat()
            .arg("train")
            .arg(&root)
            .args(["--iterations", "5", "--quiet"])
            .arg("--resume")
            .arg(&model)
            .arg("--model")
            .arg(dir.path().join("resumed.safetensors")),
    );

    // Without checkpointing nothing is written, and the user's file is untouched.
    let other = dir.path().join("other.safetensors");
    std::fs::write(&other, b"keep me").unwrap();
    let child = spawn_train(&root, &other, &["--size", "8", "--iterations", "100000000"]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("no model saved"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
}

/// The JSON of a run without its timings, which are the only fields allowed to differ.
fn without_timings(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let mut json: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for key in ["load_seconds", "train_seconds", "peak_memory_bytes"] {
        json.as_object_mut().unwrap().remove(key);
    }
    json
}

#[test]
fn same_data_flags_and_seed_give_a_bit_identical_model_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 20);
    let flag_sets: [&[&str]; 2] = [
        &["--iterations", "60"],
        &[
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--dropout",
            "0.2",
            "--augment",
            "flip,crop,jitter",
            "--val-split",
            "0.2",
        ],
    ];
    for flags in flag_sets {
        let run = |name: &str, threads: &str| {
            let model = dir.path().join(name);
            let out = succeeds(
                deepcat()
                    .args(["--threads", threads, "train"])
                    .arg(&root)
                    .args(["--size", "12", "--layers", "6,3", "--seed", "7", "--json"])
                    .args(["--quiet", "--model"])
                    .arg(&model)
                    .args(flags),
            );
            let mut json = without_timings(&out.stdout);
            json.as_object_mut().unwrap().remove("model");
            (std::fs::read(&model).unwrap(), json)
        };
        let (a, json_a) = run("a.safetensors", "2");
        let (b, json_b) = run("b.safetensors", "2");
        let (c, json_c) = run("c.safetensors", "1");
        assert!(a == b, "{flags:?}: same seed, different model bytes");
        assert_eq!(json_a, json_b, "{flags:?}");
        assert!(a == c, "{flags:?}: one thread or two, the same model");
        assert_eq!(json_a, json_c, "{flags:?}");
    }
}
