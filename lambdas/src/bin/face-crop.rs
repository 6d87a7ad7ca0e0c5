//! The face-crop Lambda function. Loads both detectors once, at cold start.

use lambda_runtime::{Error, service_fn};
use lambdex_lambdas::{FaceCropConfig, FaceCropper, handler, models};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let cropper = FaceCropper::load(&models::models_dir()?, FaceCropConfig::from_env()?)?;
    let cropper = &cropper;
    lambda_runtime::run(service_fn(move |event| handler::face_crop(cropper, event))).await
}
