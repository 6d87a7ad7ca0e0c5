//! The functions as Lambda runs them: load the models (the init phase),
//! then serve events through the Runtime API with `lambda_runtime`. Used
//! by the `face-crop` and `classify` binaries and by `lambdex function`.
//!
//! A failed init is reported to `/runtime/init/error`, as Lambda's managed
//! runtimes do, so the caller sees why (`Runtime.InitError`) rather than
//! only an exit status.

use lambda_runtime::{Diagnostic, Error, service_fn};
use lambda_runtime_api_client::{PooledClient, body::Body, build_request};

use crate::classify::Task;
use crate::face_crop::{FaceCropConfig, FaceCropper};
use crate::kernels::Choice;
use crate::kernels::simd::Level;
use crate::{MODEL_ENV, handler, models};

/// Where init errors are reported.
const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";
const INIT_ERROR_TYPE: &str = "Runtime.InitError";

/// The face-crop function.
pub async fn face_crop() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let cropper = init(|| {
        let config = FaceCropConfig::from_env()?;
        Ok(FaceCropper::load(&models::models_dir()?, config)?)
    })
    .await?;
    let cropper = &cropper;
    lambda_runtime::run(service_fn(move |event| handler::face_crop(cropper, event))).await
}

/// A classifier function: the model `$LAMBDEX_MODEL` names.
pub async fn classify() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let classifier = init(|| {
        let task: Task = std::env::var(MODEL_ENV)
            .map_err(|_| format!("{MODEL_ENV} must name the model to serve: age or gender"))?
            .parse()?;
        Ok(models::load_classifier(&models::models_dir()?, task)?)
    })
    .await?;
    let classifier = &classifier;
    lambda_runtime::run(service_fn(move |event| {
        handler::classify(classifier, event)
    }))
    .await
}

/// Runs the init phase; a failure is reported to the Runtime API, then
/// returned (the process exits with it). A bad `LAMBDEX_SIMD` or
/// `LAMBDEX_KERNELS` fails it too, before any model is built.
pub async fn init<T>(load: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let checked = || -> Result<T, Error> {
        let level = Level::from_env()?;
        let chosen = Choice::from_env()?;
        tracing::info!(simd = %level, kernels = %chosen, "kernels chosen");
        load()
    };
    match checked() {
        Ok(loaded) => Ok(loaded),
        Err(error) => {
            if let Err(report) = report_init_error(&error.to_string()).await {
                tracing::error!("could not report the init error: {report}");
            }
            Err(error)
        }
    }
}

async fn report_init_error(message: &str) -> Result<(), Error> {
    let diagnostic = Diagnostic {
        error_type: INIT_ERROR_TYPE.to_owned(),
        error_message: message.to_owned(),
    };
    let request = build_request()
        .method("POST")
        .uri(INIT_ERROR_PATH)
        .header("lambda-runtime-function-error-type", INIT_ERROR_TYPE)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&diagnostic)?))?;
    let response = PooledClient::builder().build().call(request).await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the Runtime API answered {}", response.status()).into())
    }
}
