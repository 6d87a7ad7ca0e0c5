//! `lambdex predict --annotate DIR`: each image with its faces boxed and
//! labelled (age ± spread, gender and its probability), drawn with
//! imageproc in DejaVu Sans Bold (bundled with its licence in `assets/`).
//!
//! Lines and text are sized to the image (its longer side), so a label
//! reads the same on a 320-pixel thumbnail and a 24-megapixel photo; each
//! label sits on a dark band above its box (below it at the top edge).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ab_glyph::{FontRef, PxScale};
use image::{ImageFormat, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;
use lambdex_functions::decode::{self, DecodeLimits};
use lambdex_proto::{FaceDoc, PredictionDoc};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-Bold.ttf");
const BOX_COLOUR: Rgb<u8> = Rgb([255, 212, 0]);
const BAND_COLOUR: Rgb<u8> = Rgb([0, 0, 0]);
const TEXT_COLOUR: Rgb<u8> = Rgb([255, 255, 255]);
/// The text's height is the image's longer side over this, at least
/// [`MIN_TEXT_PX`]; the box's line is a seventh of that.
const TEXT_PER_SIDE: f32 = 40.0;
const MIN_TEXT_PX: f32 = 14.0;
/// JPEG quality of an annotated JPEG.
const JPEG_QUALITY: u8 = 90;

#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error("cannot decode the image to draw on: {0}")]
    Decode(#[from] decode::DecodeError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: image::ImageError,
    },
}

/// A face's label: `1: 34 ± 5 y, female 97%`.
pub fn label(index: usize, face: &FaceDoc) -> String {
    let mut parts = Vec::new();
    if let Some(age) = &face.age {
        parts.push(format!("{:.0} ± {:.0} y", age.years, age.std_dev));
    }
    if let Some(gender) = &face.gender {
        parts.push(format!(
            "{} {:.0}%",
            gender.label,
            gender.probability * 100.0
        ));
    }
    if parts.is_empty() {
        parts.push("face".to_owned());
    }
    format!("{}: {}", index + 1, parts.join(", "))
}

/// `image` (encoded, as sent to the pipeline) upright, with `doc`'s faces
/// drawn on it (its boxes are in the upright image's pixels).
pub fn draw(image: &[u8], doc: &PredictionDoc) -> Result<RgbImage, AnnotateError> {
    let mut canvas = decode::decode(image, DecodeLimits::default())?;
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let long_side = canvas.width().max(canvas.height()) as f32;
    let text_px = (long_side / TEXT_PER_SIDE).max(MIN_TEXT_PX);
    let scale = PxScale::from(text_px);
    let line = (text_px / 7.0).round().max(2.0) as i32;
    let pad = (text_px / 4.0).round() as i32;
    for (i, face) in doc.faces.iter().enumerate() {
        let (x, y) = (face.bbox.x.round() as i32, face.bbox.y.round() as i32);
        let (w, h) = (
            face.bbox.width.round().max(1.0) as i32,
            face.bbox.height.round().max(1.0) as i32,
        );
        for inset in 0..line {
            let (side_w, side_h) = (w - 2 * inset, h - 2 * inset);
            if side_w > 0 && side_h > 0 {
                let rect = Rect::at(x + inset, y + inset).of_size(side_w as u32, side_h as u32);
                draw_hollow_rect_mut(&mut canvas, rect, BOX_COLOUR);
            }
        }
        let text = label(i, face);
        let (text_w, text_h) = text_size(scale, &font, &text);
        let band_h = text_h as i32 + 2 * pad;
        let band_y = if y >= band_h { y - band_h } else { y + h };
        let band = Rect::at(x, band_y).of_size(text_w + 2 * pad as u32, band_h as u32);
        draw_filled_rect_mut(&mut canvas, band, BAND_COLOUR);
        draw_text_mut(
            &mut canvas,
            TEXT_COLOUR,
            x + pad,
            band_y + pad,
            scale,
            &font,
            &text,
        );
    }
    Ok(canvas)
}

/// Where the annotated copy of `source` goes in `dir`: its file name
/// (a URL's last path segment), `.annotated`, and the extension of the
/// format it is written in (JPEG for a JPEG, else PNG); names already
/// `taken` get `-2`, `-3`…
pub fn path_for(dir: &Path, source: &str, jpeg: bool, taken: &mut BTreeSet<PathBuf>) -> PathBuf {
    let name = source
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or("image");
    let stem = Path::new(name)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("image");
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let extension = if jpeg { "jpg" } else { "png" };
    let mut path = dir.join(format!("{safe}.annotated.{extension}"));
    let mut n = 2;
    while taken.contains(&path) {
        path = dir.join(format!("{safe}-{n}.annotated.{extension}"));
        n += 1;
    }
    taken.insert(path.clone());
    path
}

/// Draws and writes one annotated image; JPEG when `image` is one.
pub fn write(
    dir: &Path,
    source: &str,
    image: &[u8],
    doc: &PredictionDoc,
    taken: &mut BTreeSet<PathBuf>,
) -> Result<PathBuf, AnnotateError> {
    let jpeg = image::guess_format(image).ok() == Some(ImageFormat::Jpeg);
    let canvas = draw(image, doc)?;
    let path = path_for(dir, source, jpeg, taken);
    let written = if jpeg {
        std::fs::File::create(&path)
            .map_err(image::ImageError::IoError)
            .and_then(|file| {
                let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    JPEG_QUALITY,
                );
                encoder.encode_image(&canvas)
            })
    } else {
        canvas.save_with_format(&path, ImageFormat::Png)
    };
    written.map_err(|source| AnnotateError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use lambdex_proto::{AgeDoc, BBox, Gender, GenderDoc};

    use super::*;

    fn face(x: f32, y: f32, side: f32) -> FaceDoc {
        FaceDoc {
            bbox: BBox {
                x,
                y,
                width: side,
                height: side,
            },
            score: 0.9,
            age: Some(AgeDoc {
                years: 34.4,
                std_dev: 5.2,
            }),
            gender: Some(GenderDoc {
                label: Gender::Female,
                probability: 0.968,
            }),
        }
    }

    #[test]
    fn a_label_says_age_spread_gender_and_probability() {
        assert_eq!(label(0, &face(0.0, 0.0, 10.0)), "1: 34 ± 5 y, female 97%");
        let bare = FaceDoc {
            age: None,
            gender: None,
            ..face(0.0, 0.0, 10.0)
        };
        assert_eq!(label(2, &bare), "3: face");
    }

    #[test]
    fn names_follow_the_source_and_never_collide() {
        let dir = Path::new("/out");
        let mut taken = BTreeSet::new();
        let a = path_for(dir, "photos/team.jpg", true, &mut taken);
        let b = path_for(dir, "https://cdn.example/p/team.jpg?x=1", true, &mut taken);
        let c = path_for(dir, "https://cdn.example/", false, &mut taken);
        assert_eq!(a, dir.join("team.annotated.jpg"));
        assert_eq!(b, dir.join("team-2.annotated.jpg"));
        assert_eq!(c, dir.join("cdn.annotated.png"));
    }
}
