//! The functions a job calls, behind one interface: in-process here (the
//! embedded default of `lambdex predict`); through the Lambda Invoke API
//! once the local Lambda and the pipeline land.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use lambdex_lambdas::{Classifier, FaceCropConfig, FaceCropper, Task, handler, models};
use lambdex_proto::{
    ClassifyRequest, ClassifyResponse, ErrorType, FaceCropRequest, FaceCropResponse,
};

/// A function's answer and the version that gave it.
#[derive(Debug, Clone)]
pub struct Invoked<T> {
    pub response: T,
    /// The Lambda version that ran; `None` in-process.
    pub function_version: Option<String>,
}

/// Why a function call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and reported a handled error.
    #[error("{function} failed ({error_type}): {message}")]
    Function {
        function: String,
        error_type: ErrorType,
        message: String,
    },
    /// The call could not be made or did not finish.
    #[error("{function} could not be called: {reason}")]
    Call { function: String, reason: String },
}

impl InvokeError {
    /// A short, stable class for a failed document: the function's error
    /// type, or `invoke_failed`.
    pub fn class(&self) -> String {
        match self {
            Self::Function { error_type, .. } => snake_case(error_type.as_str()),
            Self::Call { .. } => "invoke_failed".to_owned(),
        }
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
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

/// The functions' handlers, run on this machine's blocking threads.
#[derive(Debug, Clone)]
pub struct InProcess {
    cropper: Arc<FaceCropper>,
    age: Arc<Classifier>,
    gender: Arc<Classifier>,
}

impl InProcess {
    /// Loads every model from `models_dir`.
    pub fn load(
        models_dir: &Path,
        config: FaceCropConfig,
    ) -> Result<Self, lambdex_lambdas::onnx::LoadError> {
        Ok(Self {
            cropper: Arc::new(FaceCropper::load(models_dir, config)?),
            age: Arc::new(models::load_classifier(models_dir, Task::Age)?),
            gender: Arc::new(models::load_classifier(models_dir, Task::Gender)?),
        })
    }

    pub fn cropper(&self) -> &FaceCropper {
        &self.cropper
    }

    pub fn classifier(&self, model: Task) -> &Arc<Classifier> {
        match model {
            Task::Age => &self.age,
            Task::Gender => &self.gender,
        }
    }
}

fn event<T>(payload: T) -> LambdaEvent<T> {
    LambdaEvent::new(payload, Context::default())
}

/// Runs a handler future to completion on a blocking thread: the models are
/// CPU-bound and must not stall the async workers.
async fn on_blocking_thread<T, F>(function: &str, work: F) -> Result<Invoked<T>, InvokeError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, lambdex_lambdas::FunctionError> + Send + 'static,
{
    let outcome = tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| InvokeError::Call {
            function: function.to_owned(),
            reason: format!("the handler panicked: {error}"),
        })?;
    outcome
        .map(|response| Invoked {
            response,
            function_version: None,
        })
        .map_err(|error| InvokeError::Function {
            function: function.to_owned(),
            error_type: error.error_type(),
            message: error.to_string(),
        })
}

impl Functions for InProcess {
    async fn face_crop(
        &self,
        request: FaceCropRequest,
    ) -> Result<Invoked<FaceCropResponse>, InvokeError> {
        let cropper = Arc::clone(&self.cropper);
        on_blocking_thread("face-crop", move || {
            block_on_ready(handler::face_crop(&cropper, event(request)))
        })
        .await
    }

    async fn classify(
        &self,
        model: Task,
        request: ClassifyRequest,
    ) -> Result<Invoked<ClassifyResponse>, InvokeError> {
        let classifier = Arc::clone(self.classifier(model));
        on_blocking_thread(model.name(), move || {
            block_on_ready(handler::classify(&classifier, event(request)))
        })
        .await
    }
}

/// The handlers are async for `lambda_runtime`, but never wait on anything:
/// poll them once on this thread.
fn block_on_ready<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_are_snake_case_error_types() {
        let error = InvokeError::Function {
            function: "face-crop".into(),
            error_type: ErrorType::InvalidImage,
            message: "x".into(),
        };
        assert_eq!(error.class(), "invalid_image");
    }
}
