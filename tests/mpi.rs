//! Data-parallel training under `mpirun` (built with `--features mpi`): the same result as one
//! process, the same bytes on a repeat, ragged batches, faults that end every process, a
//! checkpoint resumed under another process count, and `predict`/`evaluate` printing what one
//! process prints. Runs on the bundled photos, at 16 px so each run takes seconds.
//!
//! Without `mpirun` on the machine these tests are skipped with a message, unless
//! DEEPCAT_REQUIRE_MPI is set (CI sets it), when they fail. Without the feature, only the test
//! that a binary built without it refuses to run under `mpirun` is compiled.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deepcat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepcat"));
    cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"));
    cmd
}

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_binary_without_mpi_refuses_to_run_under_mpirun() {
    // What Open MPI's mpirun tells each process it starts.
    let out = deepcat()
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "0")
        .arg("train")
        .arg(bundled())
        .args(["--size", "8", "--iterations", "1", "--model"])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("never.safetensors"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built without MPI") && err.contains("--features mpi"),
        "{err}"
    );
}

#[cfg(feature = "mpi")]
mod under_mpirun {
    use super::*;
    use deepcat::model_file;
    use std::process::Output;
    use std::time::{Duration, Instant};

    /// Whether `mpirun` is here; when it is not, a skip (or a failure under
    /// DEEPCAT_REQUIRE_MPI).
    fn have_mpirun() -> bool {
        let found = Command::new("mpirun").arg("--version").output().is_ok();
        if !found {
            assert!(
                std::env::var_os("DEEPCAT_REQUIRE_MPI").is_none(),
                "mpirun not found, and DEEPCAT_REQUIRE_MPI is set"
            );
            eprintln!("skipped: mpirun not found (install Open MPI: openmpi-bin)");
        }
        found
    }

    /// `mpirun -n N deepcat ARGS`, one thread per process, allowed to run as root (CI) and
    /// on more processes than cores.
    fn mpirun(n: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new("mpirun");
        cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .args(["--oversubscribe", "--bind-to", "none", "-n", &n.to_string()])
            .arg(env!("CARGO_BIN_EXE_deepcat"))
            .args(["--threads", "1"])
            .args(args);
        cmd
    }

