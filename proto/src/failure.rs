//! Why a job failed: a class from a closed set (the grouping dead letters,
//! documents and metrics use) and the reason in words.
//!
//! A class is one lower-case snake-case word on the wire
//! (`invalid_image`, `fetch_status`…), so stored documents and dead-letter
//! headers keep their shape; in code it is a [`FailureClass`], never a
//! string. The runtime errors Lambda itself reports (`Runtime.ExitError`,
//! `Sandbox.Timedout`, …) are open-ended: they keep their own name, in
//! snake case, as [`FailureClass::Other`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ErrorType;

/// A failure's class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureClass {
    // The message.
    /// Not a job this build can run: not JSON, a field missing or over a
    /// limit, an unknown `schema_version`.
    InvalidMessage,
    /// Delivered more often than `queue.delivery_limit`: the job keeps
    /// coming back without an end (a worker dies on it, say).
    DeliveryLimit,
    /// The job took longer than `pipeline.job_timeout` as a whole.
    JobTimeout,
    // The download.
    InvalidUrl,
    /// The SSRF guard refused the address.
    FetchRefused,
    /// The server answered an error status.
    FetchStatus,
    FetchTimeout,
    /// The connection failed.
    FetchFailed,
    TooManyRedirects,
    /// Over the download's byte cap, or too large to send to face-crop.
    ImageTooLarge,
    /// The content is no image lambdex reads.
    NotAnImage,
    // The image.
    /// An image that does not decode, or is over the pixel cap.
    InvalidImage,
    /// A local file `lambdex predict` could not read.
    ReadFailed,
    // The functions.
    InvalidRequest,
    ModelFailure,
    /// A function's own internal error, or the coordinator's.
    Internal,
    /// Lambda refused the call for want of capacity (429).
    Throttled,
    /// Lambda refused the request as over its payload limit (413).
    RequestTooLarge,
    /// Lambda answered another error.
    LambdaServiceError,
    /// The function could not be reached.
    InvokeFailed,
    InvokeTimeout,
    /// The function's answer is not what it should be.
    BadAnswer,
    /// The function's breaker is open and it has no fallback.
    CircuitOpen,
    /// A class this build does not name: a runtime error Lambda reported,
    /// in snake case (`runtime_exit_error`, `sandbox_timedout`,
    /// `runtime_init_error`…), or a class read from a newer build's
    /// document or dead letter.
    Other(String),
    // The index.
    /// Elasticsearch refused the document for good.
    IndexRejected,
}

/// Every class with a fixed name, for parsing and listing.
const NAMED: [(FailureClass, &str); 24] = [
    (FailureClass::InvalidMessage, "invalid_message"),
    (FailureClass::DeliveryLimit, "delivery_limit"),
    (FailureClass::JobTimeout, "job_timeout"),
    (FailureClass::InvalidUrl, "invalid_url"),
    (FailureClass::FetchRefused, "fetch_refused"),
    (FailureClass::FetchStatus, "fetch_status"),
    (FailureClass::FetchTimeout, "fetch_timeout"),
    (FailureClass::FetchFailed, "fetch_failed"),
    (FailureClass::TooManyRedirects, "too_many_redirects"),
    (FailureClass::ImageTooLarge, "image_too_large"),
    (FailureClass::NotAnImage, "not_an_image"),
    (FailureClass::InvalidImage, "invalid_image"),
    (FailureClass::ReadFailed, "read_failed"),
    (FailureClass::InvalidRequest, "invalid_request"),
    (FailureClass::ModelFailure, "model_failure"),
    (FailureClass::Internal, "internal"),
    (FailureClass::Throttled, "throttled"),
    (FailureClass::RequestTooLarge, "request_too_large"),
    (FailureClass::LambdaServiceError, "lambda_service_error"),
    (FailureClass::InvokeFailed, "invoke_failed"),
    (FailureClass::InvokeTimeout, "invoke_timeout"),
    (FailureClass::BadAnswer, "bad_answer"),
    (FailureClass::CircuitOpen, "circuit_open"),
    (FailureClass::IndexRejected, "index_rejected"),
];

