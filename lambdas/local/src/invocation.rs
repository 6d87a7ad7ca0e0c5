//! One invocation as an instance sees it, and how its end is told to the
//! caller: Lambda's error bodies for exits, timeouts and oversized answers.

use std::time::Duration;

use axum::body::Bytes;
use lambdex_proto::limits::SYNC_RESPONSE_BYTES;
use serde::Serialize;

/// What the Runtime API's `next` hands an instance.
#[derive(Debug, Clone)]
pub struct Event {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
}

/// What the function said.
#[derive(Debug, Clone)]
pub enum Answer {
    Response(Bytes),
    /// Lambda's error JSON (`errorType`, `errorMessage`) and the type the
    /// runtime put in its header, if any.
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
}

/// How an invocation on an instance ended.
#[derive(Debug)]
pub enum Outcome {
    Answered(Answer),
    /// The process exited before answering.
    Exited(String),
    /// The function (or its init) ran past this limit; the instance was
    /// killed.
    TimedOut(Duration),
}

impl Outcome {
    /// Whether the instance can take another invocation.
    pub fn keeps_instance(&self) -> bool {
        matches!(self, Self::Answered(_))
    }

    /// The answer the caller gets.
    pub fn into_answer(self, request_id: &str) -> Answer {
        match self {
            Self::Answered(answer) => answer,
            Self::Exited(status) => error_body(
                "Runtime.ExitError",
                &format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
            ),
            Self::TimedOut(limit) => error_body(
                "Sandbox.Timedout",
                &format!(
                    "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                    limit.as_secs_f64()
                ),
            ),
        }
    }

    /// The `Status` of the REPORT line, when not a normal end.
    pub fn report_status(&self) -> Option<&'static str> {
        match self {
            Self::Answered(_) => None,
            Self::Exited(_) => Some("error"),
            Self::TimedOut(_) => Some("timeout"),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error_type: &'a str,
    error_message: &'a str,
}

/// A function error as Lambda writes it.
pub fn error_body(error_type: &str, message: &str) -> Answer {
    let body = serde_json::to_vec(&ErrorBody {
        error_type,
        error_message: message,
    })
    .expect("two strings serialise");
    Answer::Error {
        body: Bytes::from(body),
        error_type: Some(error_type.to_owned()),
    }
}

/// The function error for an answer over [`SYNC_RESPONSE_BYTES`].
pub fn too_large_response(size: usize) -> Answer {
    error_body(
        "Function.ResponseSizeTooLarge",
        &format!(
            "Response payload size ({size} bytes) exceeded maximum allowed payload size ({SYNC_RESPONSE_BYTES} bytes)."
        ),
    )
}
