//! The face-crop function: decode, detect, align and crop, encode.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use lambdex_proto::{
    BBox, Base64Bytes, Crop, CropFormat, CropTimings, CroppedFace, FaceCropRequest,
    FaceCropResponse, ImageSize, Keypoints, ModelInfo, Point,
};

use crate::chip::{DEFAULT_PADDING, face_chip};
use crate::decode::{DecodeLimits, decode};
use crate::detect::{DetectConfig, Detection, Detector};
use crate::error::FunctionError;
use crate::landmarks::{self, PARTS, Rect, ShapePredictor};
use crate::models::{load_detector, load_shape_predictor};
use crate::onnx::LoadError;

/// The side of each face's main crop: the age net's input.
pub const DEFAULT_CROP_SIZE: u32 = 64;
/// The sides of the chips also cut for each face, each from the image at
/// its own size as dlib cuts them: the gender net's input.
pub const DEFAULT_EXTRA_CHIP_SIZES: [u32; 1] = [32];
/// The chip sides a setting may ask for.
const CHIP_SIZES: std::ops::RangeInclusive<u32> = 16..=512;
/// The most faces returned per image, most confident first.
pub const DEFAULT_MAX_FACES: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct FaceCropConfig {
    pub detect: DetectConfig,
    pub decode: DecodeLimits,
    pub crop_size: u32,
    /// Chips cut beside the main crop, one per size (`CroppedFace::chips`).
    pub extra_chip_sizes: Vec<u32>,
    /// dlib's chip padding around the face template.
    pub padding: f64,
    pub max_faces: usize,
}

impl Default for FaceCropConfig {
    fn default() -> Self {
        Self {
            detect: DetectConfig::default(),
            decode: DecodeLimits::default(),
            crop_size: DEFAULT_CROP_SIZE,
            extra_chip_sizes: DEFAULT_EXTRA_CHIP_SIZES.to_vec(),
            padding: DEFAULT_PADDING,
            max_faces: DEFAULT_MAX_FACES,
        }
    }
}

/// Why a setting from the environment was refused.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} is not valid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl FaceCropConfig {
    /// The defaults, overridden by any of `LAMBDEX_MAX_PIXELS`,
    /// `LAMBDEX_MAX_FACES`, `LAMBDEX_CROP_SIZE`, `LAMBDEX_EXTRA_CHIP_SIZES`
    /// (comma-separated, empty for none), `LAMBDEX_TILE_MIN_SIDE`,
    /// `LAMBDEX_TILE_MAX_SIDE` and `LAMBDEX_DETECT_THRESHOLD` that are set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Self::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            target: &mut T,
            valid: impl Fn(&T) -> bool,
        ) -> Result<(), ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            let Some(value) = lookup(name) else {
                return Ok(());
            };
            let refused = |reason: String| ConfigError {
                name,
                value: value.clone(),
                reason,
            };
            let parsed: T = value
                .trim()
                .parse()
                .map_err(|e: T::Err| refused(e.to_string()))?;
            if !valid(&parsed) {
                return Err(refused("out of range".to_owned()));
            }
            *target = parsed;
            Ok(())
        }
        let mut config = Self::default();
        parse(
            &lookup,
            "LAMBDEX_MAX_PIXELS",
            &mut config.decode.max_pixels,
            |v| *v > 0,
        )?;
        parse(&lookup, "LAMBDEX_MAX_FACES", &mut config.max_faces, |v| {
            *v > 0
        })?;
        parse(&lookup, "LAMBDEX_CROP_SIZE", &mut config.crop_size, |v| {
            CHIP_SIZES.contains(v)
        })?;
        if let Some(value) = lookup("LAMBDEX_EXTRA_CHIP_SIZES") {
            config.extra_chip_sizes = parse_sizes(&value).map_err(|reason| ConfigError {
                name: "LAMBDEX_EXTRA_CHIP_SIZES",
                value: value.clone(),
                reason,
            })?;
        }
        parse(
            &lookup,
            "LAMBDEX_TILE_MIN_SIDE",
            &mut config.detect.tile_min_side,
            |v| *v > 0,
        )?;
        parse(
            &lookup,
            "LAMBDEX_TILE_MAX_SIDE",
            &mut config.detect.tile_max_side,
            |v| *v >= 128,
        )?;
        let mut threshold = config.detect.back_threshold;
        parse(&lookup, "LAMBDEX_DETECT_THRESHOLD", &mut threshold, |v| {
            *v > 0.0 && *v < 1.0
        })?;
        config.detect.front_threshold = threshold;
        config.detect.back_threshold = threshold;
        Ok(config)
    }
}

