//! Command-line flags and dispatch. Each subcommand has its own file.

mod allocator;
mod bench;
mod bench_cnn;
mod bench_mpi;
mod bench_stream;
mod cache;
mod device;
mod evaluate;
mod explain;
mod export;
mod predict;
mod reference;
mod report;
mod serve;
mod summary;
mod train;
mod tta;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A mistake on the command line itself: a flag out of range, flags that contradict each other
/// or a model, an output path that cannot exist. Exit code 2, like clap's own parse errors;
/// failures while running (data, files, training) exit with 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Returns early from a `Result<_, anyhow::Error>` function with a [`UsageError`].
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::cli::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// Exit code for a run that was stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// The exit code for `err`: 2 for usage errors (ours and the library's configuration
/// errors), 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let is_usage = err.chain().any(|cause| {
        cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<deepcat::Error>(),
                Some(deepcat::Error::Config(_))
            )
    });
    if is_usage { 2 } else { 1 }
}

/// deepcat: a from-first-principles image classifier (cat or no cat, and more).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Worker threads for decoding and matrix products (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a classifier on a folder with one sub-folder of images per class.
    Train(Box<train::TrainArgs>),
    /// Measure a saved model on a folder of class sub-folders.
    Evaluate(evaluate::EvaluateArgs),
    /// Classify image files (or every image in folders).
    Predict(predict::PredictArgs),
    /// Write an HTML report of a saved model: its training curves and its scores on a folder.
    Report(report::ReportArgs),
    /// Show a saved model's layers, output shapes and parameter counts.
    Summary(summary::SummaryArgs),
    /// Time deepcat against the NumPy and Pillow reference on the same data, as ratios.
    Bench(bench::BenchArgs),
    /// Show or empty the cache of decoded images.
    Cache(cache::CacheCommand),
    /// Serve predictions over HTTP: a web page and a JSON API.
    Serve(serve::ServeArgs),
    /// Write a saved model as an ONNX file, to run it without deepcat.
    Export(export::ExportArgs),
    /// Draw where the model looked: each photo with a heat map over it, as a PNG.
    Explain(explain::ExplainArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if cli.threads == Some(0) {
        usage!("--threads must be at least 1");
    }
    allocator::keep_freed_memory_between_steps();
    // One process, unless mpirun started several: then train, predict and evaluate share
    // the work, and any failure ends them all.
    let group = deepcat::parallel::join()?;
    // Processes on one machine share its cores, unless --threads says otherwise.
    let (here, _) = group.local();
    let threads = cli.threads.or_else(|| {
        (here > 1).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / here).max(1)
        })
    });
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    if group.is_solo() {
        return dispatch(cli.command, cli.threads, &group);
    }
    if !matches!(
        cli.command,
        Command::Train(_) | Command::Predict(_) | Command::Evaluate(_)
    ) {
        usage!(
            "under mpirun, deepcat runs train, predict and evaluate; run the others as one process"
        );
    }
    let result = dispatch(cli.command, cli.threads, &group);
    if let Err(err) = &result {
        print_error(&format!(
            "error: process {} of {}: {err:#}",
            group.rank(),
            group.size()
        ));
        group.abort(i32::from(exit_code(err)));
    }
    result
}

/// Writes `line` and a newline to standard error in one write, so that under `mpirun`, which
/// forwards each write as it comes, its own messages cannot land in the middle of the line
/// (`eprintln!` writes each piece of the format on its own).
pub fn print_error(line: &str) {
    use std::io::Write;
    // Nothing better can be done if standard error itself fails.
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

/// Runs one command.
fn dispatch(
    command: Command,
    threads: Option<usize>,
    group: &deepcat::parallel::Group,
) -> Result<ExitCode> {
    match command {
        Command::Train(args) => train::run(args, group),
        Command::Evaluate(args) => evaluate::run(args, group),
        Command::Predict(args) => predict::run(args, group),
        Command::Report(args) => report::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Bench(args) => bench::run(args, threads),
        Command::Cache(args) => cache::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Export(args) => export::run(args),
        Command::Explain(args) => explain::run(args),
    }
}

/// A size in bytes: a number with an optional unit, `B`, `KB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024), e.g. `64MiB`.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (write e.g. 64MiB or 2GB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = value * scale;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{text:?} is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

/// Fails early (before any image is read) if the model cannot be written where asked.
fn check_writable(path: &std::path::Path, flag: &str) -> Result<()> {
    let dir = deepcat::model_file::folder_of(path);
    if !dir.is_dir() {
        usage!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        usage!(
            "{flag} {} is a folder; give a file name such as model.safetensors",
            path.display()
        );
    }
    // Saving writes a temporary file there first: find out now, not after training.
    deepcat::model_file::probe_writable(dir).with_context(|| {
        format!(
            "{flag} {}: cannot write in folder {}",
            path.display(),
            dir.display()
        )
    })?;
    Ok(())
}

/// `--max-skipped` must be a fraction.
fn check_max_skipped(value: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&value) {
        usage!("--max-skipped must be between 0 and 1, got {value}");
    }
    Ok(())
}

/// Prints skipped files as warnings on standard error.
fn warn_skipped(skipped: &[deepcat::data::SkippedFile]) {
    for s in skipped {
        eprintln!("warning: skipped {}: {}", s.path.display(), s.reason);
    }
}

/// The process's peak resident memory in bytes (Linux `VmHWM`), if the system tells.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_decimal_and_binary_units_and_refuse_the_rest() {
        use super::parse_size;
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "MiB", "10x", "-1MB", "0", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
