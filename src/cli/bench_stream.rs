//! `deepcat bench`'s streaming rows: one Adam epoch (batch 64) with the images streamed from
//! disk under `--memory-limit 64MiB` against the same epoch in memory, and the streamed run's
//! peak memory against the program's fixed overhead (the same training on a set of one batch).
//! All runs read a warm decoded cache, so none decodes.

use super::reference::{deepcat_train_with, last_json, number};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;

/// The memory limit the target names.
const LIMIT: &str = "64MiB";
const LIMIT_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
/// Epochs per run (one epoch is a fraction of a second: several make the time steadier).
const EPOCHS: &str = "3";
/// Alternating rounds of the two runs; the best of each is kept.
const ROUNDS: usize = 3;

/// The Adam runs with `extra` flags: (best seconds per epoch, largest peak memory).
fn adam_run(data: &Path, extra: &[&str], threads: Option<usize>, dir: &Path) -> Result<(f64, f64)> {
    let mut flags = vec![
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--batch-size",
        "64",
        "--epochs",
        EPOCHS,
    ];
    // A warm cache in the temporary folder: every run reads the same bytes, none decodes
    // (decoding large photos needs its own buffers, which are not what is measured).
    let cache = dir.join("cache");
    let cache = cache
        .to_str()
        .context("a temporary folder that is not UTF-8")?;
    flags.extend_from_slice(&["--cache", cache]);
    flags.extend_from_slice(extra);
    let (out, _) = last_json(
        &mut deepcat_train_with(data, &flags, threads, &dir.join("stream.safetensors"))?,
        "deepcat train --optimizer adam --batch-size 64",
    )?;
    let epochs: f64 = EPOCHS.parse()?;
    Ok((
        number(&out, "train_seconds")? / epochs,
        number(&out, "peak_memory_bytes")?,
    ))
}

/// A folder with the first 64 images of each class of `data` (links): with the test part
/// held out, about one batch to train on, for the overhead.
fn one_batch_folder(data: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let root = dir.join("one-batch");
    for class in std::fs::read_dir(data)?
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let into = root.join(class.file_name());
        std::fs::create_dir_all(&into)?;
        let mut files: Vec<_> = std::fs::read_dir(class.path())?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files.iter().take(64) {
            let name = f.file_name().context("a file without a name")?;
            std::os::unix::fs::symlink(std::fs::canonicalize(f)?, into.join(name))?;
        }
    }
    Ok(root)
}

/// Runs the streaming rows; prints what it measured on standard error as it goes.
pub fn streaming(data: &Path, threads: Option<usize>) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let small = one_batch_folder(data, dir.path())?;
    // Fills the cache for both folders.
    adam_run(data, &[], threads, dir.path())?;
    adam_run(&small, &[], threads, dir.path())?;
    let (mut memory_s, mut streamed_s, mut streamed_peak) = (f64::INFINITY, f64::INFINITY, 0.0f64);
    for _ in 0..ROUNDS {
        let (s, _) = adam_run(data, &[], threads, dir.path())?;
        memory_s = memory_s.min(s);
        let (s, peak) = adam_run(data, &["--memory-limit", LIMIT], threads, dir.path())?;
        streamed_s = streamed_s.min(s);
        streamed_peak = streamed_peak.max(peak);
    }
    let (_, overhead) = adam_run(&small, &[], threads, dir.path())?;
    eprintln!(
        "bench: Adam epoch in memory {memory_s:.3} s, streamed at {LIMIT} {streamed_s:.3} s; \
         streamed peak {:.0} MB, overhead {:.0} MB",
        streamed_peak / 1e6,
        overhead / 1e6
    );
    Ok(json!({
        "memory_limit_bytes": LIMIT_BYTES,
        "in_memory_epoch_seconds": memory_s,
        "streamed_epoch_seconds": streamed_s,
        "speed_ratio": memory_s / streamed_s,
        "speed_target": 0.8,
        "streamed_peak_bytes": streamed_peak,
        "fixed_overhead_bytes": overhead,
        "above_overhead_bytes": streamed_peak - overhead,
    }))
}

/// The two rows of the table.
pub fn print_rows(s: &Value) -> Result<()> {
    let n = |key: &str| number(s, key);
    println!(
        "{:<34} {:>14.3} s {:>10.3} s {:>12.2}× {:>10}",
        format!("Adam epoch streamed at {LIMIT}"),
        n("in_memory_epoch_seconds")?,
        n("streamed_epoch_seconds")?,
        n("speed_ratio")?,
        "≥ 0.8×"
    );
    println!(
        "{:<34} {:>13.0} MB {:>9.0} MB {:>10.0} MB {:>10}",
        "streamed peak (vs fixed overhead)",
        n("fixed_overhead_bytes")? / 1e6,
        n("streamed_peak_bytes")? / 1e6,
        n("above_overhead_bytes")? / 1e6,
        format!("≤ {:.0} MB", LIMIT_BYTES / 1e6)
    );
    Ok(())
}