/// Chip sides, comma-separated; empty for none.
fn parse_sizes(value: &str) -> Result<Vec<u32>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|size| !size.is_empty())
        .map(|size| match size.parse::<u32>() {
            Ok(side) if CHIP_SIZES.contains(&side) => Ok(side),
            Ok(side) => Err(format!("{side} is outside {CHIP_SIZES:?}")),
            Err(error) => Err(format!("{size:?}: {error}")),
        })
        .collect()
}

/// One face, aligned: the box the landmark model read, its five points,
/// and the chips cut from them.
#[derive(Debug, Clone)]
pub struct AlignedFace {
    pub rect: Rect,
    pub landmarks: [[i64; 2]; PARTS],
    /// The main crop, then one chip per extra size, in the config's order.
    pub chips: Vec<RgbImage>,
}

/// The loaded models and settings: built once per process.
#[derive(Debug)]
pub struct FaceCropper {
    detector: Detector,
    predictor: ShapePredictor,
    info: ModelInfo,
    config: FaceCropConfig,
}

impl FaceCropper {
    pub fn load(models_dir: &Path, config: FaceCropConfig) -> Result<Self, LoadError> {
        let (detector, info) = load_detector(models_dir, config.detect.clone())?;
        let predictor = load_shape_predictor(models_dir)?;
        Ok(Self {
            detector,
            predictor,
            info,
            config,
        })
    }

    pub fn predictor(&self) -> &ShapePredictor {
        &self.predictor
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn detector_info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &FaceCropConfig {
        &self.config
    }

    /// Handles one request.
    pub fn crop(&self, request: &FaceCropRequest) -> Result<FaceCropResponse, FunctionError> {
        let started = Instant::now();
        let image = decode(request.image.as_ref(), self.config.decode)?;
        let decode_ms = ms_since(started);

        let detect_started = Instant::now();
        let detections = self.detect(&image)?;
        let detect_ms = ms_since(detect_started);

        let align_started = Instant::now();
        let faces = detections
            .iter()
            .map(|face| self.cropped_face(&image, face))
            .collect::<Result<Vec<_>, _>>()?;
        let align_ms = ms_since(align_started);

        Ok(FaceCropResponse {
            image: ImageSize {
                width: image.width(),
                height: image.height(),
            },
            faces,
            detector: self.info.clone(),
            timings: CropTimings {
                decode_ms,
                detect_ms,
                align_ms,
                total_ms: ms_since(started),
            },
        })
    }

    /// The faces in a decoded image, at most `max_faces`, best first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, FunctionError> {
        let mut detections = self.detector.detect(image)?;
        detections.truncate(self.config.max_faces);
        Ok(detections)
    }

    /// The five landmarks of one face, read in the box dlib's detector
    /// would have drawn around it.
    pub fn landmarks(&self, image: &RgbImage, face: &Detection) -> (Rect, [[i64; 2]; PARTS]) {
        let rect = landmarks::dlib_box(face);
        (rect, self.predictor.predict(image, rect))
    }

    /// The main crop of one face (dlib's chip at `crop_size`).
    pub fn chip(&self, image: &RgbImage, face: &Detection) -> RgbImage {
        let (_, points) = self.landmarks(image, face);
        face_chip(image, &points, self.config.crop_size, self.config.padding)
    }

