//! One synchronous Lambda invocation through `aws-sdk-lambda`, and the one
//! place that decides what its failures mean: retry, wait and retry, or
//! give up.

use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError as SdkInvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::LogType;
use base64::Engine as _;
use lambdex_proto::{ErrorType, FailureClass, Report};

use crate::retry::Retryable;

/// A function's answer, the version that gave it, and its `REPORT` line.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub payload: Vec<u8>,
    /// `X-Amz-Executed-Version`.
    pub function_version: Option<String>,
}

/// Why an invocation gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and reported one of our error types.
    #[error("{function} failed ({error_type}): {message}")]
    Function {
        function: String,
        error_type: ErrorType,
        message: String,
    },
    /// The function's runtime failed: it exited, timed out, failed to
    /// init, panicked… (`Runtime.ExitError`, `Sandbox.Timedout`, …).
    #[error("{function} failed ({error_type}): {message}")]
    Runtime {
        function: String,
        error_type: String,
        message: String,
    },
    /// Lambda refused for want of capacity (429).
    #[error("{function} was throttled ({reason})")]
    Throttled {
        function: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The request is over Lambda's payload limit (413).
    #[error("{function} refused the request as too large: {message}")]
    TooLarge { function: String, message: String },
    /// Lambda answered with another error.
    #[error("{function}: Lambda answered {status} {code}: {message}")]
    Service {
        function: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{function} could not be reached: {reason}")]
    Network { function: String, reason: String },
    #[error("{function} did not answer within {timeout:?}")]
    Timeout { function: String, timeout: Duration },
    /// The answer is not what the function should answer.
    #[error("{function} gave an unreadable answer: {reason}")]
    BadAnswer { function: String, reason: String },
    /// The breaker is open and there is no fallback.
    #[error("{function} is not called: its circuit breaker is open after repeated failures")]
    CircuitOpen { function: String },
}

/// Runtime errors that repeat whatever the attempt.
const PERMANENT_RUNTIME_ERRORS: [&str; 2] =
    ["Function.ResponseSizeTooLarge", "Runtime.UnmarshalError"];

impl InvokeError {
    /// The failure's class: the function's error type (`invalid_image`,
    /// `runtime_exit_error`), or what went wrong around it (`throttled`,
    /// `invoke_timeout`…).
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Function { error_type, .. } => FailureClass::from(*error_type),
            Self::Runtime { error_type, .. } => FailureClass::of_runtime_error(error_type),
            Self::Throttled { .. } => FailureClass::Throttled,
            Self::TooLarge { .. } => FailureClass::RequestTooLarge,
            Self::Service { .. } => FailureClass::LambdaServiceError,
            Self::Network { .. } => FailureClass::InvokeFailed,
            Self::Timeout { .. } => FailureClass::InvokeTimeout,
            Self::BadAnswer { .. } => FailureClass::BadAnswer,
            Self::CircuitOpen { .. } => FailureClass::CircuitOpen,
        }
    }

    /// Whether the request's content may be the cause, so that the pieces
    /// of a shared call may pass on their own: the function crashed, timed
    /// out, failed, refused the request or gave an answer too large or
    /// unreadable. Throttling, the network, Lambda's own errors and an open
    /// breaker are not about the content.
    pub fn may_be_the_content(&self) -> bool {
        matches!(
            self,
            Self::Function { .. }
                | Self::Runtime { .. }
                | Self::Timeout { .. }
                | Self::TooLarge { .. }
                | Self::BadAnswer { .. }
        )
    }

    /// Whether the function itself failed to run (what trips a breaker),
    /// as opposed to a refusal or a bad input.
    pub fn is_function_failure(&self) -> bool {
        match self {
            Self::Function { error_type, .. } => !error_type.is_permanent(),
            Self::Runtime { .. } | Self::Timeout { .. } | Self::Network { .. } => true,
            Self::Service { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

impl Retryable for InvokeError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Function { error_type, .. } => !error_type.is_permanent(),
            Self::Runtime { error_type, .. } => {
                !PERMANENT_RUNTIME_ERRORS.contains(&error_type.as_str())
            }
            Self::Throttled { .. } | Self::Network { .. } | Self::Timeout { .. } => true,
            Self::Service { status, .. } => *status >= 500,
            Self::TooLarge { .. } | Self::BadAnswer { .. } | Self::CircuitOpen { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Lambda's error JSON.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_type: Option<String>,
    error_message: Option<String>,
}

/// One synchronous invocation of `function` (a name, `name:qualifier` or
/// an ARN) with a log tail. The `REPORT` line, when there is one, goes to
/// `on_report` whether the function answered or failed: both are billed.
pub async fn invoke(
    client: &Client,
    function: &str,
    qualifier: Option<&str>,
    payload: Vec<u8>,
    timeout: Duration,
    on_report: impl FnOnce(Report),
) -> Result<Invoked, InvokeError> {
    let call = client
        .invoke()
        .function_name(function)
        .set_qualifier(qualifier.map(str::to_owned))
        .log_type(LogType::Tail)
        .payload(Blob::new(payload))
        .send();
    let mut output = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return Err(sdk_error(function, &error)),
        Err(_) => {
            return Err(InvokeError::Timeout {
                function: function.to_owned(),
                timeout,
            });
        }
    };
    if let Some(report) = output.log_result().and_then(report_of) {
        on_report(report);
    }
    let body = output
        .payload
        .take()
        .map(Blob::into_inner)
        .unwrap_or_default();
    if output.function_error().is_some() {
        return Err(function_error(function, &body));
    }
    Ok(Invoked {
        payload: body,
        function_version: output.executed_version.take(),
    })
}

/// The `REPORT` line of a base64 `X-Amz-Log-Result`.
pub fn report_of(log_result: &str) -> Option<Report> {
    let log = base64::engine::general_purpose::STANDARD
        .decode(log_result)
        .ok()?;
    Report::parse(&String::from_utf8_lossy(&log))
}

/// A function error body as an [`InvokeError`]: ours, or the runtime's.
fn function_error(function: &str, body: &[u8]) -> InvokeError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (error_type, message) = match parsed {
        Some(ErrorBody {
            error_type,
            error_message,
        }) => (
            error_type.unwrap_or_else(|| "Unknown".to_owned()),
            error_message.unwrap_or_default(),
        ),
        None => (
            "Unknown".to_owned(),
            String::from_utf8_lossy(body).into_owned(),
        ),
    };
    match ErrorType::parse(&error_type) {
        Some(error_type) => InvokeError::Function {
            function: function.to_owned(),
            error_type,
            message,
        },
        None => InvokeError::Runtime {
            function: function.to_owned(),
            error_type,
            message,
        },
    }
}

/// Lambda's `retryAfterSeconds`, if it is a duration at all: a hostile or
/// broken answer (`1e20`, `-1`, `NaN`) is none, not a panic. How long it
/// is honoured is the retry policy's to cap.
fn retry_after_of(seconds: &str) -> Option<Duration> {
    let seconds: f64 = seconds.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// An SDK error as an [`InvokeError`].
fn sdk_error(function: &str, error: &SdkError<SdkInvokeError, HttpResponse>) -> InvokeError {
    let function = function.to_owned();
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err() {
                SdkInvokeError::TooManyRequestsException(throttled) => InvokeError::Throttled {
                    function,
                    reason: throttled.reason().map_or_else(
                        || "TooManyRequestsException".to_owned(),
                        |r| r.as_str().to_owned(),
                    ),
                    retry_after: throttled.retry_after_seconds().and_then(retry_after_of),
                },
                SdkInvokeError::RequestTooLargeException(too_large) => InvokeError::TooLarge {
                    function,
                    message: too_large.message().unwrap_or_default().to_owned(),
                },
                other => InvokeError::Service {
                    function,
                    status,
                    code: other.code().unwrap_or("Unknown").to_owned(),
                    message: other.message().unwrap_or_default().to_owned(),
                },
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            InvokeError::Network {
                function,
                reason: DisplayErrorContext(error).to_string(),
            }
        }
        // Building the request failed: it would fail again.
        _ => InvokeError::BadAnswer {
            function,
            reason: DisplayErrorContext(error).to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_are_snake_case_error_types() {
        let ours = function_error(
            "face-crop",
            br#"{"errorType":"InvalidImage","errorMessage":"x"}"#,
        );
        assert_eq!(ours.class(), FailureClass::InvalidImage);
        assert!(!ours.is_retryable());
        let runtime = function_error(
            "age",
            br#"{"errorType":"Runtime.ExitError","errorMessage":"exit status 3"}"#,
        );
        assert_eq!(runtime.class().as_str(), "runtime_exit_error");
        assert!(runtime.is_retryable());
        assert!(runtime.is_function_failure());
        assert_eq!(
            function_error("age", br#"{"errorType":"Sandbox.Timedout"}"#)
                .class()
                .as_str(),
            "sandbox_timedout"
        );
        let too_big = function_error("age", br#"{"errorType":"Function.ResponseSizeTooLarge"}"#);
        assert!(!too_big.is_retryable());
        let garbage = function_error("age", b"not json");
        assert!(garbage.to_string().contains("not json"), "{garbage}");
    }

    #[test]
    fn a_hostile_retry_after_is_no_duration_rather_than_a_panic() {
        assert_eq!(retry_after_of(" 2.5 "), Some(Duration::from_millis(2500)));
        assert_eq!(
            retry_after_of("4294967295"),
            Some(Duration::from_secs(4_294_967_295))
        );
        for hostile in ["1e20", "-1", "NaN", "inf", "-inf", "soon", ""] {
            assert_eq!(retry_after_of(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn model_failures_are_retried_and_bad_input_is_not() {
        let model = function_error("age", br#"{"errorType":"ModelFailure"}"#);
        assert!(model.is_retryable());
        let bad = function_error("age", br#"{"errorType":"InvalidRequest"}"#);
        assert!(!bad.is_retryable());
        assert!(!bad.is_function_failure());
    }
}
