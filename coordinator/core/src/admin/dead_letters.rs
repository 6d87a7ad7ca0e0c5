//! `GET /v1/dead-letters` and `POST /v1/dead-letters/replay`: the replay
//! tool's `list` and `replay`, for support without a shell.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminState;
use super::error::{ApiError, ErrorBody};
use lambdex_proto::FailureClass;

use crate::queue::dlq::{self, Action, Filter, ReasonCount, Summary};

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterCounts {
    pub total: u64,
    /// Most first.
    pub reasons: Vec<ReasonCount>,
}

/// The replay tool's filters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only this reason (without it, every reason but `invalid_message`).
    #[serde(default)]
    reason: Option<String>,
    /// Only those that last failed at or after this: RFC 3339, or a
    /// duration ago (`90m`, `2days`).
    #[serde(default)]
    since: Option<String>,
    /// At most this many.
    #[serde(default)]
    #[schema(minimum = 0)]
    limit: Option<u64>,
    /// Count what would be replayed; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Dead letters by reason, with the oldest and newest failure.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    responses(
        (status = 200, description = "Counts by reason", body = DeadLetterCounts),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<Arc<AdminState>>,
) -> Result<Json<DeadLetterCounts>, ApiError> {
    let reasons = dlq::counts(state.broker.config())
        .await
        .map_err(ApiError::unavailable)?;
    let total = reasons.iter().map(|reason| reason.count).sum();
    Ok(Json(DeadLetterCounts { total, reasons }))
}

/// Publish dead letters to the jobs exchange again (attempts reset, marked
/// replayed); each leaves the dead-letter queue once its copy is confirmed.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/replay",
    tag = "dead letters",
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "What was replayed (or would be, in a dry run)", body = Summary),
        (status = 400, description = "A filter is not valid", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a replay request", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<Arc<AdminState>>,
    request: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<Summary>, ApiError> {
    let Json(request) = request?;
    let since = request
        .since
        .as_deref()
        .map(dlq::parse_since)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = Filter {
        reason: request.reason.as_deref().map(FailureClass::from),
        since,
        limit: request.limit,
    };
    let summary = dlq::take(
        state.broker.config(),
        Action::Replay,
        &filter,
        request.dry_run,
        |_| {},
        |_| {},
    )
    .await
    .map_err(ApiError::unavailable)?;
    tracing::info!(?summary, "dead letters replayed");
    Ok(Json(summary))
}
