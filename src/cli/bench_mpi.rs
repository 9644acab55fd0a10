//! `deepcat bench --mpi N`: how data-parallel training scales on this machine, and what that
//! says about N machines.
//!
//! The same training run (a conv preset at 64 px, its recipe, a few epochs) is timed as
//! `mpirun -n N deepcat --threads 1 train ...` and as one `deepcat --threads N train ...`,
//! alternating, in the same run; the best of each counts. Efficiency is the ratio of their
//! images per second. The all-reduce time is what process 0 spent in the step's sums
//! (waiting for the slowest process included).
//!
//! The cost model then takes the measured one-machine throughput and gradient size, and a
//! ring all-reduce (`2(P−1)/P · bytes / bandwidth + 2(P−1) · latency`), to give the largest
//! number of such machines P that keeps 90% efficiency at a global batch of 32 and 256.

use super::reference::{deepcat_train_with, last_json, number};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What `deepcat bench --mpi` was asked.
pub struct MpiBench {
    /// The photos (class folders).
    pub data: PathBuf,
    /// Processes (and, for the single process, threads).
    pub processes: usize,
    /// Alternating runs of each; the best counts.
    pub repeats: usize,
    /// Epochs per run.
    pub epochs: usize,
    /// One JSON object instead of a table.
    pub json: bool,
}

/// Image side of the runs.
const SIZE: &str = "64";
/// Latency per message assumed for the network in the cost model (a switched Ethernet LAN).
const LATENCY_S: f64 = 50e-6;
/// Efficiency the cost model keeps.
const TARGET: f64 = 0.9;

/// The flags of every timed run of `preset`.
fn flags(preset: &str, epochs: &str) -> Vec<String> {
    [
        "--size", SIZE, "--arch", preset, "--epochs", epochs, "--seed", "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One run's figures: images per second, all-reduce seconds per step, parameters.
fn figures(out: &Value, epochs: usize) -> Result<(f64, f64, f64)> {
    let images = number(out, "train_size")? * epochs as f64;
    let seconds = number(out, "train_seconds")?;
    let steps = number(out, "iterations")?.max(1.0);
    Ok((
        images / seconds,
        number(out, "allreduce_seconds")? / steps,
        number(out, "parameters")?,
    ))
}

/// One `deepcat --threads N train DATA FLAGS --json` run of `epochs` epochs: its figures.
fn one_process(
    a: &MpiBench,
    flags: &[String],
    epochs: usize,
    model: &Path,
) -> Result<(f64, f64, f64)> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cmd = deepcat_train_with(&a.data, &flags, Some(a.processes), model)?;
    figures(&last_json(&mut cmd, "one deepcat process")?.0, epochs)
}

/// `mpirun -n N deepcat --threads 1 train DATA FLAGS --json`, as root too.
fn mpirun(a: &MpiBench, flags: &[String], model: &Path) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the deepcat program to run")?;
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.processes > cores {
        cmd.arg("--oversubscribe");
    }
    cmd.args(["-n", &a.processes.to_string()])
        .arg(exe)
        .args(["--threads", "1", "train"])
        .arg(&a.data)
        .args(flags)
        .args(["--no-cache", "--json", "--quiet", "--model"])
        .arg(model);
    Ok(cmd)
}

