//! The face-crop function's request and response.

use serde::{Deserialize, Serialize};

use crate::{Base64Bytes, ErrorType, ModelInfo};

/// An image for the face-crop function: the encoded file as downloaded
/// (JPEG, PNG, WebP or GIF).
///
/// `D` is how the bytes are held: decoded ([`Base64Bytes`], the default,
/// what the function reads), or still base64 ([`crate::Base64Text`], what
/// the coordinator writes without a second pass over them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceCropRequest<D = Base64Bytes> {
    pub image: D,
}

/// Several images in one call: each is cropped on its own and answers on
/// its own, in a [`FaceCropBatchResponse`]. The coordinator packs images of
/// different jobs into one call (its `face_crop.batch_size`), so the
/// request fee and the function's fixed cost per call are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceCropBatchRequest<D = Base64Bytes> {
    pub images: Vec<FaceCropRequest<D>>,
}

/// One result per image of a [`FaceCropBatchRequest`], in its order: an
/// image that cannot be cropped fails alone, not its neighbours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceCropBatchResponse<D = Base64Bytes> {
    pub results: Vec<ImageResult<D>>,
}

/// What became of one image of a batch: `{"cropped": {…}}` or
/// `{"failed": {"error_type": …, "error_message": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageResult<D = Base64Bytes> {
    Cropped(FaceCropResponse<D>),
    Failed(ImageFailure),
}

/// Why one image of a batch failed: what the function would have answered
/// as a handled error had the image come alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFailure {
    pub error_type: ErrorType,
    pub error_message: String,
}

/// Every face found in one image, each with its aligned crop. `D` holds
/// the crops' bytes, as in [`FaceCropRequest`]: the coordinator passes them
/// on to the classifiers still in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceCropResponse<D = Base64Bytes> {
    /// The image's size after its EXIF orientation was applied: the frame
    /// that every box and keypoint refers to.
    pub image: ImageSize,
    /// Most confident first.
    pub faces: Vec<CroppedFace<D>>,
    pub detector: ModelInfo,
    pub timings: CropTimings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CroppedFace<D = Base64Bytes> {
    pub bbox: BBox,
    pub keypoints: Keypoints,
    /// Detection confidence in [0, 1].
    pub score: f32,
    /// dlib's five face landmarks the chips were cut from, in original
    /// image pixels: the outer and inner corner of the eye on the image's
    /// right, of the eye on its left, and the bottom of the nose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub landmarks: Vec<Point>,
    /// The main chip: the age net's input size by default.
    pub crop: Crop<D>,
    /// The same face's chips at other sizes, each cut from the image at
    /// its own size as dlib cuts them (the gender net's 32 px by default):
    /// a model whose `chip_size` matches one reads it instead of `crop`.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub chips: Vec<Crop<D>>,
}

impl<D> CroppedFace<D> {
    /// The chip `size` pixels wide (the main crop or one of the others),
    /// or the main crop when none is.
    pub fn chip(&self, size: Option<u32>) -> &Crop<D> {
        size.and_then(|size| {
            std::iter::once(&self.crop)
                .chain(&self.chips)
                .find(|chip| chip.width == size)
        })
        .unwrap_or(&self.crop)
    }
}

