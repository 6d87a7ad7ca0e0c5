//! Joining the functions' answers into one document per image, with the
//! boxes in the original image's pixels.

use chrono::Utc;
use lambdex_proto::{
    AgeDoc, BBox, Base64Text, FaceCropResponse, FaceDoc, Failure, GenderDoc, ImageSize, Job,
    ModelRole, ModelUsed, Prediction, PredictionDoc, SchemaVersion, StageTiming, Status,
};

use crate::pipeline::fanout::ModelResult;

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
        image_scale: None,
        faces: Vec::new(),
        models: Vec::new(),
        timings: timings.0,
        billing: None,
        status,
        failure: None,
        processed_at: Utc::now(),
    }
}

/// The document of a job that failed at some stage.
pub fn failed(job: &Job, failure: Failure, timings: Timings) -> PredictionDoc {
    let mut doc = base(job, Status::Failed, timings);
    doc.failure = Some(failure);
    doc
}

/// The face-crop function's answer, and how the image sent relates to the
/// original.
#[derive(Debug, Clone)]
pub struct Cropped {
    pub response: FaceCropResponse<Base64Text>,
    pub function_version: Option<String>,
    /// Sent pixels per original pixel.
    pub scale: f64,
    /// The original's upright size, when the image was scaled.
    pub original: Option<ImageSize>,
}

/// The document of a job whose image was cropped and whose faces, if any,
/// the models classified; `failure` names a model that failed, whose
/// fields stay empty (status `partial`).
pub fn completed(
    job: &Job,
    cropped: &Cropped,
    models: &[ModelResult],
    failure: Option<Failure>,
    timings: Timings,
) -> PredictionDoc {
    let response = &cropped.response;
    let status = match (&failure, response.faces.is_empty()) {
        (_, true) => Status::NoFaces,
        (Some(_), false) => Status::Partial,
        (None, false) => Status::Ok,
    };
    let mut doc = base(job, status, timings);
    doc.failure = failure;
    doc.image = Some(cropped.original.unwrap_or(response.image));
    let scaled = (cropped.scale - 1.0).abs() > f64::EPSILON;
    doc.image_scale = scaled.then_some(cropped.scale);
    doc.models.push(ModelUsed {
        role: ModelRole::Detector,
        id: response.detector.id.clone(),
        sha256: response.detector.sha256.clone(),
        function_version: cropped.function_version.clone(),
    });
    doc.faces = response
        .faces
        .iter()
        .map(|face| FaceDoc {
            bbox: if scaled {
                unscale(face.bbox, cropped.scale)
            } else {
                face.bbox
            },
            score: face.score,
            age: None,
            gender: None,
        })
        .collect();
    for result in models {
        doc.models.push(ModelUsed {
            role: role(result),
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

/// A box in sent pixels, in original pixels.
fn unscale(bbox: BBox, scale: f64) -> BBox {
    let back = |v: f32| (f64::from(v) / scale) as f32;
    BBox {
        x: back(bbox.x),
        y: back(bbox.y),
        width: back(bbox.width),
        height: back(bbox.height),
    }
}

/// What a model predicts, from its answers.
fn role(result: &ModelResult) -> ModelRole {
    match result.predictions.first() {
        Some(Prediction::Gender(_)) => ModelRole::Gender,
        _ => ModelRole::Age,
    }
}
