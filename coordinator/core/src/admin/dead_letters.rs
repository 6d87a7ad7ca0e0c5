//! `GET /v1/dead-letters` and `POST /v1/dead-letters/replay`: the replay
//! tool's `list` and `replay`, for support without a shell.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::audit::Detail;
use super::error::{ApiError, ErrorBody};
use lambdex_proto::FailureClass;

use crate::queue::dlq::{self, Action, Filter, ReasonCount, Summary};

/// The most `latest` a listing shows.
const MAX_LATEST: usize = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterCounts {
    pub total: u64,
    /// Most first.
    pub reasons: Vec<ReasonCount>,
    /// The last letters in the queue (newest last), when asked for.
    pub latest: Vec<LetterSummary>,
}

/// One dead letter, as a listing shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LetterSummary {
    /// The job id, or `msg-…` for a message that is not a job.
    pub id: String,
    #[schema(value_type = String, example = "fetch_status")]
    pub reason: FailureClass,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub first_failure: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failure: Option<chrono::DateTime<chrono::Utc>>,
    /// Every failure, oldest first.
    pub history: Vec<String>,
}

/// What a listing shows.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Also list this many of the last letters (at most 100).
    #[param(minimum = 0, maximum = 100)]
    latest: Option<usize>,
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

/// Dead letters by reason, with the oldest and newest failure, and the
/// latest letters when asked for.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(ListParams),
    responses(
        (status = 200, description = "Counts by reason", body = DeadLetterCounts),
        (status = 400, description = "Not a valid query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token lacks the read scope", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<DeadLetterCounts>, ApiError> {
    let Query(params) = params?;
    let latest = params.latest.unwrap_or(0);
    if latest > MAX_LATEST {
        return Err(ApiError::bad_request(format!(
            "latest is {latest}: at most {MAX_LATEST}"
        )));
    }
    let (reasons, letters) = dlq::counts_and_latest(state.broker.config(), latest)
        .await
        .map_err(ApiError::unavailable)?;
    let total = reasons.iter().map(|reason| reason.count).sum();
    let latest = letters
        .into_iter()
        .map(|letter| LetterSummary {
            id: letter.id,
            reason: letter.reason,
            error: letter.error,
            attempts: letter.attempts,
            first_failure: letter.first_failure,
            last_failure: letter.last_failure,
            history: letter.history,
        })
        .collect();
    Ok(Json(DeadLetterCounts {
        total,
        reasons,
        latest,
    }))
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
        (status = 403, description = "The token lacks the replay scope", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a replay request", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["replay"]))
)]
pub async fn replay(
    State(state): State<Arc<AdminState>>,
    request: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<(Extension<Detail>, Json<Summary>), ApiError> {
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
        first: None,
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
    let detail = Detail(serde_json::json!({
        "reason": request.reason,
        "since": request.since,
        "limit": request.limit,
        "dry_run": summary.dry_run,
        "examined": summary.examined,
        "taken": summary.taken,
    }));
    Ok((Extension(detail), Json(summary)))
}
