//! The `deepcat` command: a thin shell over the library. It parses flags, calls the library
//! and prints; every decision about data and maths lives in `deepcat` itself.

mod cli;

/// See Cargo.toml: allocation churn of small per-step arrays made glibc fault pages in again
/// every training step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
