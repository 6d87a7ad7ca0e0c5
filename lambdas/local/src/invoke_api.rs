//! The Invoke API over HTTP, as `aws-sdk-lambda` (and the AWS CLI) call
//! it: `POST /2015-03-31/functions/{name}/invocations`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::Deserialize;

use crate::engine::{ApiError, Engine, InvocationType, InvokeInput};
use crate::log::tail;
use lambdex_proto::limits::SYNC_REQUEST_BYTES;

pub fn router(host: Arc<Engine>) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .fallback(|| async {
            error_response(&ApiError {
                status: 404,
                error_type: "UnknownOperationException",
                message: "the local Lambda serves only the Invoke API".to_owned(),
                reason: None,
                retry_after_s: None,
            })
        })
        .with_state(host)
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn invoke(
    State(host): State<Arc<Engine>>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match parse_and_invoke(&host, name, query, &headers, body).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

async fn parse_and_invoke(
    host: &Arc<Engine>,
    name: String,
    query: InvokeQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let invocation_type: InvocationType = header(headers, "x-amz-invocation-type")
        .map_or(Ok(InvocationType::RequestResponse), str::parse)?;
    let log_tail = match header(headers, "x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [Tail, None]"
            )));
        }
    };
    // Read one byte past the limit, so an oversized body is named as such.
    let payload = axum::body::to_bytes(body, SYNC_REQUEST_BYTES + 1)
        .await
        .map_err(|_| ApiError {
            status: 413,
            error_type: "RequestEntityTooLargeException",
            message: format!(
                "Request must be smaller than {SYNC_REQUEST_BYTES} bytes for the InvokeFunction operation"
            ),
            reason: None,
            retry_after_s: None,
        })?;
    let output = host
        .invoke(InvokeInput {
            function: name,
            qualifier: query.qualifier,
            invocation_type,
            // Lambda returns a log tail only to synchronous calls.
            log_tail: log_tail && invocation_type == InvocationType::RequestResponse,
            payload,
            client_context: header(headers, "x-amz-client-context").map(str::to_owned),
        })
        .await?;
    let mut response = Response::new(Body::from(output.payload));
    *response.status_mut() = StatusCode::from_u16(output.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    request_id(headers);
    if let Some(version) = output
        .executed_version
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert("x-amz-executed-version", version);
    }
    if let Some(error) = output
        .function_error
        .and_then(|e| HeaderValue::from_str(&e).ok())
    {
        headers.insert("x-amz-function-error", error);
    }
    if let Some(log) = output.log {
        let encoded = base64::engine::general_purpose::STANDARD.encode(tail(&log));
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("x-amz-log-result", value);
        }
    }
    Ok(response)
}

fn request_id(headers: &mut HeaderMap) {
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
}

/// An AWS JSON error: the type in `x-amzn-ErrorType`, the details in the body.
fn error_response(error: &ApiError) -> Response {
    let mut body = serde_json::json!({ "Type": "User", "message": error.message });
    if let Some(reason) = error.reason {
        body["Reason"] = reason.into();
    }
    if let Some(seconds) = error.retry_after_s {
        body["retryAfterSeconds"] = seconds.to_string().into();
    }
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "x-amzn-errortype",
        HeaderValue::from_static(error.error_type),
    );
    request_id(headers);
    if let Some(seconds) = error.retry_after_s {
        headers.insert("retry-after", HeaderValue::from(seconds));
    }
    response
}
