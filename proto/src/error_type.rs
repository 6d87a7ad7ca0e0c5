//! The `errorType` a lambdex function reports with a handled error: the
//! caller's cue to retry or to give up.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorType {
    /// The image bytes are not a usable image. Permanent.
    InvalidImage,
    /// The request is malformed or over a limit. Permanent.
    InvalidRequest,
    /// A model failed to run. Possibly transient.
    ModelFailure,
    /// Anything else inside the function. Possibly transient.
    Internal,
}

impl ErrorType {
    pub const ALL: [Self; 4] = [
        Self::InvalidImage,
        Self::InvalidRequest,
        Self::ModelFailure,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidImage => "InvalidImage",
            Self::InvalidRequest => "InvalidRequest",
            Self::ModelFailure => "ModelFailure",
            Self::Internal => "Internal",
        }
    }

    /// Whether retrying the same request can only fail the same way.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::InvalidImage | Self::InvalidRequest)
    }

    /// Reads an `errorType` from a function's error answer.
    pub fn parse(error_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == error_type)
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_parses_back_from_its_name() {
        for error_type in ErrorType::ALL {
            assert_eq!(ErrorType::parse(error_type.as_str()), Some(error_type));
        }
        assert_eq!(ErrorType::parse("Runtime.ExitError"), None);
    }

    #[test]
    fn only_bad_input_is_permanent() {
        assert!(ErrorType::InvalidImage.is_permanent());
        assert!(!ErrorType::ModelFailure.is_permanent());
    }
}
