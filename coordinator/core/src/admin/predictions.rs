//! `POST /v1/predictions`: one image through the pipeline, now.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lambdex_proto::{Job, PredictionDoc, Status};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::audit::Detail;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::config::Scope;
use crate::queue::enqueue::job_id_of;

/// Whether the document was written to Elasticsearch (`store=true`).
pub const STORED_HEADER: &str = "x-lambdex-stored";

/// A prediction for an image on the web.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionRequest {
    /// An http(s) URL; the SSRF guard applies.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://")]
    image_url: String,
    /// Copied into the document (owner, post ids…).
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// The document's id (default: derived from the URL, as `lambdex
    /// enqueue` does).
    #[serde(default)]
    job_id: Option<String>,
    /// Also write the document to Elasticsearch (needs the `store` scope).
    #[serde(default)]
    store: bool,
}

/// For an uploaded image.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Also write the document to Elasticsearch (needs the `store` scope).
    #[serde(default)]
    store: bool,
    /// The document's id (default: `upload-` and the image's SHA-256).
    job_id: Option<String>,
}

/// Label every face of one image now: a JSON body names a URL, or the body
/// is the image itself (JPEG, PNG, WebP, GIF). Needs the `predict` scope,
/// and `store` too to keep the document.
#[utoipa::path(
    post,
    path = "/v1/predictions",
    tag = "predictions",
    params(UploadParams),
    request_body(content(
        (PredictionRequest = "application/json"),
        ("image/jpeg"),
        ("image/png"),
        ("image/webp"),
        ("image/gif"),
        ("application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The document (status ok, no_faces or partial)", body = PredictionDoc),
        (status = 400, description = "Not a valid request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token lacks the predict scope, or the store scope with store=true", body = ErrorBody),
        (status = 413, description = "Over admin.max_body_bytes"),
        (status = 415, description = "Neither JSON nor an image", body = ErrorBody),
        (status = 422, description = "Failed for good (the image's fault): the document, with its failure", body = PredictionDoc),
        (status = 429, description = "Over the token's rate", body = ErrorBody),
        (status = 502, description = "Failed in a way that may pass (a function or the download): the document", body = PredictionDoc),
        (status = 503, description = "Over admin.request_timeout + admin.prediction_timeout, or Elasticsearch would not store it", body = ErrorBody),
        (status = 504, description = "Over admin.prediction_timeout", body = ErrorBody),
    ),
    security(("bearer" = ["predict"]))
)]
pub async fn create(
    State(state): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<UploadParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (job, image, store) = if content_type == "application/json" {
        let request: PredictionRequest = serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("not a prediction request: {error}")))?;
        let mut job = Job::new(
            request
                .job_id
                .unwrap_or_else(|| job_id_of(&request.image_url)),
            request.image_url,
        );
        job.metadata = request.metadata;
        (job, None, request.store)
    } else if content_type.starts_with("image/") || content_type == "application/octet-stream" {
        if body.is_empty() {
            return Err(ApiError::bad_request("the image is empty"));
        }
        let job_id = params.job_id.unwrap_or_else(|| {
            let digest = Sha256::digest(&body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("upload-{hex}")
        });
        // The document records where the image came from.
        let job = Job::new(job_id, "upload:");
        (job, Some(body.to_vec()), params.store)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json naming image_url, or the image as image/* or application/octet-stream",
        ));
    };
    if store {
        caller.require(Scope::Store)?;
    }
    if image.is_none() {
        job.validate_within(&state.config.jobs)
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
    } else if job.job_id.trim().is_empty() {
        return Err(ApiError::bad_request("job_id is empty"));
    }

    let timeout = state.config.admin.prediction_timeout;
    let work = async {
        let doc = match image {
            Some(image) => state.pipeline.process_bytes(&job, image).await,
            None => state.pipeline.process(&job).await,
        };
        let stored = if store && doc.status != Status::Failed {
            state.sink.write(doc.clone()).await.map(|()| true)
        } else {
            Ok(false)
        };
        (doc, stored)
    };
    let (doc, stored) = tokio::time::timeout(timeout, work).await.map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within admin.prediction_timeout ({timeout:?})"),
        )
    })?;
    let stored = stored.map_err(|error| ApiError::unavailable(format!("cannot store: {error}")))?;
    let status = match &doc.failure {
        Some(failure) if doc.status == Status::Failed && failure.retryable => {
            StatusCode::BAD_GATEWAY
        }
        Some(_) if doc.status == Status::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let detail = serde_json::json!({
        "job_id": doc.job_id,
        "image_url": doc.image_url,
        "status": doc.status,
        "faces": doc.faces.len(),
        "stored": stored,
    });
    let mut response = (status, Json(doc)).into_response();
    response.extensions_mut().insert(Detail(detail));
    if store {
        response.headers_mut().insert(
            STORED_HEADER,
            HeaderValue::from_static(if stored { "true" } else { "false" }),
        );
    }
    Ok(response)
}
