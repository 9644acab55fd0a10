//! Data larger than memory (issue 11): training with `--memory-limit` streams the images from
//! the decoded cache and gives the same model bytes as holding them in memory; prediction on a
//! folder larger than memory stays bounded and prints as it goes.
//!
//! The bundled photos (data/) at 32 px are 5 MB of bytes: a 1 MiB limit makes every run
//! stream, in blocks of 128 rows.

mod common;

use common::{deepcat, stderr_of};

use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// `deepcat train data` at 32 px with `flags`, saving to `model`: its JSON report.
fn train(flags: &[&str], model: &Path) -> Value {
    let out = deepcat()
        .arg("train")
        .arg(data())
        .args(["--size", "32", "--json", "--quiet", "--model"])
        .arg(model)
        .args(flags)
        .output()
        .unwrap();
    assert!(out.status.success(), "{flags:?}: {}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a report")).expect("JSON")
}

/// Trains with `flags` in memory and streamed (also with `more` streamed flags) and checks
/// that every run saved the same bytes.
fn same_bytes_streamed(flags: &[&str], more: &[&[&str]]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let held = dir.path().join("held.safetensors");
    let report = train(flags, &held);
    assert_eq!(report["streamed"], false, "{report}");
    let mut variants: Vec<Vec<&str>> = vec![vec!["--memory-limit", "1MiB"]];
    variants.extend(more.iter().map(|m| {
        let mut v = vec!["--memory-limit", "1MiB"];
        v.extend_from_slice(m);
        v
    }));
    for extra in variants {
        let streamed = dir.path().join("streamed.safetensors");
        let all: Vec<&str> = flags.iter().chain(&extra).copied().collect();
        let s = train(&all, &streamed);
        assert_eq!(s["streamed"], true, "{extra:?}: {s}");
        for key in [
            "train_accuracy",
            "val_accuracy",
            "test_accuracy",
            "exact_path",
            "history",
        ] {
            assert_eq!(s[key], report[key], "{extra:?}: {key}");
        }
        assert!(
            std::fs::read(&held).unwrap() == std::fs::read(&streamed).unwrap(),
            "{flags:?} {extra:?}: the streamed model's bytes differ"
        );
    }
    report
}

#[test]
fn streamed_mini_batches_give_the_same_model_bytes() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let report = same_bytes_streamed(
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--batch-size",
            "64",
            "--epochs",
            "3",
            "--val-split",
            "0.1",
            "--augment",
            "flip,crop",
        ],
        // A cold cache of its own (filled while streaming), then warm, and no cache at all
        // (an unnamed temporary pack).
        &[
            &["--cache", cache_dir],
            &["--cache", cache_dir],
            &["--no-cache"],
        ],
    );
    // It learned something (three epochs at 32 px).
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.55, "{report}");
}

#[test]
fn streamed_full_batch_takes_the_exact_gram_path_with_the_same_bytes() {
    let report = same_bytes_streamed(
        &[
            "--iterations",
            "150",
            "--val-split",
            "0.1",
            "--exact-path",
            "gram",
        ],
        &[],
    );
    assert_eq!(report["exact_path"], "gram");
}

#[test]
fn a_streamed_cnn_gives_the_same_model_bytes() {
    same_bytes_streamed(
        &[
            "--arch",
            "block8 gap",
            "--batch-size",
            "32",
            "--epochs",
            "1",
        ],
        &[],
    );
}

#[test]
fn streamed_full_batch_without_the_gram_path_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = deepcat()
        .arg("train")
        .arg(data())
        .args(["--size", "32", "--optimizer", "adam", "--iterations", "5"])
        .args(["--memory-limit", "1MiB", "--model"])
        .arg(dir.path().join("m.safetensors"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("streamed") && err.contains("--batch-size") && err.contains("adam"),
        "{err}"
    );
    assert!(!dir.path().join("m.safetensors").exists());
}

/// The `VmHWM` (peak resident memory) of process `pid`, in bytes.
fn peak_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn predict_on_a_folder_larger_than_memory_prints_as_it_goes_in_bounded_memory() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipping: reads /proc");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    // The model reads 128 px images (49152 bytes each).
    let out = deepcat()
        .arg("train")
        .arg(data())
        .args(["--iterations", "2", "--quiet", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Six links to every bundled photo: 10110 images, 497 MB decoded (the peak stays near
    // 120 MB whatever the folder's size: 256 images at a time, and the allocator's reserve).
    let folder = dir.path().join("many");
    let mut images = 0;
    for copy in 0..6 {
        for class in ["cats", "random_images"] {
            let into = folder.join(format!("{class}-{copy}"));
            std::fs::create_dir_all(&into).unwrap();
            for f in std::fs::read_dir(data().join(class)).unwrap().flatten() {
                std::os::unix::fs::symlink(f.path(), into.join(f.file_name())).unwrap();
                images += 1;
            }
        }
    }
    let decoded = images as u64 * 49152;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deepcat"))
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .args(["--threads", "2", "predict"])
        .arg(&model)
        .arg(&folder)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..images - 2000 {
        let line = lines.next().expect("a line per image").unwrap();
        assert!(line.contains(": "), "{line}");
    }
    // Stop reading: predict fills the pipe and waits, still running, with four fifths of the
    // images classified and printed.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "predict finished without its last lines being read: it does not print as it goes"
    );
    let peak = peak_of(child.id());
    assert_eq!(lines.count(), 2000, "one line per image");
    assert!(child.wait().unwrap().success());
    assert!(
        peak < decoded / 3,
        "peak {peak} bytes while classifying {decoded} bytes of images"
    );
}