    /// One face's landmarks and every chip of it.
    pub fn align(&self, image: &RgbImage, face: &Detection) -> AlignedFace {
        let (rect, points) = self.landmarks(image, face);
        let chips = std::iter::once(self.config.crop_size)
            .chain(self.config.extra_chip_sizes.iter().copied())
            .map(|size| face_chip(image, &points, size, self.config.padding))
            .collect();
        AlignedFace {
            rect,
            landmarks: points,
            chips,
        }
    }

    fn cropped_face(
        &self,
        image: &RgbImage,
        face: &Detection,
    ) -> Result<CroppedFace, FunctionError> {
        let aligned = self.align(image, face);
        let mut chips = aligned
            .chips
            .iter()
            .map(|chip| {
                Ok(Crop {
                    format: CropFormat::Png,
                    width: chip.width(),
                    height: chip.height(),
                    data: Base64Bytes(encode_png(chip)?),
                })
            })
            .collect::<Result<Vec<_>, FunctionError>>()?;
        let crop = chips.remove(0);
        let point = |p: [f32; 2]| Point { x: p[0], y: p[1] };
        let [right_eye, left_eye, nose_tip, mouth, right_ear, left_ear] = face.keypoints.map(point);
        Ok(CroppedFace {
            bbox: BBox {
                x: face.bbox[0],
                y: face.bbox[1],
                width: face.bbox[2] - face.bbox[0],
                height: face.bbox[3] - face.bbox[1],
            },
            keypoints: Keypoints {
                right_eye,
                left_eye,
                nose_tip,
                mouth,
                right_ear,
                left_ear,
            },
            score: face.score,
            landmarks: aligned
                .landmarks
                .iter()
                .map(|&[x, y]| Point {
                    x: x as f32,
                    y: y as f32,
                })
                .collect(),
            crop,
            chips,
        })
    }
}

/// Lossless and quick: the crops are small, and the time is billed.
fn encode_png(chip: &RgbImage) -> Result<Vec<u8>, FunctionError> {
    let mut out = Cursor::new(Vec::new());
    let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub);
    chip.write_with_encoder(encoder)
        .map_err(|error| FunctionError::Internal(format!("encoding a crop as PNG: {error}")))?;
    Ok(out.into_inner())
}

pub(crate) fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn settings_from_the_environment_override_the_defaults() {
        let config = FaceCropConfig::from_lookup(lookup(&[
            ("LAMBDEX_MAX_FACES", "7"),
            ("LAMBDEX_DETECT_THRESHOLD", "0.6"),
        ]))
        .expect("valid");
        assert_eq!(config.max_faces, 7);
        assert_eq!(config.detect.front_threshold, 0.6);
        assert_eq!(config.crop_size, DEFAULT_CROP_SIZE);
        assert_eq!(config.extra_chip_sizes, DEFAULT_EXTRA_CHIP_SIZES);
        let none = FaceCropConfig::from_lookup(lookup(&[("LAMBDEX_EXTRA_CHIP_SIZES", "")]))
            .expect("valid");
        assert!(none.extra_chip_sizes.is_empty());
        let two = FaceCropConfig::from_lookup(lookup(&[("LAMBDEX_EXTRA_CHIP_SIZES", "32, 48")]))
            .expect("valid");
        assert_eq!(two.extra_chip_sizes, [32, 48]);
    }

    #[test]
    fn a_bad_setting_is_refused_with_its_name_and_value() {
        let error = FaceCropConfig::from_lookup(lookup(&[("LAMBDEX_CROP_SIZE", "4")]))
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "LAMBDEX_CROP_SIZE=\"4\" is not valid: out of range"
        );
        let error = FaceCropConfig::from_lookup(lookup(&[("LAMBDEX_EXTRA_CHIP_SIZES", "32,4")]))
            .expect_err("refused");
        assert!(error.to_string().contains("4 is outside"), "{error}");
        let error = FaceCropConfig::from_lookup(lookup(&[("LAMBDEX_MAX_FACES", "many")]))
            .expect_err("refused");
        assert!(
            error.to_string().starts_with("LAMBDEX_MAX_FACES=\"many\""),
            "{error}"
        );
    }
}
