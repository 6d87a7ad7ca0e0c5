//! The functions' handlers: plain async functions of a typed request, called
//! by the `lambda_runtime` binaries, by `lambdex predict` in-process, and by
//! tests, all alike.

use std::time::Instant;

use lambda_runtime::LambdaEvent;
use lambdex_proto::{
    Base64Bytes, ClassifyRequest, ClassifyResponse, ClassifyTimings, CropFormat,
    FaceCropBatchRequest, FaceCropBatchResponse, FaceCropRequest, FaceCropResponse, ImageFailure,
    ImageResult,
};
use serde::{Deserialize, Serialize};

use crate::classify::Classifier;
use crate::decode::{DecodeLimits, decode};
use crate::error::FunctionError;
use crate::face_crop::{FaceCropper, ms_since};

use lambdex_proto::limits::{MAX_CROP_SIDE, MAX_CROPS_PER_REQUEST, MAX_IMAGES_PER_REQUEST};

/// What the face-crop function accepts: one image, `{"image": …}`,
/// answered with a [`FaceCropResponse`]; or several, `{"images": [{"image":
/// …}, …]}` (a [`FaceCropBatchRequest`]), answered with a
/// [`FaceCropBatchResponse`].
#[derive(Debug, Deserialize)]
pub struct FaceCropEvent {
    #[serde(default)]
    image: Option<Base64Bytes>,
    #[serde(default)]
    images: Option<Vec<FaceCropRequest>>,
}

impl From<FaceCropBatchRequest> for FaceCropEvent {
    fn from(request: FaceCropBatchRequest) -> Self {
        Self {
            image: None,
            images: Some(request.images),
        }
    }
}

/// The face-crop function's answer, in the shape of its request.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum FaceCropAnswer {
    One(FaceCropResponse),
    Batch(FaceCropBatchResponse),
}

/// The face-crop function.
pub async fn face_crop(
    cropper: &FaceCropper,
    event: LambdaEvent<FaceCropEvent>,
) -> Result<FaceCropAnswer, FunctionError> {
    face_crop_event(cropper, event.payload)
}

/// One image, or each image of a batch on its own.
pub fn face_crop_event(
    cropper: &FaceCropper,
    event: FaceCropEvent,
) -> Result<FaceCropAnswer, FunctionError> {
    match (event.image, event.images) {
        (Some(image), None) => cropper
            .crop(&FaceCropRequest { image })
            .map(FaceCropAnswer::One),
        (None, Some(images)) => crop_batch(cropper, &images).map(FaceCropAnswer::Batch),
        (Some(_), Some(_)) => Err(FunctionError::InvalidRequest(
            "both `image` and `images`: send one image, or a batch".to_owned(),
        )),
        (None, None) => Err(FunctionError::InvalidRequest(
            "neither `image` nor `images` in the request".to_owned(),
        )),
    }
}

/// Crops every image of a batch in turn. An image that fails is answered
/// as failed in its place, with the error it would have had alone; only a
/// request over the limits fails as a whole.
pub fn crop_batch(
    cropper: &FaceCropper,
    images: &[FaceCropRequest],
) -> Result<FaceCropBatchResponse, FunctionError> {
    if images.len() > MAX_IMAGES_PER_REQUEST {
        return Err(FunctionError::InvalidRequest(format!(
            "{} images in one request, over the limit of {MAX_IMAGES_PER_REQUEST}",
            images.len()
        )));
    }
    let results = images
        .iter()
        .map(|image| match cropper.crop(image) {
            Ok(response) => ImageResult::Cropped(response),
            Err(error) => ImageResult::Failed(ImageFailure {
                error_type: error.error_type(),
                error_message: error.to_string(),
            }),
        })
        .collect();
    Ok(FaceCropBatchResponse { results })
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
