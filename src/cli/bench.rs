//! `deepcat bench`: deepcat and the reference (NumPy for training, Pillow for loading) on the
//! same data in the same run, reported as ratios, so the figures hold on any machine.
//!
//! The reference lives in `bench/reference.py` and is installed by
//! `scripts/setup-reference.sh`; it is not needed for anything else.

use super::reference::{deepcat_train_with, last_json, number};
use anyhow::{Result, bail};
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
    /// Instead: data-parallel scaling, `mpirun -n N` with one thread per process against one
    /// process with N threads (the cnn preset at 64 px, 2 epochs), and the cost model for N
    /// machines. Needs Open MPI and a build with `--features mpi`.
    #[arg(long, value_name = "N", conflicts_with_all = ["cnn", "stream"])]
    mpi: Option<usize>,
    /// With --cnn: the preset to compare, cnn or resnet (each with its recipe).
    #[arg(long, default_value = "cnn", requires = "cnn")]
    arch: String,
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
            arch: a.arch.clone(),
        };
        return super::bench_cnn::run(&cnn, threads);
    }
    if let Some(processes) = a.mpi {
        if processes < 2 {
            super::usage!("--mpi needs at least 2 processes");
        }
        let mpi = super::bench_mpi::MpiBench {
            data: a.data.clone(),
            processes,
            repeats: a.repeats,
            epochs: 2,
            json: a.json,
        };
        return super::bench_mpi::run(&mpi);
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
    let report = document_bench(&a, threads)?;
    if a.json {
        println!("{report}");
    } else {
        print_table(&a, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The reference Python, checked to exist with the reference script beside it.
fn reference_python(a: &BenchArgs) -> Result<PathBuf> {
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
    Ok(python)
}

/// Every row of the document's benchmark, as one JSON object (see [`print_table`]).
fn document_bench(a: &BenchArgs, threads: Option<usize>) -> Result<Value> {
    let python = reference_python(a)?;
    let images = scan_classes(&a.data)?.files.len();
    eprintln!("bench: {images} images in {}", a.data.display());
    let loading = loading_rows(a, &python)?;
    let numpy_iteration = numpy_iteration(a, &python)?;
    let numpy_job = numpy_iteration * a.iterations as f64;
    let dir = tempfile::tempdir()?;
    let (job, job_seconds) = document_job(a, threads, dir.path())?;
    let (direct_iteration, exact) = direct_rows(a, threads, dir.path(), &job)?;
    let sensitivity = sensitivity(a)?;
    // PyTorch's dense paths, when the reference environment has torch.
    let torch = pytorch_dense(&python, &a.data, &job, threads)?;
    // Streaming: an Adam epoch with the images on disk under a 64 MiB limit.
    let streaming = super::bench_stream::streaming(&a.data, threads)?;
    Ok(json!({
        "data": a.data,
        "images": images,
        "threads": threads.unwrap_or_else(rayon::current_num_threads),
        "loading": loading["loading"],
        "cached_loading": loading["cached_loading"],
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
        "memory": memory_row(&job)?,
        "pytorch": torch,
        "streaming": streaming,
        "exactness": exact,
        "sensitivity": sensitivity,
    }))
}

/// Image loading, best of N, both warm (files in the page cache): Pillow against deepcat's
/// decoder, and deepcat's decoder against its cache.
fn loading_rows(a: &BenchArgs, python: &Path) -> Result<Value> {
    let pre = Preprocess::default();
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
        let mut cmd = Command::new(python);
        cmd.arg(&a.reference).arg("load").arg(&a.data);
        let (v, _) = last_json(&mut cmd, "the Pillow loader")?;
        pillow = pillow.min(number(&v, "seconds")?);
    }
    eprintln!("bench: loading: Pillow {pillow:.3} s, deepcat {ours:.3} s");
    let cached = cached_load_seconds(&a.data, &pre, a.load_repeats)?;
    eprintln!("bench: loading from deepcat's cache: {cached:.4} s");
    Ok(json!({
        "loading": {"pillow_seconds": pillow, "deepcat_seconds": ours, "speedup": pillow / ours, "target": 2.0},
        "cached_loading": {"decode_seconds": ours, "cached_seconds": cached, "speedup": ours / cached, "target": 5.0},
    }))
}

/// NumPy's mean time per iteration of the document's job.
fn numpy_iteration(a: &BenchArgs, python: &Path) -> Result<f64> {
    let mut cmd = Command::new(python);
    cmd.arg(&a.reference)
        .arg("train")
        .arg(&a.data)
        .args(["--time-only", &a.numpy_iterations.to_string()]);
    let (numpy, _) = last_json(&mut cmd, "the NumPy reference")?;
    let seconds = number(&numpy, "seconds_per_iteration")?;
    eprintln!("bench: NumPy {:.1} ms per iteration", seconds * 1e3);
    Ok(seconds)
}

/// deepcat's whole job (auto path), wall clock, as a user runs it: its JSON and seconds.
fn document_job(a: &BenchArgs, threads: Option<usize>, dir: &Path) -> Result<(Value, f64)> {
    let model = dir.join("auto.safetensors");
    let mut cmd = deepcat_train(&a.data, a.iterations, "auto", threads, &model)?;
    let (job, seconds) = last_json(&mut cmd, "deepcat train")?;
    eprintln!(
        "bench: deepcat job {seconds:.2} s ({} path)",
        job["exact_path"]
    );
    Ok((job, seconds))
}

/// The direct path: its time per iteration, and (unless skipped) the same job run the direct
/// way, to check the Gram path's costs and accuracies against it.
fn direct_rows(
    a: &BenchArgs,
    threads: Option<usize>,
    dir: &Path,
    job: &Value,
) -> Result<(f64, Option<Value>)> {
    let iterations = if a.skip_exact_check {
        a.direct_iterations.max(1)
    } else {
        a.iterations
    };
    let model = dir.join("direct.safetensors");
    let mut cmd = deepcat_train(&a.data, iterations, "direct", threads, &model)?;
    let (direct, _) = last_json(&mut cmd, "deepcat train --exact-path direct")?;
    let per_iteration = number(&direct, "train_seconds")? / iterations as f64;
    let exact = (!a.skip_exact_check).then(|| {
        json!({
            "max_cost_relative_difference": max_relative_difference(&job["costs"], &direct["costs"]),
            "train_accuracy": [job["train_accuracy"].clone(), direct["train_accuracy"].clone()],
            "test_accuracy": [job["test_accuracy"].clone(), direct["test_accuracy"].clone()],
            "same_accuracies": job["train_accuracy"] == direct["train_accuracy"] && job["test_accuracy"] == direct["test_accuracy"],
        })
    });
    Ok((per_iteration, exact))
}

/// How sensitive the document's job is: its first steps by the Gram path, by the direct path,
/// and by the direct path with ndarray's products instead of faer's (the same maths, rounded
/// differently).
fn sensitivity(a: &BenchArgs) -> Result<Value> {
    let steps = a.sensitivity_steps;
    let gram = step_costs(steps, ExactPath::Gram, false, &a.data)?;
    let direct = step_costs(steps, ExactPath::Direct, false, &a.data)?;
    let reference = step_costs(steps, ExactPath::Direct, true, &a.data)?;
    Ok(json!({
        "gram_vs_direct": relative_differences(&gram, &direct),
        "direct_faer_vs_direct_ndarray": relative_differences(&reference, &direct),
    }))
}

/// Peak resident memory against the f32 data matrices deepcat used to keep (it keeps bytes
/// now: a quarter of them).
fn memory_row(job: &Value) -> Result<Value> {
    let data_bytes =
        (number(job, "train_size")? + number(job, "test_size")?) * number(job, "features")? * 4.0;
    let peak = number(job, "peak_memory_bytes").unwrap_or(f64::NAN);
    Ok(
        json!({"data_bytes": data_bytes, "peak_bytes": peak, "ratio": peak / data_bytes, "target": 0.5}),
    )
}

/// The document's benchmark as a table, reference and deepcat side by side.
fn print_table(a: &BenchArgs, r: &Value) -> Result<()> {
    println!(
        "deepcat bench: {} ({} images, 128 px), {} threads; reference and deepcat side by side in this run\n",
        a.data.display(),
        r["images"],
        r["threads"]
    );
    println!(
        "{:<34} {:>16} {:>12} {:>14} {:>10}",
        "", "reference", "deepcat", "ratio", "target"
    );
    let n = |v: &Value, key: &str| number(v, key);
    let (load, cached) = (&r["loading"], &r["cached_loading"]);
    let (job, direct, memory) = (&r["job"], &r["direct_iteration"], &r["memory"]);
    let (pillow, ours) = (n(load, "pillow_seconds")?, n(load, "deepcat_seconds")?);
    let cached_seconds = n(cached, "cached_seconds")?;
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
        cached_seconds,
        ours / cached_seconds,
        "≥ 5×"
    );
    println!(
        "{:<34} {:>14.1} s {:>10.2} s {:>12.0}× {:>10}",
        format!("whole job, {} iterations (NumPy)", a.iterations),
        n(job, "numpy_estimated_seconds")?,
        n(job, "deepcat_seconds")?,
        n(job, "speedup")?,
        "≥ 100×"
    );
    let direct_seconds = n(direct, "deepcat_seconds")?;
    println!(
        "{:<34} {:>13.1} ms {:>9.1} ms {:>13.2} {:>10}",
        "one iteration, direct path (NumPy)",
        n(direct, "numpy_seconds")? * 1e3,
        direct_seconds * 1e3,
        n(direct, "ratio")?,
        "≤ 0.3×"
    );
    println!(
        "{:<34} {:>13.0} MB {:>9.0} MB {:>13.2} {:>10}",
        "peak memory (vs f32 data matrices)",
        n(memory, "data_bytes")? / 1e6,
        n(memory, "peak_bytes").unwrap_or(f64::NAN) / 1e6,
        n(memory, "ratio").unwrap_or(f64::NAN),
        "≤ 0.5×"
    );
    super::bench_stream::print_rows(&r["streaming"])?;
    print_torch_rows(&r["pytorch"], direct_seconds)?;
    print_notes(a, r);
    Ok(())
}

/// PyTorch's dense rows, when it ran.
fn print_torch_rows(torch: &Value, direct_seconds: f64) -> Result<()> {
    if !torch.is_object() {
        return Ok(());
    }
    let t = |key: &str| number(torch, key);
    println!(
        "{:<34} {:>13.1} ms {:>9.1} ms {:>13.2} {:>10}",
        "one iteration, direct path (PyTorch)",
        t("direct_iteration_seconds")? * 1e3,
        direct_seconds * 1e3,
        direct_seconds / t("direct_iteration_seconds")?,
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
    Ok(())
}

/// What the NumPy figure is, and the exactness and sensitivity findings.
fn print_notes(a: &BenchArgs, r: &Value) {
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
}
