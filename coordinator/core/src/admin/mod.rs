//! `lambdex admin`: the HTTP trigger for staff handling customer requests.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/predictions` | one image (URL or uploaded bytes) through the pipeline now |
//! | `POST /v1/jobs`, `GET /v1/jobs/{id}` | jobs on the priority lane; a job's document or state |
//! | `GET /v1/dead-letters`, `POST /v1/dead-letters/replay` | the replay tool's `list` and `replay` |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | up; broker, Elasticsearch and face-crop reachable; Prometheus |
//! | `GET /v1/whoami` | the token's name and scopes |
//! | `GET /openapi.json` | the OpenAPI document, generated from these handlers |
//! | `GET /` | the staff web console ([`console`]) |
//!
//! Every `/v1` route needs a bearer token with the route's scope
//! ([`auth`]), and every call that may change state is audited
//! ([`audit`]); the others are for the load balancer and the scraper and
//! cost at most a constant however often they are called ([`health`]).
//! Connections and requests are bounded in time and number ([`server`]).

mod audit;
mod auth;
mod broker;
mod console;
mod dead_letters;
mod error;
mod health;
mod jobs;
mod openapi;
mod predictions;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodRouter, get, post};
use elasticsearch::Elasticsearch;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

pub use audit::{Audit, AuditError};
pub use auth::{Auth, hash_token, new_token};
pub use openapi::ApiDoc;
pub use server::ServerLimits;

use crate::config::{Config, Scope};
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
    #[error(transparent)]
    Audit(#[from] AuditError),
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
    audit: Audit,
    metrics: Metrics,
    /// The last `/readyz` answer and when it was checked.
    readiness: Mutex<Option<(Instant, StatusCode, health::Readiness)>>,
    /// When `/metrics` last read the queue depths.
    depths_read: Mutex<Option<Instant>>,
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
        let audit = Audit::open(config.admin.audit_log.as_deref())?;
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
            audit,
            metrics: Metrics::install(),
            readiness: Mutex::new(None),
            depths_read: Mutex::new(None),
            pipeline,
            sink,
            lambda,
            config,
        };
        Ok((Arc::new(state), sink_task))
    }
}

/// A `/v1` route that needs `scope`.
fn scoped(scope: Scope, route: MethodRouter<Arc<AdminState>>) -> MethodRouter<Arc<AdminState>> {
    route.route_layer(middleware::from_fn(move |request: Request, next: Next| {
        auth::require_scope(scope, request, next)
    }))
}

/// A layer answering 503 when a request takes longer than `limit` (named
/// by `setting` in the answer).
async fn within(limit: Duration, setting: &'static str, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no answer within {setting} ({limit:?})"),
        )
        .into_response(),
    }
}

/// Every route, with its scopes and limits.
pub fn router(state: Arc<AdminState>) -> Router {
    let admin = &state.config.admin;
    let request_timeout = admin.request_timeout;
    // A prediction's upload and pipeline each get their own time.
    let prediction_timeout = admin.request_timeout + admin.prediction_timeout;
    let predictions = Router::new()
        .route(
            "/v1/predictions",
            scoped(Scope::Predict, post(predictions::create)),
        )
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            within(
                prediction_timeout,
                "admin.request_timeout + admin.prediction_timeout",
                request,
                next,
            )
        }));
    let rest = Router::new()
        .route("/v1/whoami", get(auth::whoami))
        .route("/v1/jobs", scoped(Scope::Submit, post(jobs::create)))
        .route("/v1/jobs/{id}", scoped(Scope::Read, get(jobs::show)))
        .route(
            "/v1/dead-letters",
            scoped(Scope::Read, get(dead_letters::list)),
        )
        .route(
            "/v1/dead-letters/replay",
            scoped(Scope::Replay, post(dead_letters::replay)),
        )
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            within(request_timeout, "admin.request_timeout", request, next)
        }));
    let v1 = predictions
        .merge(rest)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            audit::audit_changes,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    let operations = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style));
    Router::new()
        .merge(v1)
        .merge(
            operations.layer(middleware::from_fn(move |request: Request, next: Next| {
                within(request_timeout, "admin.request_timeout", request, next)
            })),
        )
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
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let admin = &state.config.admin;
    let limits = ServerLimits {
        header_read_timeout: admin.header_read_timeout,
        max_connections: admin.max_connections,
        shutdown_grace: admin.request_timeout + admin.prediction_timeout,
    };
    server::serve(listener, router(state), limits, shutdown).await;
}

/// `/metrics`, `/healthz` and `/readyz` alone, for `lambdex worker`:
/// ready while it is connected and taking jobs.
pub async fn serve_metrics(
    listener: TcpListener,
    limits: ServerLimits,
    shutdown: CancellationToken,
    worker: Arc<WorkerHealth>,
) {
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
    server::serve(listener, app, limits, shutdown).await;
}
