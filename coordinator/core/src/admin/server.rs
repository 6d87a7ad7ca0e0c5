//! The accept loop both HTTP servers run (the admin trigger and the
//! worker's `/metrics`): hyper's HTTP/1 connection with a header-read
//! timeout, a cap on open connections, and a graceful shutdown that ends.
//!
//! `axum::serve` sets no timer, so a client that sends its headers a byte
//! at a time (or opens a connection and sends nothing) holds it, and the
//! graceful shutdown waiting on it, for ever. Here every connection must
//! finish its request head within `header_read_timeout` — hyper also
//! starts that clock when a kept-alive connection goes idle, so idle
//! connections end too — and at most `max_connections` are open: past
//! that, new ones wait in the kernel's backlog until one closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long to wait before accepting again after `accept` fails (out of
/// file descriptors, say): long enough not to spin, short enough not to
/// matter.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What bounds the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's head must arrive within this, counted from the
    /// connection's start or from its last answer.
    pub header_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// After the shutdown signal, how long requests in progress may take
    /// before their connections are dropped.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in
/// progress finish (within `limits.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed while this loop holds it.
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<hyper::body::Incoming>| {
                    request.map(axum::body::Body::new)
                })
                .map_err(|never: Infallible| match never {}),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
            drop(permit);
        });
    }
    // No new connections; those open finish their request and close.
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "requests still in progress at the end of the shutdown grace: dropped"
        );
    }
}
