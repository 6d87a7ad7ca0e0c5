//! Making a downloaded image fit the face-crop call: its header is checked
//! (a supported format, within the pixel cap, so a decompression bomb is
//! refused before a pixel is decoded), and an image too large for Lambda's
//! synchronous payload is scaled down and re-encoded as JPEG. The scale is
//! recorded so the faces' boxes map back to the original's pixels.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use lambdex_functions::decode::{DecodeError, DecodeLimits, decode, inspect};
use lambdex_proto::FailureClass;

use crate::config::ImageConfig;

/// How much smaller each try at fitting the payload is.
const SHRINK_STEP: f64 = 0.8;

/// What the face-crop function is sent.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub bytes: Vec<u8>,
    /// Sent pixels per original pixel: 1.0 when sent as downloaded.
    pub scale: f64,
    /// The original's upright width and height, when it was scaled.
    pub original: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid image: {0}")]
    Image(#[from] DecodeError),
    #[error(
        "the image does not fit the request limit of {max_bytes} bytes even at {min_long_side} px on its long side"
    )]
    CannotFit {
        max_bytes: usize,
        min_long_side: u32,
    },
    #[error("cannot re-encode the image: {0}")]
    Encode(String),
}

impl PrepareError {
    /// Every failure is the image's: retrying gives the same answer.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Image(_) | Self::Encode(_) => FailureClass::InvalidImage,
            Self::CannotFit { .. } => FailureClass::ImageTooLarge,
        }
    }
}

/// The memory a decoded pixel holds while an image is scaled: the decoder's
/// RGBA, the upright RGB, the scaled copy, the JPEG encoder's buffers.
pub const DECODED_BYTES_PER_PIXEL: usize = 12;

/// Checks `bytes`' header (format, pixel cap) and says how much memory
/// [`prepare`] will hold for them: none when they go as they are, their
/// decoded pixels when they must be scaled to fit.
pub fn decode_bytes(bytes: &[u8], config: &ImageConfig) -> Result<usize, PrepareError> {
    let limits = DecodeLimits {
        max_pixels: config.max_pixels,
    };
    let (_, width, height) = inspect(bytes, limits)?;
    if bytes.len() <= config.max_request_bytes {
        return Ok(0);
    }
    let pixels = u64::from(width) * u64::from(height);
    Ok(usize::try_from(pixels)
        .unwrap_or(usize::MAX)
        .saturating_mul(DECODED_BYTES_PER_PIXEL))
}

/// Checks `bytes` and makes them fit. CPU-bound when the image must be
/// scaled: call it off the async threads.
pub fn prepare(bytes: Vec<u8>, config: &ImageConfig) -> Result<Prepared, PrepareError> {
    let limits = DecodeLimits {
        max_pixels: config.max_pixels,
    };
    inspect(&bytes, limits)?;
    if bytes.len() <= config.max_request_bytes {
        return Ok(Prepared {
            bytes,
            scale: 1.0,
            original: None,
        });
    }
    // Decoded upright, so the function sees what it would have.
    let picture = decode(&bytes, limits)?;
    drop(bytes);
    let (width, height) = picture.dimensions();
    let long_side = f64::from(width.max(height));
    let mut scale = 1.0_f64;
    loop {
        let (w, h) = (
            ((f64::from(width) * scale).round() as u32).max(1),
            ((f64::from(height) * scale).round() as u32).max(1),
        );
        let encoded = if scale < 1.0 {
            encode_jpeg(
                &image::imageops::resize(&picture, w, h, FilterType::Triangle),
                config.jpeg_quality,
            )?
        } else {
            encode_jpeg(&picture, config.jpeg_quality)?
        };
        if encoded.len() <= config.max_request_bytes {
            return Ok(Prepared {
                bytes: encoded,
                scale,
                original: Some((width, height)),
            });
        }
        // JPEG size grows with the pixel count: aim straight for the limit.
        let aim = (config.max_request_bytes as f64 / encoded.len() as f64).sqrt();
        let next = scale * aim.min(SHRINK_STEP) * 0.95;
        if long_side * next < f64::from(config.min_long_side) {
            return Err(PrepareError::CannotFit {
                max_bytes: config.max_request_bytes,
                min_long_side: config.min_long_side,
            });
        }
        scale = next;
    }
}

fn encode_jpeg(picture: &image::RgbImage, quality: u8) -> Result<Vec<u8>, PrepareError> {
    let mut out = Cursor::new(Vec::new());
    picture
        .write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
        .map_err(|error| PrepareError::Encode(error.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(width: u32, height: u32) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        let picture = image::RgbImage::from_fn(width, height, |_, _| {
            image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)])
        });
        let mut out = Cursor::new(Vec::new());
        picture
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("encodes");
        out.into_inner()
    }

    #[test]
    fn an_image_within_the_limit_is_sent_as_it_is() {
        let png = noise(64, 48);
        let prepared = prepare(png.clone(), &ImageConfig::default()).expect("fits");
        assert_eq!(prepared.bytes, png);
        assert!((prepared.scale - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_large_image_is_scaled_to_fit_and_the_scale_recorded() {
        let png = noise(1600, 1200);
        let config = ImageConfig {
            max_request_bytes: 400_000,
            min_long_side: 200,
            ..ImageConfig::default()
        };
        assert!(png.len() > config.max_request_bytes);
        let prepared = prepare(png, &config).expect("fits");
        assert!(prepared.bytes.len() <= config.max_request_bytes);
        assert!(prepared.scale < 1.0, "{}", prepared.scale);
        let sent = image::load_from_memory(&prepared.bytes).expect("a JPEG");
        let expected = (1600.0 * prepared.scale).round() as u32;
        assert_eq!(sent.width(), expected);
    }

    #[test]
    fn an_image_that_cannot_fit_above_the_smallest_size_is_refused() {
        let config = ImageConfig {
            max_request_bytes: 10_000,
            min_long_side: 1000,
            ..ImageConfig::default()
        };
        let error = prepare(noise(1200, 900), &config).expect_err("cannot fit");
        assert!(matches!(error, PrepareError::CannotFit { .. }), "{error}");
    }

    #[test]
    fn not_an_image_is_refused() {
        let error = prepare(b"GIF89a but not really".to_vec(), &ImageConfig::default())
            .expect_err("refused");
        assert_eq!(error.class(), FailureClass::InvalidImage);
    }
}
