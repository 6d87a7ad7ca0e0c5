//! Fake functions, in-process on the local Lambda, for the tests and the
//! benches: the project's own functions with a fault wrapped round them
//! ([`Faulty`]), and functions that only sleep and answer a canned answer
//! of the right shape ([`Sleeper`]), so the coordinator can be measured
//! without the models' cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lambda_runtime::Diagnostic;
use lambdex_functions::Task;
use lambdex_local::{
    Builtin, FunctionSpec, Handler, InProcessFunction, InProcessHandler, LocalConfig,
};
use lambdex_proto::{
    AgePrediction, BBox, Base64Bytes, ClassifyRequest, ClassifyResponse, ClassifyTimings, Crop,
    CropFormat, CropTimings, CroppedFace, FaceCropBatchRequest, FaceCropBatchResponse,
    FaceCropResponse, Gender, GenderPrediction, ImageResult, ImageSize, Keypoints, ModelInfo,
    Point, Prediction,
};
use serde::de::IgnoredAny;

use crate::models_dir;

/// When a [`Faulty`] function fails.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Every call.
    Always,
    /// The first calls, this many of them over all instances together.
    First(Arc<AtomicUsize>),
    /// Every request whose bytes hold these (an image's base64, say).
    OnContent(Vec<u8>),
    /// About this share of calls, at random.
    Rate(f64),
    /// While the switch is on (an outage a test turns on and off).
    While(Arc<AtomicBool>),
}

/// A function that fails as `fault` says, with `error_type`; otherwise
/// (when it wraps one) the wrapped function answers.
#[derive(Debug, Clone)]
pub struct Faulty {
    inner: Option<Arc<dyn InProcessFunction>>,
    /// The project's function `inner` is, for its environment.
    builtin: Option<Builtin>,
    fault: Fault,
    error: Diagnostic,
}

impl Faulty {
    /// Fails every call with `error_type` (`ModelFailure`: retryable).
    pub fn always(error_type: &str) -> Self {
        Self {
            inner: None,
            builtin: None,
            fault: Fault::Always,
            error: diagnostic(error_type, "failed on purpose, every time"),
        }
    }

    /// `builtin`, failing its first `failures` calls with a retryable
    /// `ModelFailure`.
    pub fn first_calls(builtin: Builtin, failures: usize) -> Self {
        Self {
            inner: Some(Arc::new(builtin)),
            builtin: Some(builtin),
            fault: Fault::First(Arc::new(AtomicUsize::new(failures))),
            error: diagnostic("ModelFailure", "the model failed this time"),
        }
    }

    /// `builtin`, failing every request that holds `poison` as one that
    /// crashes on it would (`Internal`).
    pub fn on_content(builtin: Builtin, poison: &[u8]) -> Self {
        Self {
            inner: Some(Arc::new(builtin)),
            builtin: Some(builtin),
            fault: Fault::OnContent(poison.to_vec()),
            error: diagnostic("Internal", "the function fell over on this request"),
        }
    }

    /// `inner` failing as `fault` says, like a crashed runtime
    /// (`Runtime.ExitError`: retryable, and it trips a breaker).
    pub fn crashing(inner: Arc<dyn InProcessFunction>, fault: Fault) -> Self {
        Self {
            inner: Some(inner),
            builtin: None,
            fault,
            error: diagnostic("Runtime.ExitError", "the runtime exited (on purpose)"),
        }
    }

    /// The function as the local Lambda runs it, with the environment
    /// the project gives the function it wraps.
    pub fn spec(self) -> FunctionSpec {
        let environment = self
            .builtin
            .map(|builtin| project_environment(builtin_name(builtin)))
            .unwrap_or_default();
        let mut spec = FunctionSpec::new(Handler::InProcess(Arc::new(self)));
        spec.latest.environment = environment;
        spec
    }
}

fn builtin_name(builtin: Builtin) -> &'static str {
    match builtin {
        Builtin::FaceCrop => "face-crop",
        Builtin::Classifier(Task::Age) => "age",
        Builtin::Classifier(Task::Gender) => "gender",
    }
}

/// The environment the project's function `name` runs with (where the
/// weights are, and its model).
pub fn project_environment(name: &str) -> BTreeMap<String, String> {
    LocalConfig::project_defaults(None, models_dir()).functions[name]
        .latest
        .environment
        .clone()
}

fn diagnostic(error_type: &str, message: &str) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: message.to_owned(),
    }
}

impl InProcessFunction for Faulty {
    fn init(
        &self,
        environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        let inner = self
            .inner
            .as_ref()
            .map(|inner| inner.init(environment))
            .transpose()?;
        Ok(Box::new(FaultyInstance {
            inner,
            fault: self.fault.clone(),
            error: self.error.clone(),
        }))
    }
}

struct FaultyInstance {
    inner: Option<Box<dyn InProcessHandler>>,
    fault: Fault,
    error: Diagnostic,
}

impl InProcessHandler for FaultyInstance {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        let fails = match &self.fault {
            Fault::Always => true,
            Fault::First(left) => left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok(),
            Fault::OnContent(poison) => event
                .windows(poison.len().max(1))
                .any(|window| window == poison),
            Fault::Rate(share) => fastrand::f64() < *share,
            Fault::While(on) => on.load(Ordering::SeqCst),
        };
        match &mut self.inner {
            Some(inner) if !fails => inner.handle(event),
            _ => Err(self.error.clone()),
        }
    }
}

/// What a [`Sleeper`] answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canned {
    /// face-crop, finding this many faces in every image.
    Crop {
        faces: usize,
    },
    Age,
    Gender,
}