pub fn run(a: &MpiBench) -> Result<ExitCode> {
    if !cfg!(feature = "mpi") {
        super::usage!(
            "bench --mpi needs a deepcat built with MPI: cargo build --release --features mpi"
        );
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        bail!(
            "mpirun not found: install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)"
        );
    }
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("bench.safetensors");
    let cnn = flags("cnn", &a.epochs.to_string());
    let (mut one, mut many) = ((0.0f64, 0.0, 0.0), (0.0f64, f64::INFINITY, 0.0));
    for _ in 0..a.repeats.max(1) {
        let f = one_process(a, &cnn, a.epochs, &model)?;
        one = if f.0 > one.0 { f } else { one };
        let (out, _) = last_json(&mut mpirun(a, &cnn, &model)?, "mpirun deepcat")?;
        let f = figures(&out, a.epochs)?;
        many = if f.0 > many.0 { f } else { many };
    }
    // The resnet preset's single-process throughput and size, for its row of the model.
    let res = one_process(a, &flags("resnet", "1"), 1, &model)?;
    let report = json!({
        "cpu": cpu_model(),
        "processes": a.processes,
        "epochs": a.epochs,
        "one_process_images_per_second": one.0,
        "mpi_images_per_second": many.0,
        "efficiency": many.0 / one.0,
        "allreduce_ms_per_step": many.1 * 1e3,
        "gradient_bytes": one.2 * 4.0,
        "model": [cost_model("cnn", one.0, one.2), cost_model("resnet", res.0, res.2)],
    });
    if a.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The cost-model rows of a preset trained at `ips` images per second by one machine, with
/// `params` parameters: per bandwidth and global batch, the step's compute and all-reduce
/// times on 2 machines and the largest machine count that keeps [`TARGET`] efficiency.
fn cost_model(preset: &str, ips: f64, params: f64) -> Value {
    let bytes = params * 4.0;
    let allreduce = |p: f64, gbit: f64| {
        2.0 * (p - 1.0) / p * bytes * 8.0 / (gbit * 1e9) + 2.0 * (p - 1.0) * LATENCY_S
    };
    let mut rows = Vec::new();
    for gbit in [1.0, 10.0, 100.0] {
        for batch in [32.0, 256.0] {
            let efficiency = |p: f64| {
                let compute = batch / (p * ips);
                compute / (compute + allreduce(p, gbit))
            };
            let largest = (1..=batch as usize)
                .take_while(|&p| efficiency(p as f64) >= TARGET)
                .last()
                .unwrap_or(1);
            rows.push(json!({
                "gbit": gbit as u32,
                "batch": batch as u32,
                "compute_ms_one_machine": batch / ips * 1e3,
                "allreduce_ms_two_machines": allreduce(2.0, gbit) * 1e3,
                "largest_machines_at_90": largest,
            }));
        }
    }
    json!({"preset": preset, "images_per_second": ips, "parameters": params, "rows": rows})
}

fn print_table(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "Scaling on this machine ({}), cnn preset at {SIZE} px, {} epochs:",
        r["cpu"].as_str().unwrap_or("?"),
        r["epochs"]
    );
    println!(
        "  1 process × {} threads: {:>7.1} images/s",
        r["processes"],
        f("one_process_images_per_second")
    );
    println!(
        "  mpirun -n {} × 1 thread: {:>7.1} images/s   efficiency {:.2}   all-reduce {:.3} ms/step ({:.0} KB)",
        r["processes"],
        f("mpi_images_per_second"),
        f("efficiency"),
        f("allreduce_ms_per_step"),
        f("gradient_bytes") / 1e3
    );
    println!(
        "\nCost model for P such machines (ring all-reduce, {LATENCY_S:e} s latency per message):"
    );
    println!(
        "  preset  link      batch  compute/step (1 machine)  all-reduce (2 machines)  largest P at 90%"
    );
    for preset in r["model"].as_array().into_iter().flatten() {
        for row in preset["rows"].as_array().into_iter().flatten() {
            println!(
                "  {:<7} {:>3} Gb/s  {:>5}  {:>17.1} ms  {:>21.3} ms  {:>16}",
                preset["preset"].as_str().unwrap_or("?"),
                row["gbit"].as_u64().unwrap_or(0),
                row["batch"].as_u64().unwrap_or(0),
                row["compute_ms_one_machine"].as_f64().unwrap_or(f64::NAN),
                row["allreduce_ms_two_machines"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                row["largest_machines_at_90"].as_u64().unwrap_or(0)
            );
        }
    }
}

/// The processor's model name, as /proc/cpuinfo gives it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
