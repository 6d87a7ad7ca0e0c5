//! lambdex's test kit: the world every suite (and every bench) is made
//! of, kept in one place.
//!
//! - Fixtures, here: the project's real photo, its hand-marked face, and
//!   the scenes made from it to measure detection (scaled, padded, side by
//!   side, recompressed, grayscale, EXIF-rotated).
//! - [`services`]: RabbitMQ, the Elasticsearch-API servers and
//!   schemathesis, started or installed on first use.
//! - [`images`]: one image server, good images and hostile answers.
//! - [`fakes`]: fake functions for the local Lambda — the project's with a
//!   fault, or sleepers with canned answers.
//! - [`proxy`]: a proxy in front of an Elasticsearch-API server that
//!   answers 429 to part of a bulk request, or 401, on cue.
//! - [`world`]: one queue test's world (functions, Elasticsearch, its own
//!   queues and index, `lambdex` processes).
//!
//! Process statistics come from [`lambdex_local::procstat`]. The
//! cross-crate suites live in `tests/tests/`.

pub mod admin;
pub mod fakes;
pub mod images;
pub mod proxy;
pub mod services;
pub mod world;

use std::io::Cursor;
use std::path::PathBuf;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, imageops};

/// The functions a document's bill names, in its order.
pub fn billed_functions(doc: &lambdex_proto::PredictionDoc) -> Vec<&str> {
    doc.billing.as_ref().map_or_else(Vec::new, |billing| {
        billing
            .functions
            .iter()
            .map(|function| function.function.as_str())
            .collect()
    })
}

/// A file in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The project's weights, as committed.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// `astronaut.png` as committed (see `fixtures/PROVENANCE.md`).
pub fn astronaut_png() -> Vec<u8> {
    std::fs::read(fixture("astronaut.png")).expect("tests/fixtures/astronaut.png is committed")
}

pub fn astronaut() -> RgbImage {
    image::load_from_memory(&astronaut_png())
        .expect("the fixture decodes")
        .into_rgb8()
}

/// Eileen Collins' face in `astronaut.png`, marked by hand from the photo
/// (hairline to chin, ear to ear): `[x0, y0, x1, y1]`.
pub const ASTRONAUT_FACE: [f32; 4] = [180.0, 70.0, 270.0, 175.0];

/// A picture with the faces it shows, for recall tests.
#[derive(Debug, Clone)]
pub struct Scene {
    pub name: String,
    pub image: RgbImage,
    /// Where each face is, `[x0, y0, x1, y1]`.
    pub faces: Vec<[f32; 4]>,
}

impl Scene {
    /// The astronaut, resized to `side`×`side`.
    fn tile(side: u32) -> (RgbImage, [f32; 4]) {
        let scale = side as f32 / 512.0;
        (
            imageops::resize(&astronaut(), side, side, imageops::FilterType::Lanczos3),
            ASTRONAUT_FACE.map(|v| v * scale),
        )
    }

    /// `cols`×`rows` copies of the astronaut, each `side` pixels, on grey.
    pub fn grid(cols: u32, rows: u32, side: u32) -> Self {
        let (tile, face) = Self::tile(side);
        let mut image = RgbImage::from_pixel(cols * side, rows * side, Rgb([120, 130, 120]));
        let mut faces = Vec::new();
        for row in 0..rows {
            for col in 0..cols {
                let (x, y) = (col * side, row * side);
                imageops::replace(&mut image, &tile, i64::from(x), i64::from(y));
                let (dx, dy) = (x as f32, y as f32);
                faces.push([face[0] + dx, face[1] + dy, face[2] + dx, face[3] + dy]);
            }
        }
        Self {
            name: format!("{cols}×{rows} people, {side} px each"),
            image,
            faces,
        }
    }

    /// One astronaut of `side` pixels at (`x`, `y`) on a `width`×`height`
    /// light background.
    pub fn padded(width: u32, height: u32, side: u32, x: u32, y: u32) -> Self {
        let (tile, face) = Self::tile(side);
        let mut image = RgbImage::from_pixel(width, height, Rgb([225, 225, 220]));
        imageops::replace(&mut image, &tile, i64::from(x), i64::from(y));
        let (dx, dy) = (x as f32, y as f32);
        Self {
            name: format!("one face of {side} px padded to {width}×{height}"),
            image,
            faces: vec![[face[0] + dx, face[1] + dy, face[2] + dx, face[3] + dy]],
        }
    }

