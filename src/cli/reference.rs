//! Running a reference program (the NumPy, Pillow and PyTorch renderings in `bench/`) and
//! reading the JSON it prints.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs a command and parses the JSON object on the last line of its standard output.
pub fn last_json(cmd: &mut Command, what: &str) -> Result<(Value, f64)> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let value =
        serde_json::from_str(line).with_context(|| format!("{what} printed no JSON: {line:?}"))?;
    Ok((value, seconds))
}

pub fn number(v: &Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {v}"))
}

/// `deepcat train DATA` with `flags`, printing JSON quietly and saving to `model`; without a
/// cache unless `flags` name one.
pub fn deepcat_train_with(
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
