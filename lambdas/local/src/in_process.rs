//! Functions that run inside the local Lambda's own process: the project's
//! handlers without a separate binary (how `lambdex predict` runs them), and
//! any handler a program registers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use lambda_runtime::Diagnostic;
use lambdex_proto::ClassifyRequest;

use lambdex_functions::classify::{Classifier, Task};
use lambdex_functions::error::FunctionError;
use lambdex_functions::face_crop::{FaceCropConfig, FaceCropper};
use lambdex_functions::handler::{FaceCropEvent, classify_request, face_crop_event};
use lambdex_functions::models::{self, MODELS_DIR_ENV};

/// A function whose instances live in this process.
pub trait InProcessFunction: Send + Sync + fmt::Debug {
    /// An instance's init phase (its cold start), given the function's
    /// environment.
    fn init(
        &self,
        environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic>;
}

/// One warm instance: handles one event at a time, on a blocking thread.
pub trait InProcessHandler: Send {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic>;
}

/// The project's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    FaceCrop,
    Classifier(Task),
}

impl FromStr for Builtin {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "face-crop" => Ok(Self::FaceCrop),
            other => other
                .parse()
                .map(Self::Classifier)
                .map_err(|_| format!("no builtin function {other:?}: face-crop, age or gender")),
        }
    }
}

fn diagnostic(error_type: &str, message: impl fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: message.to_string(),
    }
}

/// The function's answer as the runtime would serialise it.
fn respond<T: serde::Serialize>(result: Result<T, FunctionError>) -> Result<Vec<u8>, Diagnostic> {
    let response = result.map_err(Diagnostic::from)?;
    serde_json::to_vec(&response).map_err(|error| diagnostic("Runtime.SerializationError", error))
}

fn parse<'a, T: serde::Deserialize<'a>>(event: &'a [u8]) -> Result<T, Diagnostic> {
    // The message lambda_runtime gives an event its handler cannot read.
    serde_json::from_slice(event).map_err(|error| {
        diagnostic(
            "Runtime.UnmarshalError",
            format!(
                "failed to deserialize the incoming data into the function's payload type: {error}"
            ),
        )
    })
}

impl InProcessFunction for Builtin {
    fn init(
        &self,
        environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        let init_error = |error: &dyn fmt::Display| diagnostic("Runtime.InitError", error);
        let dir = match environment.get(MODELS_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => models::models_dir().map_err(|e| init_error(&e))?,
        };
        Ok(match self {
            Self::FaceCrop => {
                let config = FaceCropConfig::from_lookup(|name| environment.get(name).cloned())
                    .map_err(|e| init_error(&e))?;
                Box::new(FaceCropper::load(&dir, config).map_err(|e| init_error(&e))?)
            }
            Self::Classifier(task) => {
                Box::new(models::load_classifier(&dir, *task).map_err(|e| init_error(&e))?)
            }
        })
    }
}

impl InProcessHandler for FaceCropper {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        let event: FaceCropEvent = parse(event)?;
        respond(face_crop_event(self, event))
    }
}

impl InProcessHandler for Classifier {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        let request: ClassifyRequest = parse(event)?;
        respond(classify_request(self, &request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_named_as_the_functions_are() {
        assert_eq!("face-crop".parse(), Ok(Builtin::FaceCrop));
        assert_eq!("gender".parse(), Ok(Builtin::Classifier(Task::Gender)));
        assert!("nose".parse::<Builtin>().is_err());
    }
}
