//! `deepcat serve`: a saved model behind HTTP, with a web page to try it.
//!
//! Routes ([`routes`]): `GET /` the page (embedded, no files served from disk), `POST
//! /api/predict` one raw image or a `multipart/form-data` body of several, `GET /api/model`
//! the model's metadata, `GET /healthz`. Images are decoded in parallel on rayon's pool with
//! the model's own preprocessing ([`crate::data::decode_image_bytes`]) and classified in
//! batches by one worker ([`batcher`]).
//!
//! Limits keep a bad or slow client from hurting the others: a body above the upload limit is
//! refused (413), headers and bodies must arrive within a timeout, open connections are
//! capped, the queue of images waiting for the model is bounded (503 with `Retry-After` when
//! full) and images above [`MAX_PIXELS`] are refused from their header. A shutdown signal stops
//! accepting, lets requests in flight finish and returns.
//!
//! This module is not a general web server: no TLS, no HTTP/2, nothing written to disk.

pub mod batcher;
mod routes;

use crate::model_file::ModelFile;
use crate::{Error, Result};
use batcher::Batcher;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The largest image a request may send, in pixels (50 megapixels, e.g. 8660×5773): a
/// decoded image of this size takes up to about 600 MB while it is resized.
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
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Together with
    /// `max_upload` this bounds the memory bodies can take.
    pub max_connections: usize,
    /// Decoded images that may wait for the model; more are answered 503.
    pub queue: usize,
    /// Largest image accepted, in pixels.
    pub max_pixels: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_upload: 20_000_000,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 128,
            queue: 256,
            max_pixels: MAX_PIXELS,
        }
    }
}

/// Serves `file`'s model until Ctrl-C or SIGTERM, then finishes the requests in flight and
/// returns. `listening` is called once with the address actually bound (the real port when
/// `config.addr` asks for port 0).
///
/// # Errors
/// [`Error::Io`] when the address cannot be bound or the runtime cannot start.
pub fn run(
    file: ModelFile,
    config: &ServeConfig,
    listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the server's runtime", e))?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.addr), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        listening(addr);
        serve(listener, file, config, shutdown_signal()).await
    })
}

/// Serves connections from `listener` until `shutdown` completes, then waits for the
/// requests in flight (at most the body timeout and a little more) and for the batch worker.
///
/// # Errors
/// [`Error::Io`] when the batch worker's thread cannot start.
pub async fn serve(
    listener: TcpListener,
    file: ModelFile,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let model = Arc::new(file.model.clone());
    let (batcher, worker) = Batcher::start(Arc::clone(&model), config.queue, MAX_BATCH)
        .map_err(|e| Error::io("cannot start the batch worker", e))?;
    let app = Arc::new(routes::App::new(&file, model, batcher, config));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection that failed before we saw it (reset, out of descriptors):
                // pause briefly rather than spin, and keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req| {
            let app = Arc::clone(&app);
            async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that hangs up or breaks the protocol ends only its own connection.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    let grace = config.body_timeout + config.header_timeout + Duration::from_secs(5);
    let finished = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    drop(app);
    if finished {
        // The worker ends once the last request holding a queue sender is gone.
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    Ok(())
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
