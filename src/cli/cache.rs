//! The decoded cache on the command line: `--cache DIR` / `--no-cache` for the commands that
//! load image folders, and `deepcat cache info|clear`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use deepcat::data::{Cache, CacheReport};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where decoded images are cached.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Keep decoded images in DIR (default: $XDG_CACHE_HOME/deepcat or ~/.cache/deepcat); a
    /// second run on unchanged files reads them instead of decoding.
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Decode every image, reading and writing no cache.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    /// The cache these flags name; `None` with `--no-cache` or when there is no home folder.
    pub fn cache(&self) -> Option<Cache> {
        if self.no_cache {
            return None;
        }
        self.cache
            .clone()
            .or_else(Cache::default_dir)
            .map(Cache::at)
    }
}

/// Prints what went wrong with the cache, if anything, as a warning.
pub fn warn(report: &CacheReport) {
    if let Some(w) = &report.warning {
        eprintln!("warning: {w}");
    }
}

/// Flags of `deepcat cache`.
#[derive(Debug, Args)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: Action,
    /// The cache folder (default: $XDG_CACHE_HOME/deepcat or ~/.cache/deepcat).
    #[arg(long, value_name = "DIR", global = true)]
    cache: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the cached folders, their images and sizes.
    Info,
    /// Remove every cached folder.
    Clear,
}

pub fn run(a: CacheCommand) -> Result<ExitCode> {
    let Some(dir) = a.cache.clone().or_else(Cache::default_dir) else {
        super::usage!("no cache folder: set XDG_CACHE_HOME or HOME, or pass --cache DIR");
    };
    let cache = Cache::at(&dir);
    match a.action {
        Action::Info => {
            let packs = cache
                .info()
                .with_context(|| format!("reading the cache in {}", dir.display()))?;
            println!("Cache: {}", dir.display());
            let total: u64 = packs.iter().map(|p| p.bytes).sum();
            for p in &packs {
                match &p.folder {
                    Ok(folder) => println!(
                        "  {}: {} images, {} unusable files, {} ({}) [{}]",
                        folder.display(),
                        p.images,
                        p.skipped,
                        size(p.bytes),
                        p.preprocess,
                        p.path.display()
                    ),
                    Err(why) => println!(
                        "  {}: unusable ({why}), {}; it is rebuilt when its folder is next loaded",
                        p.path.display(),
                        size(p.bytes)
                    ),
                }
            }
            println!("{} cached folder(s), {} in all", packs.len(), size(total));
        }
        Action::Clear => {
            let (files, bytes) = cache
                .clear()
                .with_context(|| format!("clearing the cache in {}", dir.display()))?;
            println!(
                "Removed {files} file(s), {}, from {}",
                size(bytes),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes in MiB with one decimal.
fn size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}
