//! `deepcat serve`: a saved model behind a web page and a JSON API (see `deepcat::serve`).

use super::parse_size;
use anyhow::Result;
use clap::Args;
use deepcat::model_file;
use deepcat::serve::ServeConfig;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `deepcat serve`.
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
    /// Seconds a client has to send its headers, and then its body (for tests).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, hide = true)]
    timeout: f64,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        super::usage!(
            "--timeout must be a positive number of seconds, got {}",
            a.timeout
        );
    }
    let file = model_file::load(&a.model)?;
    let timeout = Duration::from_secs_f64(a.timeout);
    let config = ServeConfig {
        addr: SocketAddr::new(a.host, a.port),
        max_upload: a.max_upload,
        header_timeout: timeout,
        body_timeout: timeout,
        ..ServeConfig::default()
    };
    deepcat::serve::run(file, &config, |addr| {
        // Tests and scripts read this line for the port: print it whole, at once.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "deepcat serve: listening on http://{addr}");
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
