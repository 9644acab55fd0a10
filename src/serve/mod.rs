//! `deepcat serve`: a saved model behind HTTP, with a web page to try it.
//!
//! Routes ([`routes`]): `GET /` the page (embedded, no files served from disk), `POST
//! /api/predict` one image (any body that is not multipart; its format is found from its
//! bytes) or a `multipart/form-data` body of several, `GET /api/model` the model's metadata,
//! `GET /metrics` Prometheus figures ([`metrics`]), `GET /healthz`, `POST /api/reload` (with
//! `--allow-reload`). HEAD works wherever GET does. Images are decoded in parallel on rayon's
//! pool with the model's own preprocessing ([`crate::data::decode_image_bytes`]) and
//! classified in batches by one worker ([`batcher`]).
//!
//! Limits keep a bad or slow client from hurting the others, and each is a flag:
//! - connections: idle sockets are cheap (a task each, no thread), so up to
//!   `max_connections` are held and more are closed at once, never left blocking the accept
//!   loop; a client has `header_timeout` (short) to send its headers, on a new connection or
//!   a kept-alive one, and then `body_timeout` for its body;
//! - memory: bodies being read share `body_budget` bytes and decodes share `decode_budget`
//!   pixels ([`budget`]); a request that does not fit waits up to `budget_wait`, then gets
//!   503 with `Retry-After`. Images above `max_pixels` are refused (413) from their header;
//! - the queue of decoded images waiting for the model is bounded (503 when full).
//!
//! SIGHUP (or `POST /api/reload`) reads the model file again; the new model serves only once
//! it is checked completely ([`served`]). A shutdown signal stops accepting, lets requests in
//! flight finish and returns. This module is not a general web server: no TLS, no HTTP/2,
//! nothing written to disk.

pub mod batcher;
pub mod budget;
pub mod metrics;
mod routes;
pub mod served;

use crate::{Error, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics::Metrics;
pub use served::{Served, load_checked};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The largest image a request may send, in pixels (50 megapixels, e.g. 8660×5773).
pub const MAX_PIXELS: u64 = 50_000_000;

/// Images classified in one pass of the network at most.
pub const MAX_BATCH: usize = 64;

/// How the server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Largest request body, in bytes.
    pub max_upload: u64,
    /// Time a client has to send a request's headers (also the idle time allowed between
    /// requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// Connections held open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Decoded images that may wait for the model; more are answered 503.
    pub queue: usize,
    /// Largest image accepted, in pixels.
    pub max_pixels: u64,
    /// Pixels decoded at once, across all requests (about 3 bytes each for 8-bit RGB).
    pub decode_budget: u64,
    /// Body bytes read or held at once, across all requests.
    pub body_budget: u64,
    /// How long a request waits for room in a budget before it is answered 503.
    pub budget_wait: Duration,
    /// Whether `POST /api/reload` may reload the model (SIGHUP always may).
    pub allow_reload: bool,
    /// Test-time flips on or off for every model served, reloads included; `None` follows
    /// what each model file records.
    pub tta: Option<bool>,
    /// Where the batch worker runs the model (a GPU copy is made for each model served).
    pub device: crate::device::Device,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_upload: 20_000_000,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            queue: 256,
            max_pixels: MAX_PIXELS,
            decode_budget: MAX_PIXELS,
            body_budget: 128 << 20,
            budget_wait: Duration::from_secs(10),
            allow_reload: false,
            tta: None,
            device: crate::device::Device::Cpu,
        }
    }
}

/// Serves `served`'s model until Ctrl-C or SIGTERM, then finishes the requests in flight and
/// returns. `listening` is called once with the address actually bound (the real port when
/// `config.addr` asks for port 0).
///
/// # Errors
/// [`Error::Io`] when the address cannot be bound or the runtime cannot start.
pub fn run(served: Served, config: &ServeConfig, listening: impl FnOnce(SocketAddr)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the server's runtime", e))?;
    let mut config = config.clone();
    config.max_connections = config
        .max_connections
        .min(connection_room(raise_open_file_limit()));
    runtime.block_on(async {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.addr), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        listening(addr);
        serve(listener, served, &config, shutdown_signal()).await
    })
}

/// Serves connections from `listener` until `shutdown` completes, then waits for the
/// requests in flight (at most the body timeout and a little more). SIGHUP reloads the model.
///
/// # Errors
/// [`Error::Io`] when the batch worker's thread cannot start.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let app = Arc::new(
        routes::App::new(&served, config, Arc::clone(&metrics))
            .map_err(|e| Error::io("cannot start the batch worker", e))?,
    );
    drop(served);
    reload_on_sighup(Arc::clone(&app));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection that failed before we saw it (reset, out of descriptors):
                // pause briefly rather than spin, and keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Never wait for a slot here: a full house closes the newcomer, it does not stop
        // the accept loop (which would lock out every other client).
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req| {
            let app = Arc::clone(&app);
            async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let metrics = Arc::clone(&metrics);
        metrics.connections.inc();
        tokio::spawn(async move {
            // A client that hangs up or breaks the protocol ends only its own connection.
            let _ = connection.await;
            metrics.connections.dec();
            drop(slot);
        });
    }
    drop(listener);
    let grace = config.body_timeout + config.header_timeout + Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    Ok(())
}

/// Reloads the model on each SIGHUP, for as long as the server runs.
fn reload_on_sighup(app: Arc<routes::App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            eprintln!("deepcat serve: cannot listen for SIGHUP; reload with POST /api/reload");
            return;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // The outcome is logged and counted by reload itself.
                let _ = app.reload().await;
            }
        });
    }
    #[cfg(not(unix))]
    drop(app);
}

/// Raises this process's soft limit on open files to its hard limit (as Go's runtime does
/// at start) and returns the limit now in force: each held connection is a descriptor, and
/// the usual soft limit of 1,024 would otherwise refuse the thousandth idle client.
fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        limit.rlim_cur
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// Connections that fit under an open-file limit, leaving room for the listener, the model
/// file on reload, the runtime's own descriptors and standard streams.
fn connection_room(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(64))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