    pub fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn grayscale(mut self) -> Self {
        self.image = DynamicImage::ImageLuma8(imageops::grayscale(&self.image)).into_rgb8();
        self.name = format!("{}, grayscale", self.name);
        self
    }

    /// The scene after a round trip through JPEG at `quality`.
    pub fn recompressed(mut self, quality: u8) -> Self {
        let jpeg = encode_jpeg(&self.image, quality);
        self.image = image::load_from_memory(&jpeg)
            .expect("our own JPEG decodes")
            .into_rgb8();
        self.name = format!("{}, JPEG q{quality}", self.name);
        self
    }

    /// The scene's faces that `centres` (detected face centres) hit, each
    /// at most once, and how many centres hit no face.
    pub fn score(&self, centres: &[[f32; 2]]) -> (usize, usize) {
        let mut found = vec![false; self.faces.len()];
        let mut strays = 0;
        for c in centres {
            match self
                .faces
                .iter()
                .position(|f| c[0] > f[0] && c[0] < f[2] && c[1] > f[1] && c[1] < f[3])
            {
                Some(i) if !found[i] => found[i] = true,
                _ => strays += 1,
            }
        }
        (found.iter().filter(|f| **f).count(), strays)
    }
}

/// The scenes detection must get right: faces small relative to the frame
/// (a tenth of its width), several people, thumbnails, and the same after
/// recompression and in grayscale.
pub fn required_scenes() -> Vec<Scene> {
    vec![
        Scene::grid(1, 1, 512).renamed("the photo as it is"),
        Scene::grid(2, 1, 512).renamed("two copies side by side"),
        Scene::padded(980, 700, 512, 300, 100).renamed("a face a tenth of the width"),
        Scene::padded(1960, 1200, 1024, 700, 100)
            .renamed("a face a tenth of the width, large image"),
        Scene::grid(3, 2, 400),
        Scene::grid(4, 1, 256),
        Scene::grid(1, 1, 320).renamed("a 320-pixel thumbnail"),
        Scene::grid(4, 2, 80).renamed("eight people in a 320-pixel thumbnail"),
        Scene::grid(3, 2, 400).recompressed(35),
        Scene::padded(980, 700, 512, 300, 100).grayscale(),
        Scene::grid(2, 1, 512).grayscale().recompressed(50),
        // The floor hosted face APIs document: a face 40 px wide (ear to
        // ear) in a 1920×1080 photo, and one of 48 px.
        Scene::padded(1920, 1080, SIDE_OF_40_PX_FACE, 820, 420)
            .renamed("a face 40 px wide in a 1920×1080 photo"),
        Scene::padded(1920, 1080, SIDE_OF_48_PX_FACE, 300, 600)
            .renamed("a face 48 px wide in a 1920×1080 photo"),
        // Small faces across the seams between tiles (4×3 tiles of 600×450
        // start at x 440, 880, 1320 and y 315, 630).
        Scene::padded(1920, 1080, SIDE_OF_40_PX_FACE, 500, 400)
            .renamed("a 40 px face across a tile seam"),
        Scene::padded(1920, 1080, SIDE_OF_48_PX_FACE, 1230, 200)
            .renamed("a 48 px face across a tile seam")
            .recompressed(80),
        Scene::grid(8, 4, SIDE_OF_40_PX_FACE).renamed("32 faces 40 px wide in 1824×912"),
    ]
}

/// The astronaut's side for a face 40 px wide (hers is 90 of 512).
pub const SIDE_OF_40_PX_FACE: u32 = 228;
/// The astronaut's side for a face 48 px wide.
pub const SIDE_OF_48_PX_FACE: u32 = 273;

/// An image with no face at all: smooth gradients and a few shapes.
pub fn no_face() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        let in_circle = (x as i32 - 320).pow(2) + (y as i32 - 240).pow(2) < 90 * 90;
        if in_circle {
            Rgb([200, 60, 40])
        } else {
            Rgb([(x / 3) as u8, (y / 2) as u8, 140])
        }
    })
}

pub fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encodes");
    out
}

/// `jpeg` with an EXIF block (APP1, right after SOI) whose only tag is the
/// orientation, e.g. 6: "rotate 90° clockwise to display".
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], b"\xff\xd8", "a JPEG starts with SOI");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0"); // little-endian TIFF
    tiff.extend_from_slice(&8u32.to_le_bytes()); // first IFD right after
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // padding of the 4-byte value field
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let length = u16::try_from(app1.len() + 2).expect("a small segment");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}
