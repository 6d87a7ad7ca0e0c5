//! Fan-out: every configured model gets the image's crops in batches of up
//! to its batch size; all models and all batches run at once (each model's
//! caller caps its own concurrency); each model's answers come back in crop
//! order, or the reason it failed. With a batch window, a batch may share
//! its call with other images' crops ([`crate::batcher`]).

use std::sync::Arc;
use std::time::Instant;

use futures::future::{join_all, try_join_all};
use lambdex_proto::{Base64Text, ClassifyRequest, ClassifyResponse, Crop, ModelInfo, Prediction};

use crate::batcher::Batcher;
use crate::billing::Meter;
use crate::caller::Caller;
use crate::config::FunctionConfig;
use crate::invoke::InvokeError;

/// A classifier model as configured: its name, its function, its batch
/// size, and the batches it shares across images (none without a window).
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub caller: Arc<Caller>,
    pub batch_size: usize,
    batcher: Option<Batcher>,
}

impl Model {
    pub fn new(name: String, caller: Caller, config: &FunctionConfig) -> Self {
        let caller = Arc::new(caller);
        let window = config.batch_window();
        Self {
            name,
            batcher: (!window.is_zero())
                .then(|| Batcher::new(Arc::clone(&caller), config.batch_size(), window)),
            caller,
            batch_size: config.batch_size(),
        }
    }
}

/// One model's predictions for every crop of an image.
#[derive(Debug, Clone)]
pub struct ModelResult {
    pub name: String,
    pub model: ModelInfo,
    /// The function that answered (the configured one or its fallback) and
    /// its version.
    pub function: String,
    pub function_version: Option<String>,
    /// One per crop, in crop order.
    pub predictions: Vec<Prediction>,
    /// Wall-clock time of this model's calls, in milliseconds.
    pub ms: f64,
}

/// Every model over `crops`, concurrently; one result per model, in
/// `models` order.
pub async fn classify_all(
    models: &[Model],
    crops: &[Crop<Base64Text>],
    meter: &Meter,
) -> Vec<Result<ModelResult, InvokeError>> {
    join_all(
        models
            .iter()
            .map(|model| classify_with(model, crops, meter)),
    )
    .await
}

async fn classify_with(
    model: &Model,
    crops: &[Crop<Base64Text>],
    meter: &Meter,
) -> Result<ModelResult, InvokeError> {
    let started = Instant::now();
    let batch_size = model.batch_size.max(1);
    let answers = try_join_all(crops.chunks(batch_size).map(|batch| async move {
        match &model.batcher {
            Some(batcher) => batcher.classify(batch.to_vec(), meter).await,
            None => {
                let request = ClassifyRequest {
                    crops: batch.to_vec(),
                };
                model
                    .caller
                    .call::<_, ClassifyResponse>(&request, meter)
                    .await
            }
        }
    }))
    .await?;
    let mut predictions = Vec::with_capacity(crops.len());
    let mut last = None;
    for (batch, answer) in crops.chunks(batch_size).zip(answers) {
        if answer.response.predictions.len() != batch.len() {
            return Err(InvokeError::BadAnswer {
                function: answer.function,
                reason: format!(
                    "{} predictions for {} crops",
                    answer.response.predictions.len(),
                    batch.len()
                ),
            });
        }
        predictions.extend(answer.response.predictions);
        last = Some((
            answer.response.model,
            answer.function,
            answer.function_version,
        ));
    }
    let (info, function, function_version) = last.ok_or_else(|| InvokeError::BadAnswer {
        function: model.caller.function().to_owned(),
        reason: "no crops to classify".to_owned(),
    })?;
    Ok(ModelResult {
        name: model.name.clone(),
        model: info,
        function,
        function_version,
        predictions,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}
