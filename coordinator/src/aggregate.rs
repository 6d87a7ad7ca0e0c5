//! Joining the functions' answers into one document per image.

use chrono::Utc;
use lambdex_lambdas::Task;
use lambdex_proto::{
    AgeDoc, FaceCropResponse, FaceDoc, Failure, GenderDoc, Job, ModelRole, ModelUsed, Prediction,
    PredictionDoc, SchemaVersion, StageTiming, Status,
};

use crate::fanout::ModelResult;
use crate::functions::Invoked;

/// Wall-clock stage times, in milliseconds, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Timings(Vec<StageTiming>);

impl Timings {
    pub fn record(&mut self, stage: &str, ms: f64) {
        self.0.push(StageTiming {
            stage: stage.to_owned(),
            ms,
        });
    }
}

/// A document with the job's identity and nothing else yet.
fn base(job: &Job, status: Status, timings: Timings) -> PredictionDoc {
    PredictionDoc {
        schema_version: SchemaVersion::CURRENT,
        job_id: job.job_id.clone(),
        image_url: job.image_url.clone(),
        metadata: job.metadata.clone(),
        image: None,
        faces: Vec::new(),
        models: Vec::new(),
        timings: timings.0,
        status,
        failure: None,
        processed_at: Utc::now(),
    }
}

/// The document of a job that failed at some stage.
pub fn failed(job: &Job, class: &str, reason: String, timings: Timings) -> PredictionDoc {
    let mut doc = base(job, Status::Failed, timings);
    doc.failure = Some(Failure {
        class: class.to_owned(),
        reason,
    });
    doc
}

/// The document of a job whose image was cropped and whose faces, if any,
/// every model classified.
pub fn completed(
    job: &Job,
    crop: &Invoked<FaceCropResponse>,
    models: &[ModelResult],
    timings: Timings,
) -> PredictionDoc {
    let response = &crop.response;
    let status = if response.faces.is_empty() {
        Status::NoFaces
    } else {
        Status::Ok
    };
    let mut doc = base(job, status, timings);
    doc.image = Some(response.image);
    doc.models.push(ModelUsed {
        role: ModelRole::Detector,
        id: response.detector.id.clone(),
        sha256: response.detector.sha256.clone(),
        function_version: crop.function_version.clone(),
    });
    doc.faces = response
        .faces
        .iter()
        .map(|face| FaceDoc {
            bbox: face.bbox,
            score: face.score,
            age: None,
            gender: None,
        })
        .collect();
    for result in models {
        doc.models.push(ModelUsed {
            role: match result.task {
                Task::Age => ModelRole::Age,
                Task::Gender => ModelRole::Gender,
            },
            id: result.model.id.clone(),
            sha256: result.model.sha256.clone(),
            function_version: result.function_version.clone(),
        });
        for (face, prediction) in doc.faces.iter_mut().zip(&result.predictions) {
            match prediction {
                Prediction::Age(age) => {
                    face.age = Some(AgeDoc {
                        years: age.years,
                        std_dev: age.std_dev,
                    });
                }
                Prediction::Gender(gender) => {
                    face.gender = Some(GenderDoc {
                        label: gender.label,
                        probability: gender.probability,
                    });
                }
            }
        }
    }
    doc
}