impl FailureClass {
    /// The class's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(name) => name,
            named => NAMED
                .iter()
                .find(|(class, _)| class == named)
                .map_or("internal", |(_, name)| name),
        }
    }

    /// A runtime error type as Lambda names it (`Runtime.ExitError`), as
    /// its class (`runtime_exit_error`).
    pub fn of_runtime_error(error_type: &str) -> Self {
        // A runtime may reuse one of our names; it is then that class.
        Self::from(snake_case(error_type).as_str())
    }
}

impl From<ErrorType> for FailureClass {
    fn from(error_type: ErrorType) -> Self {
        match error_type {
            ErrorType::InvalidImage => Self::InvalidImage,
            ErrorType::InvalidRequest => Self::InvalidRequest,
            ErrorType::ModelFailure => Self::ModelFailure,
            ErrorType::Internal => Self::Internal,
        }
    }
}

impl From<&str> for FailureClass {
    /// Any name: one of ours, or another ([`FailureClass::Other`]).
    fn from(name: &str) -> Self {
        NAMED
            .iter()
            .find(|(_, known)| *known == name)
            .map_or_else(|| Self::Other(name.to_owned()), |(class, _)| class.clone())
    }
}

impl FromStr for FailureClass {
    type Err = std::convert::Infallible;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(name))
    }
}

/// A class equals its wire name.
impl PartialEq<&str> for FailureClass {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::from(name.as_ref()))
    }
}

/// `Runtime.ExitError` → `runtime_exit_error`.
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

/// Why a job failed, as its document and its dead letter say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// A short, stable class for grouping (e.g. `invalid_image`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "invalid_image"))]
    pub class: FailureClass,
    /// The full reason, for people.
    pub reason: String,
    /// Whether processing the job again may succeed: the failure was
    /// transient (throttling, a crashed function…), not the input's.
    #[serde(default)]
    pub retryable: bool,
}

impl Failure {
    pub fn new(class: FailureClass, reason: impl Into<String>, retryable: bool) -> Self {
        Self {
            class,
            reason: reason.into(),
            retryable,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_class_parses_back_from_its_name() {
        for (class, name) in &NAMED {
            assert_eq!(class.as_str(), *name);
            assert_eq!(name.parse::<FailureClass>(), Ok(class.clone()));
        }
    }

    #[test]
    fn runtime_errors_keep_their_name_in_snake_case() {
        assert_eq!(
            FailureClass::of_runtime_error("Runtime.ExitError"),
            FailureClass::Other("runtime_exit_error".to_owned())
        );
        assert_eq!(
            FailureClass::of_runtime_error("Sandbox.Timedout").as_str(),
            "sandbox_timedout"
        );
        assert_eq!(
            FailureClass::of_runtime_error("Function.ResponseSizeTooLarge").as_str(),
            "function_response_size_too_large"
        );
        // One of ours, reported by a runtime, is ours.
        assert_eq!(
            FailureClass::of_runtime_error("ModelFailure"),
            FailureClass::ModelFailure
        );
    }

    #[test]
    fn a_failure_keeps_its_wire_shape() {
        let failure = Failure::new(FailureClass::InvalidImage, "not a PNG", false);
        let json = serde_json::to_value(&failure).expect("serialises");
        assert_eq!(json["class"], "invalid_image");
        let back: Failure = serde_json::from_value(json).expect("parses");
        assert_eq!(back, failure);
        let unknown: Failure =
            serde_json::from_str(r#"{"class": "sandbox_timedout", "reason": "r"}"#)
                .expect("parses");
        assert_eq!(
            unknown.class,
            FailureClass::Other("sandbox_timedout".to_owned())
        );
    }
}
