//! `/healthz`, `/readyz` and `/metrics`: for the load balancer and the
//! scraper, without a token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_lambda::types::InvocationType;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use crate::metrics;
use crate::queue::dlq;
use crate::queue::worker::WorkerHealth;

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    ready: bool,
    /// `broker`, `elasticsearch`, `face_crop`: `ok`, or what failed.
    checks: BTreeMap<String, String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// RabbitMQ, Elasticsearch and the face-crop function are reachable (the
/// function by a `DryRun` invocation, which runs nothing and costs
/// nothing). Checked at most once per `admin.readiness_cache`, one check
/// at a time: a flood of unauthenticated calls costs the services nothing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is not reachable", body = Readiness),
    ))]
pub async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Readiness>) {
    let mut cached = state.readiness.lock().await;
    if let Some((checked, status, readiness)) = cached.as_ref()
        && checked.elapsed() < state.config.admin.readiness_cache
    {
        return (*status, Json(readiness.clone()));
    }
    let (status, readiness) = check_readiness(&state).await;
    *cached = Some((Instant::now(), status, readiness.clone()));
    (status, Json(readiness))
}

/// Asks each service now, each within `admin.readiness_timeout`.
async fn check_readiness(state: &AdminState) -> (StatusCode, Readiness) {
    let timeout = state.config.admin.readiness_timeout;
    let broker = within(
        timeout,
        Box::pin(async {
            state
                .broker
                .channel()
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        }),
    );
    let elasticsearch = within(
        timeout,
        Box::pin(async {
            let response = state
                .elastic
                .ping()
                .send()
                .await
                .map_err(|error| error.to_string())?;
            match response.status_code().as_u16() {
                200..=299 => Ok(()),
                status => Err(format!("answered {status}")),
            }
        }),
    );
    let face_crop = within(
        timeout,
        Box::pin(async {
            let function = &state.config.face_crop;
            state
                .lambda
                .invoke()
                .function_name(&function.function)
                .set_qualifier(function.qualifier.clone())
                .invocation_type(InvocationType::DryRun)
                .send()
                .await
                .map(drop)
                .map_err(|error| aws_sdk_lambda::error::DisplayErrorContext(error).to_string())
        }),
    );
    let (broker, elasticsearch, face_crop) = tokio::join!(broker, elasticsearch, face_crop);
    let checks = BTreeMap::from([
        ("broker".to_owned(), broker),
        ("elasticsearch".to_owned(), elasticsearch),
        ("face_crop".to_owned(), face_crop),
    ]);
    let ready = checks.values().all(|check| check == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Readiness { ready, checks })
}

/// What a readiness check ended with: `ok`, or what failed.
type Check<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

async fn within(timeout: std::time::Duration, check: Check<'_>) -> String {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => error,
        Err(_) => format!("no answer within admin.readiness_timeout ({timeout:?})"),
    }
}

/// The worker's readiness: 200 while it takes jobs, 503 with why not.
pub fn worker_readiness(worker: &WorkerHealth) -> (StatusCode, Json<Readiness>) {
    let (ready, check) = match worker.readiness() {
        Ok(()) => (true, "ok".to_owned()),
        Err(reason) => (false, reason),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let checks = BTreeMap::from([("worker".to_owned(), check)]);
    (status, Json(Readiness { ready, checks }))
}

/// Metrics in Prometheus' text format (the worker's are the same names).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    // Queue depths are read from the broker, not recorded as they change:
    // at most once per `admin.readiness_cache`, within
    // `admin.readiness_timeout`; a scrape in between shows the last read.
    {
        let mut read = state.depths_read.lock().await;
        let config = &state.config.admin;
        if read.is_none_or(|read| read.elapsed() >= config.readiness_cache) {
            let reading = read_queue_depths(&state);
            if tokio::time::timeout(config.readiness_timeout, reading)
                .await
                .is_err()
            {
                tracing::warn!(timeout = ?config.readiness_timeout, "queue depths: RabbitMQ did not answer in time");
            }
            *read = Some(Instant::now());
        }
    }
    metrics_text(state.metrics.render())
}

async fn read_queue_depths(state: &AdminState) {
    let Ok(channel) = state.broker.channel().await else {
        return;
    };
    let topology = state.broker.topology();
    let queues = [
        &topology.jobs_queue,
        &topology.priority_queue,
        &topology.dead_queue,
    ];
    for queue in queues {
        if let Ok(ready) = dlq::message_count(&channel, queue).await {
            metrics::queue_messages(queue, ready);
        }
    }
}

pub fn metrics_text(text: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text)
}
