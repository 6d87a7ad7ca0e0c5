//! One job through the whole path, a module per stage in the order it
//! runs, each job within its [`deadline`] and its images' [`budget`]: [`fetch`] (behind the [`ssrf`] guard), [`prepare`], [`crop`],
//! [`fanout`] to the classifiers (calls shared across jobs by
//! [`batcher`]), [`aggregate`] (with the [`billing`] of every call).
//! Shared by the queue worker, the admin trigger and `lambdex predict`;
//! never fails: a failure is a document with status `failed`, its class,
//! its reason and whether a retry may help.

pub mod aggregate;
pub mod batcher;
pub mod billing;
pub mod budget;
pub mod crop;
pub mod deadline;
pub mod fanout;
pub mod fetch;
pub mod prepare;
pub mod ssrf;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use aws_sdk_lambda::Client;
use lambdex_proto::{
    Base64Text, Failure, FailureClass, ImageSize, Job, PredictionDoc, StageTiming,
};
use serde::Serialize;
use tokio::sync::Semaphore;

use self::aggregate::{Cropped, Timings};
use crate::config::Config;
use crate::lambda::caller::{CallStats, Caller};
use crate::lambda::invoke::InvokeError;
use crate::metrics;
use crate::pipeline::billing::Meter;
use crate::pipeline::budget::{JobMemory, MemoryBudget, Reservation};
use crate::pipeline::crop::FaceCrop;
use crate::pipeline::fanout::{Model, classify_all};
use crate::pipeline::fetch::{Fetcher, HELD_PER_BODY_BYTE};
use crate::pipeline::prepare::{PrepareError, Prepared, decode_bytes, prepare};
use crate::retry::Retryable as _;

/// Counters of every function, by configured name (`face_crop`, then the
/// models).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineStats {
    pub functions: BTreeMap<String, CallStats>,
}

