//! What a function answers when it cannot: a typed error whose Lambda
//! `errorType` tells the coordinator whether a retry can help.

use lambda_runtime::Diagnostic;
use lambdex_proto::ErrorType;

use crate::classify::ClassifyError;
use crate::decode::DecodeError;
use crate::detect::DetectError;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("invalid image: {0}")]
    InvalidImage(#[from] DecodeError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl FunctionError {
    pub fn error_type(&self) -> ErrorType {
        match self {
            Self::InvalidImage(_) => ErrorType::InvalidImage,
            Self::InvalidRequest(_) => ErrorType::InvalidRequest,
            Self::Detect(_) | Self::Classify(_) => ErrorType::ModelFailure,
            Self::Internal(_) => ErrorType::Internal,
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Self {
        Diagnostic {
            error_type: error.error_type().as_str().to_owned(),
            error_message: error.to_string(),
        }
    }
}
