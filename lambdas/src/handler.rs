//! The functions' handlers: plain async functions of a typed request, called
//! by the `lambda_runtime` binaries, by `lambdex predict` in-process, and by
//! tests, all alike.

use std::time::Instant;

use lambda_runtime::LambdaEvent;
use lambdex_proto::{
    ClassifyRequest, ClassifyResponse, ClassifyTimings, CropFormat, FaceCropRequest,
    FaceCropResponse,
};

use crate::classify::Classifier;
use crate::decode::{DecodeLimits, decode};
use crate::error::FunctionError;
use crate::face_crop::{FaceCropper, ms_since};

/// The most crops one classify request may carry.
pub const MAX_CROPS_PER_REQUEST: usize = 256;
/// The largest crop side a classify request may carry.
pub const MAX_CROP_SIDE: u32 = 1024;

/// The face-crop function.
pub async fn face_crop(
    cropper: &FaceCropper,
    event: LambdaEvent<FaceCropRequest>,
) -> Result<FaceCropResponse, FunctionError> {
    cropper.crop(&event.payload)
}

/// A classifier function.
pub async fn classify(
    classifier: &Classifier,
    event: LambdaEvent<ClassifyRequest>,
) -> Result<ClassifyResponse, FunctionError> {
    classify_request(classifier, &event.payload)
}

/// Decodes a request's crops and classifies them in one batch.
pub fn classify_request(
    classifier: &Classifier,
    request: &ClassifyRequest,
) -> Result<ClassifyResponse, FunctionError> {
    let started = Instant::now();
    if request.crops.len() > MAX_CROPS_PER_REQUEST {
        return Err(FunctionError::InvalidRequest(format!(
            "{} crops in one request, over the limit of {MAX_CROPS_PER_REQUEST}",
            request.crops.len()
        )));
    }
    let limits = DecodeLimits {
        max_pixels: u64::from(MAX_CROP_SIDE).pow(2),
    };
    let chips = request
        .crops
        .iter()
        .enumerate()
        .map(|(i, crop)| {
            // PNG is the only crop format; a new one must be decoded here.
            let CropFormat::Png = crop.format;
            let chip = decode(crop.data.as_ref(), limits)
                .map_err(|error| FunctionError::InvalidRequest(format!("crop {i}: {error}")))?;
            if chip.dimensions() != (crop.width, crop.height) {
                return Err(FunctionError::InvalidRequest(format!(
                    "crop {i} says {}×{} but is {}×{}",
                    crop.width,
                    crop.height,
                    chip.width(),
                    chip.height()
                )));
            }
            Ok(chip)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let decode_ms = ms_since(started);
    let infer_started = Instant::now();
    let predictions = classifier.classify(&chips)?;
    Ok(ClassifyResponse {
        model: classifier.info().clone(),
        predictions,
        timings: ClassifyTimings {
            decode_ms,
            infer_ms: ms_since(infer_started),
            total_ms: ms_since(started),
        },
    })
}
