//! The functions a job calls, behind one interface, and its implementation
//! over the Lambda Invoke API with `aws-sdk-lambda`: against the local
//! Lambda (`lambdex predict`, tests) or a real endpoint.

use std::future::Future;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::LogType;
use base64::Engine as _;
use lambdex_lambdas::Task;
use lambdex_lambdas::local::Report;
use lambdex_proto::{
    ClassifyRequest, ClassifyResponse, ErrorType, FaceCropRequest, FaceCropResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A function's answer, the version that gave it, and its `REPORT` line.
#[derive(Debug, Clone)]
pub struct Invoked<T> {
    pub response: T,
    /// `X-Amz-Executed-Version`.
    pub function_version: Option<String>,
    /// Billed duration and memory, from the log tail.
    pub report: Option<Report>,
}

/// Why a function call gave no answer.
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
    /// init, panicked, or answered too much (`Runtime.ExitError`,
    /// `Sandbox.Timedout`, …).
    #[error("{function} failed ({error_type}): {message}")]
    Runtime {
        function: String,
        error_type: String,
        message: String,
    },
    /// The call could not be made, or Lambda refused it.
    #[error("{function} could not be called: {reason}")]
    Call { function: String, reason: String },
}

impl InvokeError {
    /// A short, stable class for a failed document: the error type in
    /// snake case (`invalid_image`, `runtime_exit_error`), or
    /// `invoke_failed`.
    pub fn class(&self) -> String {
        match self {
            Self::Function { error_type, .. } => snake_case(error_type.as_str()),
            Self::Runtime { error_type, .. } => snake_case(error_type),
            Self::Call { .. } => "invoke_failed".to_owned(),
        }
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        });
    }
    out
}

/// The face-crop function and the classifier functions, by model name.
pub trait Functions: Send + Sync {
    fn face_crop(
        &self,
        request: FaceCropRequest,
    ) -> impl Future<Output = Result<Invoked<FaceCropResponse>, InvokeError>> + Send;

    fn classify(
        &self,
        model: Task,
        request: ClassifyRequest,
    ) -> impl Future<Output = Result<Invoked<ClassifyResponse>, InvokeError>> + Send;
}

/// The Lambda function names lambdex calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionNames {
    pub face_crop: String,
    pub age: String,
    pub gender: String,
    /// A version or alias for every call (`None`: `$LATEST`).
    pub qualifier: Option<String>,
}

impl Default for FunctionNames {
    /// The names the local Lambda serves the project's functions under.
    fn default() -> Self {
        Self {
            face_crop: "face-crop".to_owned(),
            age: Task::Age.name().to_owned(),
            gender: Task::Gender.name().to_owned(),
            qualifier: None,
        }
    }
}

impl FunctionNames {
    pub fn classifier(&self, model: Task) -> &str {
        match model {
            Task::Age => &self.age,
            Task::Gender => &self.gender,
        }
    }
}

/// The functions over the Invoke API.
#[derive(Debug, Clone)]
pub struct Lambda {
    client: Client,
    names: FunctionNames,
}

/// Lambda's error JSON.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_type: Option<String>,
    error_message: Option<String>,
}

impl Lambda {
    pub fn new(client: Client, names: FunctionNames) -> Self {
        Self { client, names }
    }

    /// One synchronous call with a log tail.
    async fn invoke<Q: Serialize, A: DeserializeOwned>(
        &self,
        function: &str,
        request: &Q,
    ) -> Result<Invoked<A>, InvokeError> {
        let call_error = |reason: String| InvokeError::Call {
            function: function.to_owned(),
            reason,
        };
        let payload = serde_json::to_vec(request)
            .map_err(|error| call_error(format!("cannot serialise the request: {error}")))?;
        let output = self
            .client
            .invoke()
            .function_name(function)
            .set_qualifier(self.names.qualifier.clone())
            .log_type(LogType::Tail)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|error| call_error(DisplayErrorContext(&error).to_string()))?;
        let body = output.payload().map_or(&[][..], Blob::as_ref);
        if output.function_error().is_some() {
            return Err(function_error(function, body));
        }
        let response = serde_json::from_slice(body)
            .map_err(|error| call_error(format!("unreadable answer: {error}")))?;
        Ok(Invoked {
            response,
            function_version: output.executed_version().map(str::to_owned),
            report: output.log_result().and_then(report_of),
        })
    }
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

impl Functions for Lambda {
    async fn face_crop(
        &self,
        request: FaceCropRequest,
    ) -> Result<Invoked<FaceCropResponse>, InvokeError> {
        self.invoke(&self.names.face_crop, &request).await
    }

    async fn classify(
        &self,
        model: Task,
        request: ClassifyRequest,
    ) -> Result<Invoked<ClassifyResponse>, InvokeError> {
        self.invoke(self.names.classifier(model), &request).await
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
        assert_eq!(ours.class(), "invalid_image");
        assert!(matches!(ours, InvokeError::Function { .. }));
        let runtime = function_error(
            "age",
            br#"{"errorType":"Runtime.ExitError","errorMessage":"exit status 3"}"#,
        );
        assert_eq!(runtime.class(), "runtime_exit_error");
        assert_eq!(
            function_error("age", br#"{"errorType":"Sandbox.Timedout"}"#).class(),
            "sandbox_timedout"
        );
        let garbage = function_error("age", b"not json");
        assert!(garbage.to_string().contains("not json"), "{garbage}");
    }
}
