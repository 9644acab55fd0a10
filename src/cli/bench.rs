//! `deepcat bench`: deepcat and the reference (NumPy for training, Pillow for loading) on the
//! same data in the same run, reported as ratios, so the figures hold on any machine.
//!
//! The reference lives in `bench/reference.py` and is installed by
//! `scripts/setup-reference.sh`; it is not needed for anything else.

use super::reference::{last_json, number};
use anyhow::{Context, Result, bail};
use clap::Args;
use deepcat::data::{
    Cache, CacheSpot, Preprocess, SplitSpec, load_dataset, load_parts, load_splits, scan_classes,
};
use deepcat::model::Classes;
use deepcat::train::{ExactPath, Length, TrainConfig, train};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Flags of `deepcat bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The data to train on (the document's job: the bundled data at 128 px).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Python with numpy and pillow [default: .venv/bin/python, made by scripts/setup-reference.sh].
    #[arg(long)]
    python: Option<PathBuf>,
    /// The reference script.
    #[arg(long, default_value = "bench/reference.py")]
    reference: PathBuf,
    /// Iterations of the document's job.
    #[arg(long, default_value_t = 2500)]
    iterations: usize,
    /// NumPy iterations to time (their mean × --iterations estimates the NumPy job).
    #[arg(long, default_value_t = 5)]
    numpy_iterations: usize,
    /// Iterations of deepcat's direct path to time, when --skip-exact-check.
    #[arg(long, default_value_t = 20)]
    direct_iterations: usize,
    /// Skip the full direct-path run that checks the Gram path's results (about 2 minutes).
    #[arg(long)]
    skip_exact_check: bool,
    /// Steps of the step-by-step comparison of the Gram path, the direct path, and the direct
    /// path on inputs nudged by one unit in the last place.
    #[arg(long, default_value_t = 12)]
    sensitivity_steps: usize,
    /// Times each loader runs; the best run counts.
    #[arg(long, default_value_t = 3)]
    load_repeats: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead: one epoch of the cnn preset at 64 px, deepcat against PyTorch
    /// (bench/cnn_reference.py; scripts/setup-reference.sh --torch installs it).
    #[arg(long)]
    cnn: bool,
    /// Instead: only the streaming rows (an Adam epoch streamed at --memory-limit 64MiB
    /// against the same epoch in memory, and its peak memory).
    #[arg(long, conflicts_with = "cnn")]
    stream: bool,
    /// With --cnn: alternating runs of each; the best counts.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
}

impl BenchArgs {
    /// The reference Python: `--python`, or the one scripts/setup-reference.sh makes.
    pub fn python_path(&self) -> PathBuf {
        self.python
            .clone()
            .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
    }
}

/// PyTorch's dense timings (`bench/dense_reference.py`) beside deepcat's one Adam epoch in
/// batches of 64, or `null` when `python` has no torch (`scripts/setup-reference.sh --torch`).
fn pytorch_dense(python: &Path, data: &Path, job: &Value, threads: Option<usize>) -> Result<Value> {
    let has_torch = Command::new(python)
        .args(["-c", "import torch"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_torch {
        eprintln!(
            "bench: no torch in {}: skipping the PyTorch dense comparison",
            python.display()
        );
        return Ok(Value::Null);
    }
    let threads = threads.unwrap_or_else(rayon::current_num_threads);
    let (mut t, _) = last_json(
        Command::new(python)
            .arg("bench/dense_reference.py")
            .arg("speed")
            .arg(data)
            .args(["--threads", &threads.to_string()])
            .args(["--images", &number(job, "train_size")?.to_string()]),
        "the PyTorch dense reference",
    )?;
    let dir = tempfile::tempdir()?;
    let flags = [
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--batch-size",
        "64",
        "--epochs",
        "1",
    ];
    let (adam, _) = last_json(
        &mut deepcat_train_with(
            data,
            &flags,
            Some(threads),
            &dir.path().join("adam.safetensors"),
        )?,
        "deepcat train --optimizer adam --batch-size 64 --epochs 1",
    )?;
    let ours = number(&adam, "train_seconds")?;
    let theirs = number(&t, "adam_epoch_seconds")?;
    t["deepcat_adam_epoch_seconds"] = json!(ours);
    t["adam_epoch_ratio"] = json!(ours / theirs);
    eprintln!("bench: Adam epoch: PyTorch {theirs:.3} s, deepcat {ours:.3} s");
    Ok(t)
}

/// Best wall-clock seconds of loading `data` from a warm decoded cache (a fresh one in a
/// temporary folder, filled by a first load that is not timed).
fn cached_load_seconds(data: &Path, pre: &Preprocess, repeats: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let cache = Cache::at(dir.path());
    let mut best = f64::INFINITY;
    for round in 0..=repeats.max(1) {
        let start = Instant::now();
        let folders = scan_classes(data)?;
        let spot = CacheSpot {
            cache: &cache,
            root: data,
        };
        let (sets, _, report) = load_parts(&[&folders.files], pre, Some(spot));
        if let Some(w) = report.warning {
            bail!("the cache could not be used: {w}");
        }
        if round > 0 {
            if report.decoded > 0 {
                bail!("a warm cache decoded {} images again", report.decoded);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        drop(sets);
    }
    Ok(best)
}

/// `deepcat train DATA` with `flags`, printing JSON quietly and saving to `model`; without a
/// cache unless `flags` name one.
pub(super) fn deepcat_train_with(
    data: &Path,
    flags: &[&str],
    threads: Option<usize>,
    model: &Path,
) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the deepcat program to run")?;
    let mut cmd = Command::new(exe);
    if let Some(t) = threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    cmd.arg("train").arg(data).args(flags);
    // Every run decodes, as the first run on new photos does, unless given a cache.
    if !flags.contains(&"--cache") {
        cmd.arg("--no-cache");
    }
    cmd.args(["--json", "--quiet", "--model"]).arg(model);
    Ok(cmd)
}

/// The document's job for `iterations` on the exact path `path`.
fn deepcat_train(
    data: &Path,
    iterations: usize,
    path: &str,
    threads: Option<usize>,
    model: &Path,
) -> Result<Command> {
    let iterations = iterations.to_string();
    let flags = ["--iterations", &iterations, "--exact-path", path];
    deepcat_train_with(data, &flags, threads, model)
}

/// Cost after each of the first `steps` steps of the document's job, on `data` as loaded by
/// `train`, computed by `path`, with faer's products or (`reference`) ndarray's.
fn step_costs(steps: usize, path: ExactPath, reference: bool, data_dir: &Path) -> Result<Vec<f64>> {
    let spec = SplitSpec {
        data_dir: data_dir.to_path_buf(),
        test_dir: None,
        test_split: 0.2,
        val_split: 0.0,
        preprocess: Preprocess::default(),
        seed: deepcat::train::DEFAULT_SEED,
        max_skipped: deepcat::data::DEFAULT_MAX_SKIPPED,
        cache: None,
    };
    let splits = load_splits(&spec)?;
    let classes = Classes::new(splits.classes.clone(), None)?;
    let config = TrainConfig {
        length: Length::Iterations(steps),
        record_every: 1,
        exact_path: path,
        ..TrainConfig::default()
    };
    deepcat::linalg::use_reference_engine(reference);
    let trained = train(
        &config,
        &splits.train,
        None,
        &classes,
        deepcat::nn::Geometry::image(128),
        None,
        &mut [],
    );
    deepcat::linalg::use_reference_engine(false);
    let trained = trained?;
    Ok(trained.history.costs())
}

fn relative_differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-12))
        .collect()
}

/// Largest relative difference between two cost histories.
fn max_relative_difference(a: &Value, b: &Value) -> Option<f64> {
    let (a, b) = (a.as_array()?, b.as_array()?);
    if a.len() != b.len() {
        return None;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| Some((x.as_f64()? - y.as_f64()?).abs() / y.as_f64()?.abs().max(1e-12)))
        .try_fold(0.0f64, |m, d| Some(m.max(d?)))
}

pub fn run(a: BenchArgs, threads: Option<usize>) -> Result<ExitCode> {
    if a.cnn {
        let cnn = super::bench_cnn::CnnBench {
            data: a.data.clone(),
            python: a.python_path(),
            repeats: a.repeats,
            json: a.json,
        };
        return super::bench_cnn::run(&cnn, threads);
    }
    if a.stream {
        let streaming = super::bench_stream::streaming(&a.data, threads)?;
        if a.json {
            println!("{streaming}");
        } else {
            super::bench_stream::print_rows(&streaming)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let python = a.python_path();
    if !python.exists() {
        bail!(
            "{} not found: run scripts/setup-reference.sh first (it installs NumPy and Pillow in .venv), or pass --python",
            python.display()
        );
    }
    if !a.reference.exists() {
        bail!(
            "{} not found: run deepcat bench from the repository root, or pass --reference",
            a.reference.display()
        );
    }
    let pre = Preprocess::default();
    let folders = scan_classes(&a.data)?;
    eprintln!(
        "bench: {} images in {}",
        folders.files.len(),
        a.data.display()
    );

    // 1. Image loading, best of N, both warm (files in the page cache).
    let mut ours = f64::INFINITY;
    for _ in 0..a.load_repeats.max(1) + 1 {
        let start = Instant::now();
        let folders = scan_classes(&a.data)?;
        let (data, _) = load_dataset(&folders.files, &pre);
        ours = ours.min(start.elapsed().as_secs_f64());
        drop(data);
    }
    let mut pillow = f64::INFINITY;
    for _ in 0..a.load_repeats.max(1) + 1 {
        let (v, _) = last_json(
            Command::new(&python)
                .arg(&a.reference)
                .arg("load")
                .arg(&a.data),
            "the Pillow loader",
        )?;
        pillow = pillow.min(number(&v, "seconds")?);
    }
    eprintln!("bench: loading: Pillow {pillow:.3} s, deepcat {ours:.3} s");
    let cached = cached_load_seconds(&a.data, &pre, a.load_repeats)?;
    eprintln!("bench: loading from deepcat's cache: {cached:.4} s");

    // 2. NumPy per-iteration time on the document's job.
    let (numpy, _) = last_json(
        Command::new(&python)
            .arg(&a.reference)
            .arg("train")
            .arg(&a.data)
            .args(["--time-only", &a.numpy_iterations.to_string()]),
        "the NumPy reference",
    )?;
    let numpy_iteration = number(&numpy, "seconds_per_iteration")?;
    let numpy_job = numpy_iteration * a.iterations as f64;
    eprintln!("bench: NumPy {:.1} ms per iteration", numpy_iteration * 1e3);

    // 3. deepcat's whole job (auto path), wall clock, as a user runs it.
    let dir = tempfile::tempdir()?;
    let (job, job_seconds) = last_json(
        &mut deepcat_train(
            &a.data,
            a.iterations,
            "auto",
            threads,
            &dir.path().join("auto.safetensors"),
        )?,
        "deepcat train",
    )?;
    eprintln!(
        "bench: deepcat job {job_seconds:.2} s ({} path)",
        job["exact_path"]
    );

    // 4. The direct path: its time per iteration, and (unless skipped) the same job run the
    // direct way, to check the Gram path's costs and accuracies.
    let direct_iterations = if a.skip_exact_check {
        a.direct_iterations.max(1)
    } else {
        a.iterations
    };
    let (direct, _) = last_json(
        &mut deepcat_train(
            &a.data,
            direct_iterations,
            "direct",
            threads,
            &dir.path().join("direct.safetensors"),
        )?,
        "deepcat train --exact-path direct",
    )?;
    let direct_iteration = number(&direct, "train_seconds")? / direct_iterations as f64;
    let exact = (!a.skip_exact_check).then(|| {
        json!({
            "max_cost_relative_difference": max_relative_difference(&job["costs"], &direct["costs"]),
            "train_accuracy": [job["train_accuracy"].clone(), direct["train_accuracy"].clone()],
            "test_accuracy": [job["test_accuracy"].clone(), direct["test_accuracy"].clone()],
            "same_accuracies": job["train_accuracy"] == direct["train_accuracy"] && job["test_accuracy"] == direct["test_accuracy"],
        })
    });

    // 5. How sensitive the document's job is: its first steps by the Gram path, by the direct
    // path, and by the direct path with ndarray's products instead of faer's (the same maths,
    // rounded differently).
    let gram_steps = step_costs(a.sensitivity_steps, ExactPath::Gram, false, &a.data)?;
    let direct_steps = step_costs(a.sensitivity_steps, ExactPath::Direct, false, &a.data)?;
    let reference_steps = step_costs(a.sensitivity_steps, ExactPath::Direct, true, &a.data)?;
    let sensitivity = json!({
        "gram_vs_direct": relative_differences(&gram_steps, &direct_steps),
        "direct_faer_vs_direct_ndarray": relative_differences(&reference_steps, &direct_steps),
    });

    // 6. PyTorch's dense paths, when the reference environment has torch: one full-batch
    // iteration, and one Adam epoch in batches of 64 against deepcat's.
    let torch = pytorch_dense(&python, &a.data, &job, threads)?;

    // 7. Memory: peak resident memory against the f32 data matrices deepcat used to keep
    // (it keeps bytes now: a quarter of them).
    let data_bytes = (number(&job, "train_size")? + number(&job, "test_size")?)
        * number(&job, "features")?
        * 4.0;
    let peak = number(&job, "peak_memory_bytes").unwrap_or(f64::NAN);

    // 8. Streaming: an Adam epoch with the images on disk under a 64 MiB limit.
    let streaming = super::bench_stream::streaming(&a.data, threads)?;

    let report = json!({
        "data": a.data,
        "images": folders.files.len(),
        "threads": threads.unwrap_or_else(rayon::current_num_threads),
        "loading": {"pillow_seconds": pillow, "deepcat_seconds": ours, "speedup": pillow / ours, "target": 2.0},
        "cached_loading": {"decode_seconds": ours, "cached_seconds": cached, "speedup": ours / cached, "target": 5.0},
        "job": {
            "iterations": a.iterations,
            "numpy_seconds_per_iteration": numpy_iteration,
            "numpy_estimated_seconds": numpy_job,
            "deepcat_seconds": job_seconds,
            "deepcat_path": job["exact_path"],
            "speedup": numpy_job / job_seconds,
            "target": 100.0,
        },
        "direct_iteration": {
            "numpy_seconds": numpy_iteration,
            "deepcat_seconds": direct_iteration,
            "ratio": direct_iteration / numpy_iteration,
            "target": 0.3,
        },
        "memory": {"data_bytes": data_bytes, "peak_bytes": peak, "ratio": peak / data_bytes, "target": 0.5},
        "pytorch": torch,
        "streaming": streaming,
        "exactness": exact,
        "sensitivity": sensitivity,
    });
    if a.json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let r = &report;
    println!(
        "deepcat bench: {} ({} images, 128 px), {} threads; reference and deepcat side by side in this run\n",
        a.data.display(),
        folders.files.len(),
        r["threads"]
    );
    println!(
        "{:<34} {:>16} {:>12} {:>14} {:>10}",
        "", "reference", "deepcat", "ratio", "target"
    );
    println!(
        "{:<34} {:>14.3} s {:>10.3} s {:>12.1}× {:>10}",
        "load + decode + resize (Pillow)",
        pillow,
        ours,
        pillow / ours,
        "≥ 2×"
    );
    println!(
        "{:<34} {:>14.3} s {:>10.4} s {:>12.1}× {:>10}",
        "load from the cache (vs decoding)",
        ours,
        cached,
        ours / cached,
        "≥ 5×"
    );
    println!(
        "{:<34} {:>14.1} s {:>10.2} s {:>12.0}× {:>10}",
        format!("whole job, {} iterations (NumPy)", a.iterations),
        numpy_job,
        job_seconds,
        numpy_job / job_seconds,
        "≥ 100×"
    );
    println!(
        "{:<34} {:>13.1} ms {:>9.1} ms {:>13.2} {:>10}",
        "one iteration, direct path (NumPy)",
        numpy_iteration * 1e3,
        direct_iteration * 1e3,
        direct_iteration / numpy_iteration,
        "≤ 0.3×"
    );
    println!(
        "{:<34} {:>13.0} MB {:>9.0} MB {:>13.2} {:>10}",
        "peak memory (vs f32 data matrices)",
        data_bytes / 1e6,
        peak / 1e6,
        peak / data_bytes,
        "≤ 0.5×"
    );
    super::bench_stream::print_rows(&streaming)?;
    if torch.is_object() {
        let t = |key: &str| number(&torch, key);
        println!(
            "{:<34} {:>13.1} ms {:>9.1} ms {:>13.2} {:>10}",
            "one iteration, direct path (PyTorch)",
            t("direct_iteration_seconds")? * 1e3,
            direct_iteration * 1e3,
            direct_iteration / t("direct_iteration_seconds")?,
            "≤ 1.0×"
        );
        println!(
            "{:<34} {:>14.3} s {:>10.3} s {:>13.2} {:>10}",
            "Adam epoch, batch 64 (PyTorch)",
            t("adam_epoch_seconds")?,
            t("deepcat_adam_epoch_seconds")?,
            t("adam_epoch_ratio")?,
            "≤ 1.0×"
        );
    }
    println!(
        "\nNumPy job time = NumPy's mean time per iteration × {} (the NumPy job itself would take minutes).",
        a.iterations
    );
    if let Some(e) = &r["exactness"].as_object() {
        println!(
            "Gram path vs direct path on the same job: largest relative cost difference {}, train accuracy {} vs {}, test accuracy {} vs {}.",
            e["max_cost_relative_difference"],
            e["train_accuracy"][0],
            e["train_accuracy"][1],
            e["test_accuracy"][0],
            e["test_accuracy"][1]
        );
    }
    let show = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{:.0e}", x.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    println!(
        "\nRelative cost difference after each of the first {} steps:",
        a.sensitivity_steps
    );
    println!(
        "  Gram path vs direct path:               {}",
        show(&r["sensitivity"]["gram_vs_direct"])
    );
    println!(
        "  direct (faer) vs direct (ndarray):      {}",
        show(&r["sensitivity"]["direct_faer_vs_direct_ndarray"])
    );
    Ok(ExitCode::SUCCESS)
}