    fn run_ok(mut cmd: Command) -> Output {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mpi");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A short run's flags, with `extra` (which say how long it is).
    fn train_args(model: &Path, arch: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            &bundled().to_string_lossy(),
            "--size",
            "16",
            "--arch",
            arch,
            "--layers",
            "none",
            "--record-every",
            "1",
            "--seed",
            "3",
            "--quiet",
            "--model",
            &model.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    /// The largest difference between the two models' parameters, relative to the largest
    /// magnitude of each tensor, and between their recorded costs.
    fn largest_difference(a: &Path, b: &Path, free: &[&str]) -> f64 {
        let (a, b) = (model_file::load(a).unwrap(), model_file::load(b).unwrap());
        let mut worst = 0.0f64;
        let (pa, pb) = (
            a.model.network.named_params(),
            b.model.network.named_params(),
        );
        assert_eq!(pa.len(), pb.len());
        for ((name, x), (_, y)) in pa.iter().zip(&pb) {
            if free.contains(&name.as_str()) {
                continue;
            }
            let scale = x.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (u, v) in x.iter().zip(y.iter()) {
                let d = f64::from((u - v).abs() / scale);
                assert!(d.is_finite(), "{name}");
                worst = worst.max(d);
            }
        }
        let costs = |f: &model_file::ModelFile| -> Vec<f64> {
            f.training.as_ref().unwrap()["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["cost"].as_f64().unwrap())
                .collect()
        };
        let (ca, cb) = (costs(&a), costs(&b));
        assert_eq!(ca.len(), 50, "one record per step");
        for (u, v) in ca.iter().zip(&cb) {
            worst = worst.max((u - v).abs() / u.abs().max(1e-3));
        }
        worst
    }

    /// N processes and one, on the same global batch, end within 1e-5 after 50 steps (no
    /// augmentation, no dropout: one process and several draw nothing differently). `free`
    /// names the conv biases just before a batch norm: their gradient is zero up to rounding,
    /// so they drift with rounding and the network's outputs do not depend on them.
    fn matches_one_process(name: &str, n: usize, arch: &str, extra: &[&str], free: &[&str]) {
        let one = tmp(&format!("{name}-one.safetensors"));
        let many = tmp(&format!("{name}-{n}.safetensors"));
        let mut extra = extra.to_vec();
        extra.extend(["--augment", "none", "--iterations", "50"]);
        run_ok({
            let mut c = deepcat();
            c.args(strs(&train_args(&one, arch, &extra)));
            c
        });
        run_ok(mpirun(n, &strs(&train_args(&many, arch, &extra))));
        let worst = largest_difference(&one, &many, free);
        assert!(worst < 1e-5, "{n} processes differ from one by {worst:e}");
    }

    #[test]
    fn two_processes_train_what_one_does_without_batch_norm() {
        if have_mpirun() {
            matches_one_process(
                "plain",
                2,
                "conv8 relu pool conv8 relu gap",
                &["--batch-size", "32", "--optimizer", "adam"],
                &[],
            );
        }
    }

    // With batch norm, momentum rather than Adam: a conv bias just before batch norm has a
    // gradient of zero up to rounding, which Adam divides by its own size and so turns into
    // full-size steps in a direction rounding decides; momentum keeps it at rounding's size.
    // The network's outputs do not depend on those biases either way.
    #[test]
    fn two_processes_with_sync_bn_train_what_one_does_with_batch_norm() {
        if have_mpirun() {
            matches_one_process(
                "syncbn",
                2,
                "conv8 bn relu pool res8 gap",
                &["--batch-size", "32", "--optimizer", "momentum", "--sync-bn"],
                &["conv1.bias", "residual1.conv1.bias", "residual1.conv2.bias"],
            );
        }
    }

    #[test]
    fn streamed_from_the_shared_pack_two_processes_train_what_one_does() {
        // 1685 photos of 768 bytes do not fit in 256 KiB: every run streams them from the
        // decoded cache's pack, each process reading only its part of each batch.
        if have_mpirun() {
            matches_one_process(
                "streamed",
                2,
                "conv8 relu pool gap",
                &[
                    "--batch-size",
                    "24",
                    "--memory-limit",
                    "256KiB",
                    "--optimizer",
                    "adam",
                ],
                &[],
            );
        }
    }

    #[test]
    fn three_processes_share_ragged_batches() {
        // 1685 photos, 80% for training: 1348, so 32-image batches end with a batch of 4;
        // 3 processes take 11/11/10 of each full batch and 2/1/1 of the last.
        if have_mpirun() {
            matches_one_process(
                "ragged",
                3,
                "conv8 bn relu pool gap",
                &["--batch-size", "32", "--optimizer", "momentum", "--sync-bn"],
                &["conv1.bias"],
            );
        }
    }

    #[test]
    fn a_repeat_gives_the_same_bytes() {
        if !have_mpirun() {
            return;
        }
        let (a, b) = (tmp("repeat-a.safetensors"), tmp("repeat-b.safetensors"));
        // Per-process batch norm, dropout and augmentation: what a real run has.
        let extra = [
            "--batch-size",
            "32",
            "--augment",
            "flip",
            "--iterations",
            "50",
        ];
        for m in [&a, &b] {
            run_ok(mpirun(
                2,
                &strs(&train_args(m, "conv8 bn relu pool gap dropout0.2", &extra)),
            ));
        }
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn the_gram_path_is_refused_with_the_way_out() {
        if !have_mpirun() {
            return;
        }
        let model = tmp("gram.safetensors");
        let out = mpirun(
            2,
            &[
                "train",
                &bundled().to_string_lossy(),
                "--size",
                "8",
                "--iterations",
                "2",
                "--exact-path",
                "gram",
                "--model",
                &model.to_string_lossy(),
            ],
        )
        .output()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--exact-path gram cannot be shared"), "{err}");
        assert!(!model.exists());
    }

    #[test]
    fn processes_given_different_data_are_refused() {
        if !have_mpirun() {
            return;
        }
        // A copy of the bundled photos with one file fewer, for the second process.
        let other = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mpi-other-data");
        let _ = std::fs::remove_dir_all(&other);
        for class in ["cats", "random_images"] {
            std::fs::create_dir_all(other.join(class)).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(bundled().join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().skip(usize::from(class == "cats")) {
                std::fs::copy(f, other.join(class).join(f.file_name().unwrap())).unwrap();
            }
        }
        let model = tmp("differ.safetensors");
        let m = model.to_string_lossy().to_string();
        let flags = [
            "--size",
            "8",
            "--iterations",
            "2",
            "--batch-size",
            "8",
            "--model",
            &m,
        ];
        let mut cmd = mpirun(1, &["train", &bundled().to_string_lossy()]);
        cmd.args(flags)
            .args([":", "-n", "1", env!("CARGO_BIN_EXE_deepcat"), "train"])
            .arg(&other)
            .args(flags);
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not given the same job"), "{err}");
        assert!(err.contains("the data"), "{err}");
        assert!(!model.exists(), "no model is written");
    }

    #[test]
    fn a_process_that_fails_ends_them_all_naming_itself() {
        if !have_mpirun() {
            return;
        }
        // Process 0 cannot write its model there; the other would train on alone.
        let out = mpirun(
            2,
            &[
                "train",
                &bundled().to_string_lossy(),
                "--size",
                "8",
                "--batch-size",
                "8",
                "--iterations",
                "100000",
                "--model",
                "/nonexistent-folder/model.safetensors",
            ],
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "the usage error's status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error: process 0 of 2:"), "{err}");
        assert!(err.contains("/nonexistent-folder"), "{err}");
    }

    #[test]
    fn a_killed_process_ends_them_all_and_leaves_no_model() {
        if !have_mpirun() {
            return;
        }
        let model = tmp("killed.safetensors");
        let args = train_args(
            &model,
            "conv8 bn relu pool gap",
            &["--batch-size", "8", "--iterations", "100000"],
        );
        let mut child = mpirun(2, &strs(&args)).spawn().unwrap();
        // Wait until both processes train, then kill one of them.
        let marker = model.to_string_lossy().to_string();
        let started = Instant::now();
        let victim = loop {
            let found = Command::new("pgrep")
                .args(["-f", &format!("^[^ ]*deepcat --threads 1 train .*{marker}")])
                .output()
                .unwrap();
            let pids: Vec<String> = String::from_utf8_lossy(&found.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if pids.len() == 2 && started.elapsed() > Duration::from_secs(3) {
                break pids[1].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "processes never started"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Command::new("kill").args(["-9", &victim]).status().unwrap();
        let killed_at = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(60),
                "the other process did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success());
        assert!(!model.exists(), "no model is written");
    }

    #[test]
    fn a_checkpoint_from_two_processes_resumes_under_three_and_under_one() {
        if !have_mpirun() {
            return;
        }
        let model = tmp("resume.safetensors");
        let m = model.to_string_lossy().to_string();
        let args = train_args(
            &model,
            "conv8 bn relu pool gap",
            &[
                "--batch-size",
                "16",
                "--iterations",
                "30",
                "--checkpoint-every",
                "10",
            ],
        );
        run_ok(mpirun(2, &strs(&args)));
        let first = model_file::load(&model).unwrap();
        for (n, name) in [(3, "resumed3"), (1, "resumed1")] {
            let out = tmp(&format!("{name}.safetensors"));
            let mut more = train_args(
                &out,
                "conv8 bn relu pool gap",
                &["--batch-size", "16", "--iterations", "50"],
            );
            more.extend(["--resume".to_string(), m.clone()]);
            if n == 1 {
                run_ok({
                    let mut c = deepcat();
                    c.args(strs(&more));
                    c
                });
            } else {
                run_ok(mpirun(n, &strs(&more)));
            }
            let resumed = model_file::load(&out).unwrap();
            assert_eq!(resumed.model.classes, first.model.classes);
            assert!(resumed.optimizer.is_some());
        }
    }

    #[test]
    fn predict_and_evaluate_under_two_processes_print_what_one_prints() {
        if !have_mpirun() {
            return;
        }
        let model = tmp("predict.safetensors");
        run_ok({
            let mut c = deepcat();
            c.args(strs(&train_args(
                &model,
                "conv8 bn relu pool gap",
                &["--batch-size", "32", "--iterations", "50"],
            )));
            c
        });
        let m = model.to_string_lossy().to_string();
        let data = bundled().to_string_lossy().to_string();
        let cats = bundled().join("cats").to_string_lossy().to_string();
        for args in [
            vec!["predict", &m, &cats, &data],
            vec!["predict", &m, &data, "--json"],
            vec!["evaluate", &m, &data, "--errors", "5"],
            vec!["evaluate", &m, &data, "--json"],
        ] {
            let one = run_ok({
                let mut c = deepcat();
                c.args(&args);
                c
            });
            let two = run_ok(mpirun(2, &args));
            assert!(!one.stdout.is_empty());
            assert_eq!(
                String::from_utf8_lossy(&one.stdout),
                String::from_utf8_lossy(&two.stdout),
                "{args:?}"
            );
        }
    }
}
