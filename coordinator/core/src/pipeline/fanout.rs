//! Fan-out: every configured model gets the image's crops in batches of up
//! to its batch size; all models and all batches run at once (each model's
//! caller caps its own concurrency); each model's answers come back in crop
//! order, or the reason it failed. With a batch window, a batch may share
//! its call with other images' crops ([`crate::pipeline::batcher`]).

use std::sync::Arc;
use std::time::Instant;

use futures::future::{join_all, try_join_all};
use lambdex_proto::{
    Base64Text, ClassifyRequest, ClassifyResponse, Crop, CroppedFace, ModelInfo, Prediction,
};

use crate::config::{BATCH_MAX_REQUEST_BYTES, FunctionConfig};
use crate::lambda::caller::Caller;
use crate::lambda::invoke::InvokeError;
use crate::pipeline::batcher::{Batched, Batcher, Limits, call_alone, cut};
use crate::pipeline::billing::Meter;

/// A classifier model as configured: its name, its function, its batch
/// size, and the batches it shares across images (none without a window).
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub caller: Arc<Caller>,
    pub batch_size: usize,
    /// The side of the chip this model reads (`None`: each face's main crop).
    pub chip_size: Option<u32>,
    batcher: Option<Batcher<ClassifyBatch>>,
}

/// A classifier's batch: crops, each answered by one prediction.
#[derive(Debug)]
pub struct ClassifyBatch;

impl Batched for ClassifyBatch {
    type Item = Crop<Base64Text>;
    type Request = ClassifyRequest<Base64Text>;
    type Response = ClassifyResponse;
    type Part = ClassifyResponse;

    fn bytes(crop: &Crop<Base64Text>) -> usize {
        crop.data.as_str().len()
    }

    fn request(crops: Vec<Crop<Base64Text>>) -> ClassifyRequest<Base64Text> {
        ClassifyRequest { crops }
    }

    fn split(response: ClassifyResponse, sizes: &[usize]) -> Result<Vec<ClassifyResponse>, String> {
        let got = response.predictions.len();
        let parts = cut(response.predictions, sizes).ok_or_else(|| {
            format!(
                "{got} predictions for {} crops",
                sizes.iter().sum::<usize>()
            )
        })?;
        Ok(parts
            .into_iter()
            .map(|predictions| ClassifyResponse {
                model: response.model.clone(),
                predictions,
                timings: response.timings,
            })
            .collect())
    }
}

impl Model {
    pub fn new(name: String, caller: Caller, config: &FunctionConfig) -> Self {
        let caller = Arc::new(caller);
        let window = config.batch_window();
        Self {
            name,
            batcher: (!window.is_zero()).then(|| {
                let limits = Limits {
                    items: config.batch_size(),
                    bytes: BATCH_MAX_REQUEST_BYTES,
                    window,
                };
                Batcher::new(Arc::clone(&caller), limits)
            }),
            caller,
            batch_size: config.batch_size(),
            chip_size: config.chip_size,
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

/// Every model over the image's faces, concurrently, each reading the
/// chip of its size; one result per model, in `models` order.
pub async fn classify_all(
    models: &[Model],
    faces: &[CroppedFace<Base64Text>],
    meter: &Meter,
) -> Vec<Result<ModelResult, InvokeError>> {
    join_all(models.iter().map(|model| {
        let crops: Vec<_> = faces
            .iter()
            .map(|face| face.chip(model.chip_size).clone())
            .collect();
        async move { classify_with(model, &crops, meter).await }
    }))
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
            Some(batcher) => batcher.submit(batch.to_vec(), meter).await,
            None => call_alone::<ClassifyBatch>(&model.caller, batch.to_vec(), meter).await,
        }
    }))
    .await?;
    // Each answer holds its batch's predictions, counted by `split`.
    let mut predictions = Vec::with_capacity(crops.len());
    let mut last = None;
    for answer in answers {
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
