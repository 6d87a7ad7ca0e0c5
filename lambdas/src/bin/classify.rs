//! A classifier Lambda function: serves the model `$LAMBDEX_MODEL` names
//! (`age` or `gender`), loaded once, at cold start.

use lambda_runtime::{Error, service_fn};
use lambdex_lambdas::{MODEL_ENV, Task, handler, models};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let task: Task = std::env::var(MODEL_ENV)
        .map_err(|_| format!("{MODEL_ENV} must name the model to serve: age or gender"))?
        .parse()?;
    let classifier = models::load_classifier(&models::models_dir()?, task)?;
    let classifier = &classifier;
    lambda_runtime::run(service_fn(move |event| {
        handler::classify(classifier, event)
    }))
    .await
}
