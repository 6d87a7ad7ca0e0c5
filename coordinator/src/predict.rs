//! One image through the whole path: crop, fan out to the classifiers,
//! aggregate. Generic over where the functions run.

use std::time::Instant;

use lambdex_lambdas::Task;
use lambdex_proto::{Base64Bytes, FaceCropRequest, Job, PredictionDoc};

use crate::aggregate::{self, Timings};
use crate::fanout::{DEFAULT_BATCH_SIZE, classify_all};
use crate::functions::Functions;

/// How an image is processed once its bytes are in hand.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    /// The classifier models every face goes through.
    pub models: Vec<Task>,
    /// Crops per classify call.
    pub batch_size: usize,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self {
            models: Task::ALL.to_vec(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// The document for `job`, whose image bytes are `image`. Never fails: a
/// failure is a document with status `failed` and the reason.
pub async fn predict<F: Functions>(
    functions: &F,
    config: &PredictConfig,
    job: &Job,
    image: Vec<u8>,
    mut timings: Timings,
) -> PredictionDoc {
    let started = Instant::now();
    let crop = match functions
        .face_crop(FaceCropRequest {
            image: Base64Bytes(image),
        })
        .await
    {
        Ok(crop) => crop,
        Err(error) => {
            timings.record("crop", ms_since(started));
            return aggregate::failed(job, &error.class(), error.to_string(), timings);
        }
    };
    timings.record("crop", ms_since(started));

    let crops: Vec<_> = crop
        .response
        .faces
        .iter()
        .map(|face| face.crop.clone())
        .collect();
    let models = if crops.is_empty() {
        Vec::new()
    } else {
        match classify_all(functions, &config.models, &crops, config.batch_size).await {
            Ok(models) => models,
            Err(error) => {
                return aggregate::failed(job, &error.class(), error.to_string(), timings);
            }
        }
    };
    for model in &models {
        timings.record(model.task.name(), model.ms);
    }
    aggregate::completed(job, &crop, &models, timings)
}

pub(crate) fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
