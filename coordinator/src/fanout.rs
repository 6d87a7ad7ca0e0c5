//! Fan-out: every classifier model gets the image's crops, in batches, all
//! models at once; each model's answers come back in crop order.

use futures::future::try_join_all;
use lambdex_lambdas::Task;
use lambdex_proto::{ClassifyRequest, Crop, ModelInfo, Prediction};

use crate::functions::{Functions, InvokeError};

/// Crops per classify call by default: one call for most images, and well
/// under the function's limit and Lambda's 6 MB payload.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// One model's predictions for every crop of an image.
#[derive(Debug, Clone)]
pub struct ModelResult {
    pub task: Task,
    pub model: ModelInfo,
    pub function_version: Option<String>,
    /// One per crop, in crop order.
    pub predictions: Vec<Prediction>,
    /// Wall-clock time of this model's calls, in milliseconds.
    pub ms: f64,
}

/// Runs every model in `tasks` over `crops`, `batch_size` crops a call.
pub async fn classify_all<F: Functions>(
    functions: &F,
    tasks: &[Task],
    crops: &[Crop],
    batch_size: usize,
) -> Result<Vec<ModelResult>, InvokeError> {
    try_join_all(
        tasks
            .iter()
            .map(|&task| classify_with(functions, task, crops, batch_size)),
    )
    .await
}

async fn classify_with<F: Functions>(
    functions: &F,
    task: Task,
    crops: &[Crop],
    batch_size: usize,
) -> Result<ModelResult, InvokeError> {
    let started = std::time::Instant::now();
    let batches = try_join_all(crops.chunks(batch_size.max(1)).map(|batch| {
        functions.classify(
            task,
            ClassifyRequest {
                crops: batch.to_vec(),
            },
        )
    }))
    .await?;
    let mut predictions = Vec::with_capacity(crops.len());
    let mut model = None;
    let mut function_version = None;
    for (batch, answer) in crops.chunks(batch_size.max(1)).zip(batches) {
        if answer.response.predictions.len() != batch.len() {
            return Err(InvokeError::Call {
                function: task.name().to_owned(),
                reason: format!(
                    "answered {} predictions for {} crops",
                    answer.response.predictions.len(),
                    batch.len()
                ),
            });
        }
        predictions.extend(answer.response.predictions);
        model = Some(answer.response.model);
        function_version = answer.function_version;
    }
    Ok(ModelResult {
        task,
        model: model.unwrap_or_else(|| ModelInfo {
            id: task.model().0.to_owned(),
            sha256: String::new(),
        }),
        function_version,
        predictions,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}
