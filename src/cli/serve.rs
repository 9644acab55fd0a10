//! `deepcat serve`: a saved model behind a web page and a JSON API (see `deepcat::serve`).

use super::parse_size;
use anyhow::Result;
use clap::Args;
use deepcat::serve::ServeConfig;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `deepcat serve`. Defaults are [`ServeConfig::default`]'s; README's "Serving
/// predictions" lists them with the memory each one bounds.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model saved by `deepcat train`.
    model: PathBuf,
    /// Address to listen on; 0.0.0.0 (or ::) lets other machines connect.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (the line printed at start says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Largest request body accepted (e.g. 20MB, 64MiB); larger ones are answered 413.
    #[arg(long, value_name = "SIZE", default_value = "20MB", value_parser = parse_size)]
    max_upload: u64,
    /// Seconds a client has to send a request's headers (and to start its next request on a
    /// kept-alive connection); slower ones are disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's body once its headers are in (408 after).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    body_timeout: f64,
    /// Connections held open at once (idle ones cost a few KB each); more are closed at once.
    /// Capped by the open-file limit.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// Largest image accepted, in megapixels; larger ones are answered 413 from their header.
    #[arg(long, value_name = "MEGAPIXELS", default_value_t = 50.0)]
    max_pixels: f64,
    /// Megapixels decoded at once across all requests (about 3 MB of memory per megapixel
    /// for ordinary 8-bit photos); a request that does not fit waits, then gets 503.
    #[arg(long, value_name = "MEGAPIXELS", default_value_t = 50.0)]
    decode_budget: f64,
    /// Request bodies held in memory at once across all requests (e.g. 128MiB); a request
    /// that does not fit waits, then gets 503.
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    body_budget: u64,
    /// Seconds a request waits for room in the decode or body budget before its 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    budget_wait: f64,
    /// Let `POST /api/reload` read the model file again (SIGHUP always does).
    #[arg(long)]
    allow_reload: bool,
    /// Test-time flips: flip averages each image's probabilities with its mirror's, none
    /// turns that off, for this model and every reload [default: what the model records].
    #[arg(long, value_enum)]
    tta: Option<super::tta::TtaName>,
    #[command(flatten)]
    device: super::device::DeviceArgs,
}

/// `value` seconds as a duration, or a usage error naming `flag`.
fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{flag} must be a positive number of seconds, got {value}"
        ))
    }
}

/// `value` megapixels as pixels, or a usage error naming `flag`.
fn megapixels(flag: &str, value: f64) -> Result<u64, String> {
    if value.is_finite() && value > 0.0 && value <= 4000.0 {
        Ok((value * 1e6) as u64)
    } else {
        Err(format!(
            "{flag} must be between 0 and 4000 megapixels, got {value}"
        ))
    }
}

fn config(a: &ServeArgs) -> Result<ServeConfig, String> {
    Ok(ServeConfig {
        addr: SocketAddr::new(a.host, a.port),
        max_upload: a.max_upload,
        header_timeout: seconds("--header-timeout", a.header_timeout)?,
        body_timeout: seconds("--body-timeout", a.body_timeout)?,
        max_connections: a.max_connections.max(1),
        max_pixels: megapixels("--max-pixels", a.max_pixels)?,
        decode_budget: megapixels("--decode-budget", a.decode_budget)?,
        body_budget: a.body_budget.max(1),
        budget_wait: seconds("--budget-wait", a.budget_wait)?,
        allow_reload: a.allow_reload,
        tta: a.tta.map(super::tta::TtaName::flips),
        device: a.device.device,
        ..ServeConfig::default()
    })
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let config = match config(&a) {
        Ok(c) => c,
        Err(reason) => super::usage!("{reason}"),
    };
    if !config.device.is_cpu() {
        // Opens the GPU now: a missing one is a usage error before anything is served.
        config.device.describe()?;
    }
    let served = deepcat::serve::load_checked(&a.model)?;
    super::allocator::purge_freed_memory_at_once();
    deepcat::serve::run(served, &config, |addr| {
        // Tests and scripts read this line for the port: print it whole, at once.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "deepcat serve: listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
