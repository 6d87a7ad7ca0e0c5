//! `POST /v1/jobs` (ad-hoc jobs on the priority lane) and `GET
//! /v1/jobs/{id}` (a job's state, by one lookup in the index: the worker
//! stores a failed job's document when it dead-letters it).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use elasticsearch::GetParts;
use lambdex_proto::{Job, MAX_PRIORITY, PredictionDoc, Status};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AdminState;
use super::audit::Detail;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::pipeline::ssrf::Guard;
use crate::queue::amqp;
use crate::queue::enqueue::{job_id_of, publish_on};

/// Who submitted an ad-hoc job: the token's name.
pub const SUBMITTED_BY_HEADER: &str = "x-lambdex-submitted-by";
/// Job ids an audit line names of one submission (it counts them all).
const AUDITED_JOB_IDS: usize = 20;

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

/// What is known of a job: one lookup by id in the index.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobState {
    /// `stored` (its result: ok, no_faces or partial), `failed` (it was
    /// dead-lettered: the document's `failure` says why; a replay that
    /// succeeds replaces it), or `unknown` (nothing recorded yet: queued,
    /// running, or never submitted).
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<PredictionDoc>,
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
        (status = 403, description = "The token lacks the submit scope", body = ErrorBody),
        (status = 413, description = "Over admin.max_body_bytes"),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a jobs request", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "RabbitMQ unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["submit"]))
)]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<JobsRequest>, JsonRejection>,
) -> Result<(StatusCode, Extension<Detail>, Json<JobsAccepted>), ApiError> {
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
    let job_ids: Vec<String> = jobs.iter().map(|job| job.job_id.clone()).collect();
    let detail = Detail(serde_json::json!({
        "priority": request.priority,
        "jobs": job_ids.len(),
        // Enough to find them; the broker has the rest.
        "job_ids": job_ids.iter().take(AUDITED_JOB_IDS).collect::<Vec<_>>(),
    }));
    let channel = state
        .broker
        .channel()
        .await
        .map_err(ApiError::unavailable)?;
    let mut headers = FieldTable::default();
    amqp::set_text(&mut headers, SUBMITTED_BY_HEADER, &caller.name);
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
    Ok((
        StatusCode::ACCEPTED,
        Extension(detail),
        Json(JobsAccepted { job_ids }),
    ))
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

/// A job's document: its result, or its failure if it was dead-lettered.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job's state and document", body = JobState),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token lacks the read scope", body = ErrorBody),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 503, description = "Elasticsearch unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
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
            let document: PredictionDoc =
                serde_json::from_value(body["_source"].clone()).map_err(|error| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the stored document does not parse: {error}"),
                    )
                })?;
            let state = if document.status == Status::Failed {
                "failed"
            } else {
                "stored"
            };
            Ok(Json(JobState {
                state: state.to_owned(),
                document: Some(document),
            }))
        }
        // No document, or no index yet.
        404 => Ok(Json(JobState {
            state: "unknown".to_owned(),
            document: None,
        })),
        status => Err(ApiError::unavailable(format!(
            "Elasticsearch answered {status} for the document"
        ))),
    }
}
