//! `deepcat bench`: being written.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

/// Flags of `deepcat bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs, _threads: Option<usize>) -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
