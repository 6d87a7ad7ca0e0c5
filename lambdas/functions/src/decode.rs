//! Turning untrusted image bytes into an upright RGB picture: format sniffed
//! from the content, a pixel cap checked before any pixel is decoded, EXIF
//! orientation applied, grayscale widened and alpha flattened onto white.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// The default cap on decoded pixels: 40 megapixels (a 7,300 × 5,500 photo).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// What the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Width × height above which an image is refused before decoding.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Why bytes could not be turned into a picture. Every variant is a property
/// of the input: retrying the same bytes gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the data is empty")]
    Empty,
    #[error("the data is not an image in a known format")]
    NotAnImage,
    #[error("{0:?} images are not supported (JPEG, PNG, WebP and GIF are)")]
    UnsupportedFormat(ImageFormat),
    #[error("the image is {width}×{height} pixels, over the limit of {max_pixels} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("decoding the image needs more memory than the limit for {max_pixels} pixels allows")]
    OverMemoryLimit { max_pixels: u64 },
    #[error("the image has no pixels ({width}×{height})")]
    NoPixels { width: u32, height: u32 },
    #[error("the {format:?} image is corrupt or truncated: {reason}")]
    Corrupt { format: ImageFormat, reason: String },
}

/// The formats lambdex accepts.
pub const SUPPORTED_FORMATS: [ImageFormat; 4] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
];

/// Decodes `bytes` (JPEG, PNG, WebP, or a GIF's first frame) into an upright
/// 8-bit RGB image.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    let (format, mut decoder) = checked_decoder(bytes, limits)?;
    let corrupt = corrupt_error(format, limits);
    // A broken EXIF block must not cost the picture: fall back to upright.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    picture.apply_orientation(orientation);
    Ok(to_rgb(picture))
}

/// The format and stored size (before EXIF orientation) of `bytes`, read
/// from the header alone, with the same checks [`decode`] makes first: the
/// cheap way to refuse what cannot be decoded before moving it anywhere.
pub fn inspect(bytes: &[u8], limits: DecodeLimits) -> Result<(ImageFormat, u32, u32), DecodeError> {
    let (format, decoder) = checked_decoder(bytes, limits)?;
    let (width, height) = decoder.dimensions();
    Ok((format, width, height))
}

fn corrupt_error(
    format: ImageFormat,
    limits: DecodeLimits,
) -> impl Fn(image::ImageError) -> DecodeError {
    move |error| match error {
        image::ImageError::Limits(_) => DecodeError::OverMemoryLimit {
            max_pixels: limits.max_pixels,
        },
        other => DecodeError::Corrupt {
            format,
            reason: other.to_string(),
        },
    }
}

/// A decoder for `bytes` whose format is supported and whose size is
/// within `limits`; no pixel decoded yet.
fn checked_decoder(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<(ImageFormat, impl ImageDecoder + '_), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| DecodeError::NotAnImage)?;
    if !SUPPORTED_FORMATS.contains(&format) {
        return Err(DecodeError::UnsupportedFormat(format));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    // RGBA at 8 bits plus the decoder's own working memory.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(decoder_limits);
    let decoder = reader
        .into_decoder()
        .map_err(corrupt_error(format, limits))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::NoPixels { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok((format, decoder))
}

/// Flattens any colour type to RGB: gray is widened, alpha composited onto
/// white (transparent pixels often hold arbitrary colours).
fn to_rgb(picture: DynamicImage) -> RgbImage {
    if !picture.color().has_alpha() {
        return picture.into_rgb8();
    }
    let rgba = picture.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = RgbImage::new(width, height);
    for (out, pixel) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u16::from(pixel[3]);
        for channel in 0..3 {
            let value = u16::from(pixel[channel]) * alpha + 255 * (255 - alpha);
            out[channel] = ((value + 127) / 255) as u8;
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgba, RgbaImage};

    fn encode(picture: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        picture.write_to(&mut bytes, format).expect("encodes");
        bytes.into_inner()
    }

    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, 99])
        }))
    }

    #[test]
    fn decodes_every_supported_format() {
        let picture = gradient(40, 30);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif] {
            let rgb = decode(&encode(&picture, format), DecodeLimits::default())
                .unwrap_or_else(|error| panic!("{format:?}: {error}"));
            assert_eq!(rgb.dimensions(), (40, 30), "{format:?}");
        }
        // The image crate encodes WebP losslessly only, which also exercises alpha.
        let webp = encode(
            &DynamicImage::ImageRgba8(picture.to_rgba8()),
            ImageFormat::WebP,
        );
        let rgb = decode(&webp, DecodeLimits::default()).expect("webp decodes");
        assert_eq!(rgb.get_pixel(3, 2), picture.to_rgb8().get_pixel(3, 2));
    }

    #[test]
    fn grayscale_is_widened_to_rgb() {
        let gray = DynamicImage::ImageLuma8(GrayImage::from_pixel(8, 8, Luma([77])));
        let rgb = decode(&encode(&gray, ImageFormat::Png), DecodeLimits::default()).expect("ok");
        assert_eq!(rgb.get_pixel(4, 4).0, [77, 77, 77]);
    }

    #[test]
    fn transparent_pixels_become_white_and_opaque_ones_keep_their_colour() {
        let mut rgba = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 0]));
        rgba.put_pixel(1, 1, Rgba([10, 20, 30, 255]));
        let png = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
        let rgb = decode(&png, DecodeLimits::default()).expect("ok");
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);
    }

    #[test]
    fn refuses_an_image_over_the_pixel_cap_before_decoding_it() {
        let png = encode(&gradient(100, 100), ImageFormat::Png);
        let error = decode(&png, DecodeLimits { max_pixels: 9_999 }).expect_err("refused");
        assert!(
            matches!(
                error,
                DecodeError::TooManyPixels {
                    width: 100,
                    height: 100,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn bad_bytes_give_a_typed_error_not_a_panic() {
        assert!(matches!(
            decode(b"", DecodeLimits::default()),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            decode(b"hello, world", DecodeLimits::default()),
            Err(DecodeError::NotAnImage)
        ));
        let mut truncated = encode(&gradient(64, 64), ImageFormat::Jpeg);
        truncated.truncate(200);
        let error = decode(&truncated, DecodeLimits::default()).expect_err("refused");
        assert!(matches!(error, DecodeError::Corrupt { .. }), "{error:?}");
        let bmp_header = b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0";
        assert!(matches!(
            decode(bmp_header, DecodeLimits::default()),
            Err(DecodeError::UnsupportedFormat(ImageFormat::Bmp))
        ));
    }
}