/// An axis-aligned box in original image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl BBox {
    pub fn center(&self) -> Point {
        Point {
            x: self.x + self.width / 2.0,
            y: self.y + self.height / 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// BlazeFace's six keypoints in original image pixels. "Right" and "left"
/// are the subject's: the right eye appears on the image's left side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Keypoints {
    pub right_eye: Point,
    pub left_eye: Point,
    pub nose_tip: Point,
    pub mouth: Point,
    pub right_ear: Point,
    pub left_ear: Point,
}

/// An encoded, aligned face crop (a dlib-style face chip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crop<D = Base64Bytes> {
    pub format: CropFormat,
    pub width: u32,
    pub height: u32,
    pub data: D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropFormat {
    /// Lossless, 8-bit RGB.
    Png,
}

/// Where the function spent its time, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CropTimings {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub align_ms: f64,
    pub total_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> FaceCropResponse {
        let p = |x, y| Point { x, y };
        FaceCropResponse {
            image: ImageSize {
                width: 512,
                height: 512,
            },
            faces: vec![CroppedFace {
                bbox: BBox {
                    x: 180.5,
                    y: 60.0,
                    width: 90.0,
                    height: 90.25,
                },
                keypoints: Keypoints {
                    right_eye: p(205.0, 90.0),
                    left_eye: p(245.0, 91.0),
                    nose_tip: p(225.0, 110.0),
                    mouth: p(225.0, 128.0),
                    right_ear: p(185.0, 100.0),
                    left_ear: p(262.0, 101.0),
                },
                score: 0.93,
                landmarks: vec![
                    p(250.0, 92.0),
                    p(238.0, 93.0),
                    p(200.0, 91.0),
                    p(212.0, 92.0),
                    p(225.0, 118.0),
                ],
                crop: Crop {
                    format: CropFormat::Png,
                    width: 64,
                    height: 64,
                    data: Base64Bytes(vec![137, 80, 78, 71]),
                },
                chips: vec![Crop {
                    format: CropFormat::Png,
                    width: 32,
                    height: 32,
                    data: Base64Bytes(vec![137, 80, 78]),
                }],
            }],
            detector: ModelInfo {
                id: "blazeface".into(),
                sha256: "ab".repeat(32),
            },
            timings: CropTimings {
                decode_ms: 3.5,
                detect_ms: 4.0,
                align_ms: 0.2,
                total_ms: 8.0,
            },
        }
    }

    #[test]
    fn response_round_trips_and_ignores_unknown_fields() {
        let response = example();
        let mut value = serde_json::to_value(&response).expect("serialises");
        assert_eq!(value["faces"][0]["crop"]["format"], "png");
        value["faces"][0]["landmarks_v2"] = serde_json::json!([1, 2, 3]);
        value["added_later"] = true.into();
        let back: FaceCropResponse = serde_json::from_value(value).expect("deserialises");
        assert_eq!(back, response);
    }

    #[test]
    fn a_model_reads_the_chip_of_its_size_or_else_the_main_one() {
        let response = example();
        let face = &response.faces[0];
        assert_eq!(face.chip(Some(32)).width, 32);
        assert_eq!(face.chip(Some(64)).width, 64);
        assert_eq!(face.chip(Some(48)).width, 64);
        assert_eq!(face.chip(None).width, 64);
        // An answer from before the chips and landmarks still reads.
        let mut value = serde_json::to_value(&response).expect("serialises");
        let face = value["faces"][0].as_object_mut().expect("an object");
        face.remove("chips");
        face.remove("landmarks");
        let back: FaceCropResponse = serde_json::from_value(value).expect("deserialises");
        assert!(back.faces[0].chips.is_empty() && back.faces[0].landmarks.is_empty());
    }

    #[test]
    fn a_batch_answers_each_image_on_its_own() {
        let response = FaceCropBatchResponse {
            results: vec![
                ImageResult::Cropped(example()),
                ImageResult::Failed(ImageFailure {
                    error_type: ErrorType::InvalidImage,
                    error_message: "invalid image: truncated".to_owned(),
                }),
            ],
        };
        let value = serde_json::to_value(&response).expect("serialises");
        assert_eq!(value["results"][0]["cropped"]["faces"][0]["score"], 0.93f32);
        assert_eq!(
            value["results"][1],
            serde_json::json!({"failed": {
                "error_type": "InvalidImage",
                "error_message": "invalid image: truncated"
            }})
        );
        let back: FaceCropBatchResponse = serde_json::from_value(value).expect("deserialises");
        assert_eq!(back, response);
        // The coordinator's view: crops kept as base64 text.
        let text = serde_json::to_vec(&response).expect("serialises");
        let kept: FaceCropBatchResponse<crate::Base64Text> =
            serde_json::from_slice(&text).expect("deserialises");
        assert_eq!(serde_json::to_vec(&kept).expect("serialises"), text);
    }

    #[test]
    fn request_carries_the_image_as_base64() {
        let request = FaceCropRequest {
            image: Base64Bytes(b"\xff\xd8\xff".to_vec()),
        };
        let json = serde_json::to_string(&request).expect("serialises");
        assert_eq!(json, r#"{"image":"/9j/"}"#);
        let back: FaceCropRequest = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, request);
    }
}
