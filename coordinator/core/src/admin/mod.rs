//! `lambdex admin`: the HTTP trigger for staff handling customer requests.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/predictions` | one image (URL or uploaded bytes) through the pipeline now |
//! | `POST /v1/jobs`, `GET /v1/jobs/{id}` | jobs on the priority lane; a job's document or state |
//! | `GET /v1/dead-letters`, `POST /v1/dead-letters/replay` | the replay tool's `list` and `replay` |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | up; broker, Elasticsearch and face-crop reachable; Prometheus |
//! | `GET /openapi.json` | the OpenAPI document, generated from these handlers |
//!
//! Every `/v1` route needs a bearer token ([`auth`]); the others are for
//! the load balancer and the scraper.

mod auth;
mod broker;
mod dead_letters;
mod error;
mod health;
mod jobs;
mod openapi;
mod predictions;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use elasticsearch::Elasticsearch;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::{Auth, hash_token, new_token};
pub use openapi::ApiDoc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::queue::worker::WorkerHealth;
use crate::sink::{self, Sink, SinkError};
use broker::Broker;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin.tokens is empty: add one (`lambdex admin new-token` prints a token and its entry)"
    )]
    NoTokens,
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("the admin server: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares.
#[derive(Debug)]
pub struct AdminState {
    config: Config,
    pipeline: Arc<Pipeline>,
    sink: Sink,
    elastic: Elasticsearch,
    broker: Broker,
    lambda: aws_sdk_lambda::Client,
    auth: Auth,
    metrics: Metrics,
}

impl AdminState {
    /// The state for `config`, calling functions through `lambda`, once
    /// the index template is installed (waiting for Elasticsearch, as the
    /// worker does); the sink's task is returned to be awaited after the
    /// server stops.
    pub async fn new(
        config: Config,
        lambda: aws_sdk_lambda::Client,
    ) -> Result<(Arc<Self>, sink::SinkTask), AdminError> {
        if config.admin.tokens.is_empty() {
            return Err(AdminError::NoTokens);
        }
        sink::install_template_when_up(
            &config.elasticsearch,
            config.queue.reconnect_delays(),
            config.queue.reconnect_max_delay,
        )
        .await?;
        let pipeline = Arc::new(Pipeline::with_client(config.clone(), lambda.clone())?);
        let (sink, sink_task) = Sink::start(&config.elasticsearch)?;
        let state = Self {
            elastic: sink::client(&config.elasticsearch)?,
            broker: Broker::new(config.queue.clone()),
            auth: Auth::new(&config.admin),
            metrics: Metrics::install(),
            pipeline,
            sink,
            lambda,
            config,
        };
        Ok((Arc::new(state), sink_task))
    }
}

/// Every route, with its limits.
pub fn router(state: Arc<AdminState>) -> Router {
    let v1 = Router::new()
        .route("/v1/predictions", post(predictions::create))
        .route("/v1/jobs", post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/replay", post(dead_letters::replay))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::document))
        // A Content-Length over the cap is refused before a byte of the
        // body is read: a client that sent `Expect: 100-continue` (curl
        // does, for large bodies) gets the 413 without uploading. A body
        // without a length is cut off at the cap as it streams.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(
            state.config.admin.max_body_bytes,
        ))
        .with_state(state)
}

/// Serves until `shutdown`, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// `/metrics`, `/healthz` and `/readyz` alone, for `lambdex worker`:
/// ready while it is connected and taking jobs.
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: CancellationToken,
    worker: Arc<WorkerHealth>,
) -> Result<(), AdminError> {
    let metrics = Metrics::install();
    let app = Router::new()
        .route("/healthz", get(health::healthz))
        .route(
            "/readyz",
            get(move || {
                let worker = Arc::clone(&worker);
                async move { health::worker_readiness(&worker) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { health::metrics_text(metrics.render()) }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
