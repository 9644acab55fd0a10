//! The `deepcat` command: a thin shell over the library. It parses flags, calls the library
//! and prints; every decision about data and maths lives in `deepcat` itself.

// User input and files never reach an `unwrap` or `expect`: errors are returned instead. The
// few internal invariants that remain are allowed one by one, each with why it holds.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

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
            cli::print_error(&format!("error: {err:#}"));
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