/// The coordinator's pipeline; one per process, shared by every job.
#[derive(Debug)]
pub struct Pipeline {
    config: Config,
    fetcher: Fetcher,
    face_crop: FaceCrop,
    models: Vec<Model>,
    jobs: Semaphore,
    budget: MemoryBudget,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for downloads: {0}")]
pub struct PipelineError(#[from] reqwest::Error);

impl Pipeline {
    /// The pipeline `config` describes, with its own Lambda client.
    pub async fn new(config: Config) -> Result<Self, PipelineError> {
        let client = crate::lambda::client::from_config(&config.lambda).await;
        Self::with_client(config, client)
    }

    /// The pipeline `config` describes, calling through `client`.
    pub fn with_client(config: Config, client: Client) -> Result<Self, PipelineError> {
        let caller =
            |function| Caller::new(client.clone(), function, &config.retry, &config.breaker);
        Ok(Self {
            fetcher: Fetcher::new(&config.fetch, &config.retry)?,
            face_crop: FaceCrop::new(caller(&config.face_crop), &config.face_crop),
            models: config
                .models
                .iter()
                .map(|(name, model)| Model::new(name.clone(), caller(model), model))
                .collect(),
            jobs: Semaphore::new(config.pipeline.max_jobs_in_flight),
            budget: MemoryBudget::new(config.pipeline.memory_budget),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first function that cannot be called now (its breaker open, no
    /// fallback), and when it may be tried again; `None` when every
    /// function can be called. The worker stops taking jobs meanwhile,
    /// rather than failing them on a function that is down.
    pub fn unavailable(&self) -> Option<(String, tokio::time::Instant)> {
        std::iter::once(&self.face_crop.caller)
            .chain(self.models.iter().map(|model| &model.caller))
            .find_map(|caller| {
                caller
                    .unavailable_until()
                    .map(|until| (caller.function().to_owned(), until))
            })
    }

    pub fn stats(&self) -> PipelineStats {
        let mut functions =
            BTreeMap::from([("face_crop".to_owned(), self.face_crop.caller.stats())]);
        for model in &self.models {
            functions.insert(model.name.clone(), model.caller.stats());
        }
        PipelineStats { functions }
    }

    /// The document for `job`: its image downloaded, then the stages.
    pub async fn process(&self, job: &Job) -> PredictionDoc {
        self.process_keeping(job, false).await.0
    }

    /// As [`Self::process`], also giving back the downloaded image (when
    /// the download succeeded), e.g. to draw the faces on it.
    pub async fn process_keeping_image(&self, job: &Job) -> (PredictionDoc, Option<Vec<u8>>) {
        self.process_keeping(job, true).await
    }

    #[tracing::instrument(skip_all, fields(job_id = %job.job_id))]
    async fn process_keeping(&self, job: &Job, keep: bool) -> (PredictionDoc, Option<Vec<u8>>) {
        let _slot = self.jobs.acquire().await.expect("never closed");
        let mut kept = None;
        let started = Instant::now();
        let meter = Meter::default();
        let memory = JobMemory::new(&self.budget);
        let work = async {
            let mut timings = Timings::default();
            let fetched = self.fetcher.fetch(&job.image_url, &memory).await;
            timings.record("fetch", ms_since(started));
            match fetched {
                Ok(fetched) => {
                    let (image, held) = (fetched.bytes, fetched.reservation);
                    if keep {
                        kept = Some(image.clone());
                    }
                    self.run(job, image, held, timings, &meter, &memory).await
                }
                Err(error) => {
                    let failure =
                        Failure::new(error.class(), error.to_string(), error.is_retryable());
                    aggregate::failed(job, failure, timings)
                }
            }
        };
        let doc = self.within_deadline(job, &memory, work).await;
        (self.finished(doc, &meter, started), kept)
    }

    /// The document for `job` whose image bytes are already here (a file
    /// given to `lambdex predict`, an upload to the admin trigger).
    pub async fn process_bytes(&self, job: &Job, image: Vec<u8>) -> PredictionDoc {
        let _slot = self.jobs.acquire().await.expect("never closed");
        let started = Instant::now();
        let meter = Meter::default();
        let memory = JobMemory::new(&self.budget);
        let work = async {
            let held = memory.reserve(image.len() * HELD_PER_BODY_BYTE).await;
            self.run(job, image, held, Timings::default(), &meter, &memory)
                .await
        };
        let doc = self.within_deadline(job, &memory, work).await;
        self.finished(doc, &meter, started)
    }

    /// `work`'s document, or a failed one (retryable) past the job's
    /// [`deadline`]: dropping `work` lets go of its slot, its memory, its
    /// place in a batch.
    async fn within_deadline(
        &self,
        job: &Job,
        memory: &JobMemory,
        work: impl Future<Output = PredictionDoc>,
    ) -> PredictionDoc {
        deadline::within(&self.config.pipeline, memory, work)
            .await
            .unwrap_or_else(|late| {
                aggregate::failed(
                    job,
                    Failure::new(FailureClass::JobTimeout, late.to_string(), true),
                    Timings::default(),
                )
            })
    }

    /// The document with its bill (every call's `REPORT` line, the failed
    /// ones included) and its total time.
    fn finished(&self, mut doc: PredictionDoc, meter: &Meter, started: Instant) -> PredictionDoc {
        doc.billing = meter.billing(&self.config.cost);
        with_total(doc, started)
    }

    async fn run(
        &self,
        job: &Job,
        image: Vec<u8>,
        held: Reservation,
        mut timings: Timings,
        meter: &Meter,
        memory: &JobMemory,
    ) -> PredictionDoc {
        let doc = self
            .stages(job, image, held, &mut timings, meter, memory)
            .await;
        doc.unwrap_or_else(|failure| aggregate::failed(job, failure, timings))
    }

    /// The stages after the download; `held` is the image's memory, given
    /// back once face-crop has answered.
    async fn stages(
        &self,
        job: &Job,
        image: Vec<u8>,
        held: Reservation,
        timings: &mut Timings,
        meter: &Meter,
        memory: &JobMemory,
    ) -> Result<PredictionDoc, Failure> {
        let started = Instant::now();
        let image_config = self.config.image.clone();
        let invalid = |error: PrepareError| Failure::new(error.class(), error.to_string(), false);
        let decoded = decode_bytes(&image, &image_config).map_err(invalid)?;
        let (prepared, held) = if decoded == 0 {
            // Only the header is read: cheap enough for this thread.
            (prepare(image, &image_config), held)
        } else {
            // Decoding holds its pixels until the image is scaled; reserved
            // with the download's share, never while holding it.
            let mut held = memory.grow(held, decoded).await;
            let _decoding = held.split_off(decoded);
            let prepared = tokio::task::spawn_blocking(move || prepare(image, &image_config))
                .await
                .map_err(|error| Failure::new(FailureClass::Internal, error.to_string(), true))?;
            (prepared, held)
        };
        let Prepared {
            bytes,
            scale,
            original,
        } = prepared.map_err(invalid)?;
        timings.record("prepare", ms_since(started));

        let started = Instant::now();
        let crop = self.face_crop.crop(Base64Text::encode(&bytes), meter).await;
        drop((bytes, held));
        timings.record("crop", ms_since(started));
        let crop = crop.map_err(failure_of)?;
        let cropped = Cropped {
            response: crop.response,
            function_version: crop.function_version,
            scale,
            original: original.map(|(width, height)| ImageSize { width, height }),
        };

        let faces = &cropped.response.faces;
        if faces.is_empty() {
            return Ok(aggregate::completed(
                job,
                &cropped,
                &[],
                None,
                timings.clone(),
            ));
        }
        let mut models = Vec::with_capacity(self.models.len());
        let mut failure = None;
        for (model, result) in self
            .models
            .iter()
            .zip(classify_all(&self.models, faces, meter).await)
        {
            match result {
                Ok(result) => {
                    timings.record(&model.name, result.ms);
                    models.push(result);
                }
                Err(error) => {
                    if !self.config.pipeline.partial_results {
                        return Err(failure_of(error));
                    }
                    failure.get_or_insert(failure_of(error));
                }
            }
        }
        Ok(aggregate::completed(
            job,
            &cropped,
            &models,
            failure,
            timings.clone(),
        ))
    }
}

/// A failed call as the job's failure. An open breaker is transient for
/// the job: it may pass once the function recovers.
fn failure_of(error: InvokeError) -> Failure {
    let retryable = error.is_retryable() || matches!(error, InvokeError::CircuitOpen { .. });
    Failure::new(error.class(), error.to_string(), retryable)
}

fn with_total(mut doc: PredictionDoc, started: Instant) -> PredictionDoc {
    doc.timings.push(StageTiming {
        stage: "total".to_owned(),
        ms: ms_since(started),
    });
    metrics::prediction(
        doc.status.as_str(),
        doc.billing
            .as_ref()
            .map(|billing| billing.estimated_cost_usd),
    );
    doc
}

pub(crate) fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