/// A function that sleeps its latency, then answers a canned answer of
/// the right shape: the coordinator's load without the models' cost.
#[derive(Debug, Clone, Copy)]
pub struct Sleeper {
    pub latency: Duration,
    pub canned: Canned,
}

impl Sleeper {
    /// The project's three functions as sleepers of `latency`, face-crop
    /// finding `faces` in every image, by name.
    pub fn project(latency: Duration, faces: usize) -> [(&'static str, Self); 3] {
        let sleeper = |canned| Self { latency, canned };
        [
            ("face-crop", sleeper(Canned::Crop { faces })),
            ("age", sleeper(Canned::Age)),
            ("gender", sleeper(Canned::Gender)),
        ]
    }
}

struct SleeperInstance {
    sleeper: Sleeper,
    /// face-crop's answer for every image.
    answer: Option<FaceCropResponse>,
}

impl InProcessFunction for Sleeper {
    fn init(
        &self,
        _environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        Ok(Box::new(SleeperInstance {
            sleeper: *self,
            answer: match self.canned {
                Canned::Crop { faces } => Some(crop_answer(faces)),
                Canned::Age | Canned::Gender => None,
            },
        }))
    }
}

impl InProcessHandler for SleeperInstance {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        std::thread::sleep(self.sleeper.latency);
        let fail = |error: serde_json::Error| diagnostic("InvalidRequest", &error.to_string());
        match (&self.answer, self.sleeper.canned) {
            (Some(answer), _) => {
                let request: FaceCropBatchRequest<IgnoredAny> =
                    serde_json::from_slice(event).map_err(fail)?;
                let response = FaceCropBatchResponse {
                    results: vec![ImageResult::Cropped(answer.clone()); request.images.len()],
                };
                serde_json::to_vec(&response).map_err(fail)
            }
            (None, canned) => {
                let request: ClassifyRequest = serde_json::from_slice(event).map_err(fail)?;
                serde_json::to_vec(&classify_answer(canned, request.crops.len())).map_err(fail)
            }
        }
    }
}

fn model(id: &str) -> ModelInfo {
    ModelInfo {
        id: id.to_owned(),
        sha256: "0".repeat(64),
    }
}

fn crop_answer(faces: usize) -> FaceCropResponse {
    let point = Point { x: 1.0, y: 1.0 };
    FaceCropResponse {
        image: ImageSize {
            width: 640,
            height: 480,
        },
        faces: (0..faces)
            .map(|i| CroppedFace {
                bbox: BBox {
                    x: 10.0 * i as f32,
                    y: 10.0,
                    width: 50.0,
                    height: 60.0,
                },
                keypoints: Keypoints {
                    right_eye: point,
                    left_eye: point,
                    nose_tip: point,
                    mouth: point,
                    right_ear: point,
                    left_ear: point,
                },
                score: 0.9,
                landmarks: Vec::new(),
                crop: Crop {
                    format: CropFormat::Png,
                    width: 64,
                    height: 64,
                    // About what a real 64 px crop weighs.
                    data: Base64Bytes(vec![7; 6 * 1024]),
                },
                chips: vec![Crop {
                    format: CropFormat::Png,
                    width: 32,
                    height: 32,
                    data: Base64Bytes(vec![7; 2 * 1024]),
                }],
            })
            .collect(),
        detector: model("sleeping-detector"),
        timings: CropTimings::default(),
    }
}

fn classify_answer(canned: Canned, crops: usize) -> ClassifyResponse {
    let prediction = match canned {
        Canned::Gender => Prediction::Gender(GenderPrediction {
            label: Gender::Female,
            probability: 0.9,
        }),
        _ => Prediction::Age(AgePrediction {
            years: 30.0,
            std_dev: 5.0,
            top_bins: Vec::new(),
        }),
    };
    ClassifyResponse {
        model: model("sleeping-classifier"),
        predictions: vec![prediction; crops],
        timings: ClassifyTimings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_on_the_first_calls_passes_once_they_are_spent() {
        let faulty = Faulty {
            inner: None,
            builtin: None,
            fault: Fault::First(Arc::new(AtomicUsize::new(2))),
            error: diagnostic("ModelFailure", "x"),
        };
        let mut instance = faulty.init(&BTreeMap::new()).expect("inits");
        assert!(instance.handle(b"{}").is_err());
        assert!(instance.handle(b"{}").is_err());
        // Nothing wrapped: a spent fault still has nothing to answer with.
        assert!(instance.handle(b"{}").is_err());
        let poisoned = Faulty::on_content(Builtin::FaceCrop, b"poison");
        assert!(matches!(poisoned.fault, Fault::OnContent(ref p) if p == b"poison"));
    }

    #[test]
    fn a_sleeper_answers_every_image_and_crop_in_shape() {
        let sleeper = Sleeper {
            latency: Duration::ZERO,
            canned: Canned::Crop { faces: 2 },
        };
        let mut crop = sleeper.init(&BTreeMap::new()).expect("inits");
        let answer = crop
            .handle(br#"{"images": [{"image": "AA=="}, {"image": "AA=="}]}"#)
            .expect("answers");
        let response: FaceCropBatchResponse = serde_json::from_slice(&answer).expect("a batch");
        assert_eq!(response.results.len(), 2);
        let age = Sleeper {
            latency: Duration::ZERO,
            canned: Canned::Age,
        };
        let answer = age
            .init(&BTreeMap::new())
            .expect("inits")
            .handle(br#"{"crops": []}"#)
            .expect("answers");
        let response: ClassifyResponse = serde_json::from_slice(&answer).expect("predictions");
        assert!(response.predictions.is_empty());
    }
}
