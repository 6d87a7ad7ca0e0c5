//! Where the weights live and how each function loads its set of them.
//!
//! The directory is, in order: `$LAMBDEX_MODELS_DIR`; `models/` under
//! `$LAMBDA_TASK_ROOT` (a Lambda package unzips there); `models/` in the
//! working directory; `models/` in the checkout this binary was built from.

use std::path::{Path, PathBuf};

use lambdex_proto::ModelInfo;
use sha2::{Digest, Sha256};

use crate::classify::{Classifier, Task};
use crate::detect::{BlazeFace, DetectConfig, Detector};
use crate::landmarks::{LandmarkModelError, SHAPE_PREDICTOR, ShapePredictor};
use crate::onnx::{LoadError, OnnxFile, hex};

/// Names the directory that holds the weights.
pub const MODELS_DIR_ENV: &str = "LAMBDEX_MODELS_DIR";

pub const BLAZEFACE_FRONT: &str = "blazeface/face_detection_front_128x128_barracuda.onnx";
pub const BLAZEFACE_BACK: &str = "blazeface/face_detection_back_256x256_barracuda.onnx";
/// The detector's id in responses and documents.
pub const DETECTOR_ID: &str = "blazeface-front-128+back-256";

#[derive(Debug, thiserror::Error)]
#[error(
    "no models directory found (looked in: {}); set {MODELS_DIR_ENV} to the folder holding blazeface/ and age-gender/",
    .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct ModelsDirNotFound {
    pub tried: Vec<PathBuf>,
}

/// Finds the models directory (see the module docs for the order).
pub fn models_dir() -> Result<PathBuf, ModelsDirNotFound> {
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV) {
        // An explicit setting is never second-guessed.
        return Ok(PathBuf::from(dir));
    }
    let mut tried = Vec::new();
    if let Some(root) = std::env::var_os("LAMBDA_TASK_ROOT") {
        tried.push(Path::new(&root).join("models"));
    }
    tried.push(PathBuf::from("models"));
    tried.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    match tried.iter().find(|dir| dir.join(BLAZEFACE_FRONT).is_file()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(ModelsDirNotFound { tried }),
    }
}

/// Loads both BlazeFace models from `dir`.
pub fn load_detector(dir: &Path, config: DetectConfig) -> Result<(Detector, ModelInfo), LoadError> {
    let front = OnnxFile::read(&dir.join(BLAZEFACE_FRONT))?;
    let back = OnnxFile::read(&dir.join(BLAZEFACE_BACK))?;
    let info = ModelInfo {
        id: DETECTOR_ID.to_owned(),
        sha256: combined_sha256(&[&front.sha256, &back.sha256]),
    };
    let detector = Detector::new(
        BlazeFace::load(&front, 128)?,
        BlazeFace::load(&back, 256)?,
        config,
    );
    Ok((detector, info))
}

/// The sha256 of a model made of several files: the digest of their hex
/// digests, one per line, in the order the id names them.
pub fn combined_sha256(digests: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for digest in digests {
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Loads the classifier for `task` from `dir`.
pub fn load_classifier(dir: &Path, task: Task) -> Result<Classifier, LoadError> {
    let (_, file, _) = task.model();
    Classifier::load(task, OnnxFile::read(&dir.join(file))?)
}

/// Loads dlib's five-point landmark model from `dir`.
pub fn load_shape_predictor(dir: &Path) -> Result<ShapePredictor, LoadError> {
    let path = dir.join(SHAPE_PREDICTOR);
    ShapePredictor::load(&path).map_err(|error| match error {
        LandmarkModelError::Read { source, .. } => LoadError::Read { path, source },
        LandmarkModelError::Format { .. } => LoadError::Model {
            path,
            reason: error.to_string(),
        },
    })
}
