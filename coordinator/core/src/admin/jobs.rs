//! `POST /v1/jobs` (ad-hoc jobs on the priority lane) and `GET
//! /v1/jobs/{id}` (a job's document, or its state).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use elasticsearch::GetParts;
use lambdex_proto::{Job, MAX_PRIORITY, PredictionDoc};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::pipeline::ssrf::Guard;
use crate::queue::amqp;
use crate::queue::dlq::{self, DlqError};
use crate::queue::enqueue::{job_id_of, publish_on};

/// Who submitted an ad-hoc job: the token's name.
pub const SUBMITTED_BY_HEADER: &str = "x-lambdex-submitted-by";

/// Ad-hoc jobs, processed ahead of the batch backlog.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsRequest {
    /// At most `admin.max_urls_per_request`.
    jobs: Vec<JobRequest>,
    /// 1 (the default) to 9; every priority above 0 takes the priority lane.
    #[serde(default = "default_priority")]
    #[schema(minimum = 1, maximum = 9)]
    priority: u8,
}

fn default_priority() -> u8 {
    1
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// An http(s) URL; the SSRF guard applies.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://")]
    image_url: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Default: derived from the URL, as `lambdex enqueue` does.
    #[serde(default)]
    job_id: Option<String>,
}

/// The jobs published, confirmed by the broker.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobsAccepted {
    /// In the order given.
    job_ids: Vec<String>,
}

/// A job's document, or where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobState {
    /// `stored`, `dead_lettered`, or `pending` (neither: queued, running,
    /// or never submitted: the API cannot tell these apart).
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<PredictionDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<DeadLetterState>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterState {
    reason: String,
    error: Option<String>,
    attempts: Option<i64>,
    last_failure: Option<DateTime<Utc>>,
}

/// Publish jobs on the priority lane, ahead of the batch backlog.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = JobsRequest,
    responses(
        (status = 202, description = "Published and confirmed", body = JobsAccepted),
        (status = 400, description = "A job or URL is not valid (named by its index)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "Over admin.max_body_bytes"),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a jobs request", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Extension(Caller(caller)): Extension<Caller>,
    request: Result<Json<JobsRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<JobsAccepted>), ApiError> {
    let Json(request) = request?;
    let max = state.config.admin.max_urls_per_request;
    if request.jobs.is_empty() {
        return Err(ApiError::bad_request("jobs is empty"));
    }
    if request.jobs.len() > max {
        return Err(ApiError::bad_request(format!(
            "{} jobs: at most {max} per request (admin.max_urls_per_request)",
            request.jobs.len()
        )));
    }
    if !(1..=MAX_PRIORITY).contains(&request.priority) {
        return Err(ApiError::bad_request(format!(
            "priority {}: ad-hoc jobs take 1 to {MAX_PRIORITY}",
            request.priority
        )));
    }
    let guard = Guard::new(state.config.fetch.allow.clone());
    let mut jobs = Vec::with_capacity(request.jobs.len());
    for (i, asked) in request.jobs.into_iter().enumerate() {
        let mut job = Job::new(
            asked.job_id.unwrap_or_else(|| job_id_of(&asked.image_url)),
            asked.image_url,
        );
        job.metadata = asked.metadata;
        job.priority = request.priority;
        let checked = match job.validate_within(&state.config.jobs) {
            Ok(()) => refused_by_guard(&guard, &job.image_url).await,
            Err(error) => Some(error.to_string()),
        };
        if let Some(reason) = checked {
            return Err(ApiError::bad_request(format!("jobs[{i}]: {reason}")));
        }
        jobs.push(job);
    }
    let job_ids = jobs.iter().map(|job| job.job_id.clone()).collect();
    let channel = state
        .broker
        .channel()
        .await
        .map_err(ApiError::unavailable)?;
    let mut headers = FieldTable::default();
    amqp::set_text(&mut headers, SUBMITTED_BY_HEADER, &caller);
    publish_on(
        &channel,
        state.broker.topology(),
        jobs,
        state.config.queue.publish_window,
        headers,
        || {},
    )
    .await
    .map_err(ApiError::unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(JobsAccepted { job_ids })))
}

/// Why the SSRF guard would refuse the URL, if it would: its host must
/// resolve, and only to addresses the guard lets through (the download
/// checks again, after every redirect).
async fn refused_by_guard(guard: &Guard, url: &str) -> Option<String> {
    let url = match reqwest::Url::parse(url) {
        Ok(url) => url,
        Err(error) => return Some(format!("{url:?} is not a URL: {error}")),
    };
    let Some(host) = url.host_str() else {
        return Some(format!("{url} has no host"));
    };
    if let Err(refused) = guard.check_url(&url) {
        return Some(refused.to_string());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return None;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => addrs
            .map(|addr| guard.check(host, addr.ip()))
            .find_map(Result::err)
            .map(|refused| refused.to_string()),
        Err(error) => Some(format!("cannot resolve {host}: {error}")),
    }
}

/// A job's stored document, or whether it was dead-lettered.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job's document or state", body = JobState),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "Elasticsearch or RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<JobState>, ApiError> {
    let index = state.config.elasticsearch.index.as_str();
    let response = state
        .elastic
        .get(GetParts::IndexId(index, &id))
        .send()
        .await
        .map_err(ApiError::unavailable)?;
    match response.status_code().as_u16() {
        200 => {
            let body: serde_json::Value = response.json().await.map_err(ApiError::unavailable)?;
            let document = serde_json::from_value(body["_source"].clone()).map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the stored document does not parse: {error}"),
                )
            })?;
            return Ok(Json(JobState {
                state: "stored".to_owned(),
                document: Some(document),
                dead_letter: None,
            }));
        }
        // No document, or no index yet.
        404 => {}
        status => {
            return Err(ApiError::unavailable(format!(
                "Elasticsearch answered {status} for the document"
            )));
        }
    }
    match dlq::find(state.broker.config(), &id).await {
        Ok(letter) => Ok(Json(JobState {
            state: "dead_lettered".to_owned(),
            document: None,
            dead_letter: Some(DeadLetterState {
                reason: letter.reason.to_string(),
                error: letter.error,
                attempts: letter.attempts,
                last_failure: letter.last_failure,
            }),
        })),
        Err(DlqError::NotFound(_)) => Ok(Json(JobState {
            state: "pending".to_owned(),
            document: None,
            dead_letter: None,
        })),
        Err(error) => Err(ApiError::unavailable(error)),
    }
}
