//! Arguments out of range or contradicting each other: exit code 2 with the flag named, before
//! any image is read or memory allocated.

use super::{deepcat, deepcat_unprivileged, fails_with, succeeds, synthetic};
use std::path::Path;

/// A quick `train` on `root` with `extra` flags, which replace the quick defaults they name.
fn train(root: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = deepcat();
    cmd.arg("train").arg(root);
    for (flag, value) in [("--size", "8"), ("--layers", "4"), ("--iterations", "5")] {
        if !extra.iter().any(|e| e.split('=').next() == Some(flag)) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(["--quiet", "--model"])
        .arg(root.with_extension("safetensors"))
        .args(extra);
    cmd
}

#[test]
fn bad_learning_rates_layers_and_splits_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 6);
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "0"], "--lr must be a positive number"),
        (&["--lr=-0.01"], "--lr must be a positive number"),
        (&["--lr", "NaN"], "--lr must be a positive number"),
        (&["--lr", "inf"], "--lr must be a positive number"),
        (&["--layers", ""], "--layers is empty"),
        (&["--layers", "20,,5"], "--layers"),
        (&["--layers", "20,0,5"], "at least one unit"),
        (&["--layers=-3"], "--layers"),
        (
            &["--test-split", "0"],
            "--test-split must be above 0 and below 1",
        ),
        (
            &["--test-split", "1"],
            "--test-split must be above 0 and below 1",
        ),
        (&["--test-split=-0.2"], "--test-split"),
        (&["--test-split", "NaN"], "--test-split"),
        (&["--val-split", "1"], "--val-split"),
        (&["--iterations", "0"], "--iterations must be at least 1"),
        (&["--batch-size", "0"], "--batch-size must be at least 1"),
        (&["--dropout", "1"], "--dropout"),
        (&["--l2=-1"], "--l2"),
        (&["--size", "0"], "--size must be between 1 and 4096"),
        (&["--size", "5000"], "--size must be between 1 and 4096"),
        (&["--threads", "0"], "--threads"),
    ];
    for (args, needle) in cases {
        fails_with(&mut train(&root, args), 2, &[needle]);
    }
    // clap's own parse errors share the code.
    fails_with(&mut train(&root, &["--optimizer", "sgd9"]), 2, &["sgd9"]);
    fails_with(&mut train(&root, &["--iterations", "-1"]), 2, &["-1"]);
    assert!(!root.with_extension("safetensors").exists());
}

#[test]
fn a_batch_larger_than_the_training_set_uses_all_of_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 6);
    let out = succeeds(&mut train(&root, &["--batch-size", "1000"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--batch-size 1000 is more than the 9 training images"),
        "{err}"
    );
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[test]
fn an_image_size_needing_more_memory_than_the_machine_has_is_refused_before_loading() {
    let Some(available) = available_memory() else {
        eprintln!("skipping: /proc/meminfo is not there to say how much memory is available");
        return;
    };
    // Each 4096² RGB image takes 50 MB as bytes: make enough tiny files to need more than all
    // the memory, and more than the free disk where the cache would stream them from.
    let per_image = 4096u64 * 4096 * 3;
    let dir = tempfile::tempdir().unwrap();
    let Some(free) = free_disk(dir.path()) else {
        eprintln!("skipping: df does not say how much disk is free");
        return;
    };
    let per_class = (available.max(free) / per_image / 2 + 2) as usize;
    let root = dir.path().join("data");
    synthetic(&root, per_class);
    fails_with(
        &mut train(&root, &["--size", "4096"]),
        2,
        &["GiB", "memory budget", "free in", "use a smaller --size"],
    );
}

/// Free bytes on the disk of `path`, as `df` tells.
fn free_disk(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

#[cfg(unix)]
#[test]
fn a_model_folder_that_cannot_be_written_is_refused_before_training() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 6);
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let model = locked.join("m.safetensors");
    let args: Vec<std::ffi::OsString> = vec![
        "train".into(),
        root.clone().into(),
        "--size".into(),
        "8".into(),
        "--model".into(),
        model.into(),
    ];
    let mut cmd = deepcat_unprivileged(&args, &[dir.path()]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // A runtime failure (1), found before training rather than when saving after it.
    fails_with(
        &mut cmd,
        1,
        &["--model", "cannot write in folder", "locked"],
    );
}

#[test]
fn device_cuda_without_the_feature_or_a_gpu_is_a_usage_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 6);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = fixtures.join("v1.safetensors");
    let image = fixtures.join("cat.png");
    fails_with(
        &mut train(&root, &["--device", "tpu"]),
        2,
        &["unknown device \"tpu\""],
    );
    fails_with(
        &mut train(&root, &["--tf32"]),
        2,
        &["--tf32", "needs --device cuda"],
    );
    // A build with the feature on a machine with a GPU predicts; every other combination
    // (no feature, no driver, no GPU) says why, with exit status 2, before reading an image.
    let out = deepcat()
        .args(["predict", "--device", "cuda"])
        .arg(&model)
        .arg(&image)
        .output()
        .unwrap();
    if out.status.success() {
        let cpu = succeeds(deepcat().arg("predict").arg(&model).arg(&image));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).split(" (").next(),
            String::from_utf8_lossy(&cpu.stdout).split(" (").next(),
            "the GPU and the CPU predict different classes"
        );
        return;
    }
    let built = cfg!(feature = "cuda");
    let needle = if built {
        "--device cuda: "
    } else {
        "--features cuda"
    };
    for cmd in [
        train(&root, &["--device", "cuda"]),
        {
            let mut c = deepcat();
            c.args(["predict", "--device", "cuda"])
                .arg(&model)
                .arg(&image);
            c
        },
        {
            let mut c = deepcat();
            c.args(["evaluate", "--device", "cuda"])
                .arg(&model)
                .arg(&root);
            c
        },
    ]
    .iter_mut()
    {
        fails_with(cmd, 2, &[needle, "--device cpu"]);
    }
}
