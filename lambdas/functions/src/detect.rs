//! Face detection with MediaPipe's BlazeFace.
//!
//! Two models look at each image: the front model (128 px input, trained on
//! near, frontal faces) and the back model (256 px, trained on smaller,
//! farther faces). Large images are also cut into overlapping tiles for the
//! back model, so a face that is a tenth of a wide photo is still seen at a
//! size the model detects. Each pass letterboxes its region to the model's
//! input with fast_image_resize's SIMD filters (several times quicker than
//! `image`'s `thumbnail`). Every pass maps its boxes and keypoints back to
//! original pixels; weighted non-max suppression merges what overlaps.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use tract_onnx::prelude::*;

use crate::nms::{Overlap, weighted_nms};
use crate::onnx::{self, LoadError, OnnxFile, Plan, f32_values};

/// One face in original image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, mouth, right ear, left ear (the
    /// subject's right and left), each `[x, y]`.
    pub keypoints: [[f32; 2]; 6],
    pub score: f32,
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// The longer side from which images are also searched in tiles. Below it,
/// the whole-image passes find faces down to about 1/20 of the longer side
/// (see the recall figures in the README); tiling costs four more runs of
/// the back model, so only large images, whose small faces still have
/// enough pixels to classify, pay for it.
pub const DEFAULT_TILE_MIN_SIDE: u32 = 1600;

/// The longest side of a tile by default: a 1920×1080 photo is cut into
/// 4×3 tiles of 600×450, in which a face 40 px wide (the floor hosted face
/// APIs document for such photos) spans 17 px of the back model's input,
/// which it finds; in the 2×2 tiles of 1200×675 it spanned 9 and was missed.
pub const DEFAULT_TILE_MAX_SIDE: u32 = 640;

/// The most tiles by default: a 4K photo gets 4×3 tiles of 1200×810
/// rather than 8×5 small ones, at three times the cost of a 1080p photo.
pub const DEFAULT_MAX_TILES: u32 = 12;

/// Detector settings. The score thresholds are MediaPipe's default minimum
/// detection confidence (0.5).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Minimum sigmoid score for the front (128 px) model.
    pub front_threshold: f32,
    /// Minimum sigmoid score for the back (256 px) model.
    pub back_threshold: f32,
    /// Minimum score for the back model on tiles, stricter: a face cut by a
    /// tile's edge can score just over the whole-image threshold.
    pub tile_threshold: f32,
    pub overlap: Overlap,
    /// Images whose longer side is at least this many pixels are also
    /// searched in a 2×2 grid of overlapping tiles by the back model.
    /// `u32::MAX` turns tiling off.
    pub tile_min_side: u32,
    /// Fraction of a tile's side shared with its neighbour.
    pub tile_overlap: f32,
    /// The longest side of a tile: a face of 40 px keeps about 17 px of
    /// the back model's 256 (see [`DEFAULT_TILE_MAX_SIDE`]).
    pub tile_max_side: u32,
    /// The most tiles an image is cut into; a larger image gets larger
    /// tiles, and its smallest findable face grows with them.
    pub max_tiles: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            front_threshold: 0.5,
            back_threshold: 0.5,
            tile_threshold: 0.75,
            overlap: Overlap::default(),
            tile_min_side: DEFAULT_TILE_MIN_SIDE,
            tile_overlap: 0.25,
            tile_max_side: DEFAULT_TILE_MAX_SIDE,
            max_tiles: DEFAULT_MAX_TILES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("face detection failed: {0}")]
pub struct DetectError(String);

/// One BlazeFace network and its anchors.
#[derive(Debug)]
pub struct BlazeFace {
    size: usize,
    plan: Plan,
    /// Anchor centres in [0, 1], in the model's output order.
    anchors: Vec<[f32; 2]>,
}

impl BlazeFace {
    /// Loads a BlazeFace model whose square input is `size` pixels.
    pub fn load(file: &OnnxFile, size: usize) -> Result<Self, LoadError> {
        Ok(Self {
            size,
            plan: file.plan(&[1, size, size, 3])?,
            anchors: anchors(),
        })
    }

    /// Detects faces in `region` of `image` (letterboxed to the model's
    /// input), returning them in `image` pixels, unmerged.
    pub fn detect_region(
        &self,
        image: &RgbImage,
        region: Region,
        threshold: f32,
    ) -> Result<Vec<Detection>, DetectError> {
        let (input, letterbox) = self.letterbox(image, region);
        let outputs = self.infer(input)?;
        let (scores, boxes) = split_outputs(&outputs)?;
        let logit_min = (threshold / (1.0 - threshold)).ln();
        let size = self.size as f32;
        let mut found = Vec::new();
        for (i, (&logit, anchor)) in scores.iter().zip(&self.anchors).enumerate() {
            if logit < logit_min {
                continue;
            }
            let raw = &boxes[i * 16..(i + 1) * 16];
            let to_image = |dx: f32, dy: f32| {
                letterbox.image_point(anchor[0] * size + dx, anchor[1] * size + dy)
            };
            let [cx, cy] = to_image(raw[0], raw[1]);
            let (w, h) = (raw[2] / letterbox.scale, raw[3] / letterbox.scale);
            let mut keypoints = [[0.0; 2]; 6];
            for (k, point) in keypoints.iter_mut().enumerate() {
                *point = to_image(raw[4 + 2 * k], raw[5 + 2 * k]);
            }
            found.push(Detection {
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                keypoints,
                score: sigmoid(logit),
            });
        }
        Ok(found)
    }

    /// Runs the network on a letterboxed input.
    pub fn infer(&self, input: Tensor) -> Result<TVec<TValue>, DetectError> {
        onnx::run(&self.plan, input).map_err(|error| DetectError(format!("{error:#}")))
    }

    /// The network's input for `region` of `image` (see [`Self::letterbox`]).
    pub fn input(&self, image: &RgbImage, region: Region) -> Tensor {
        self.letterbox(image, region).0
    }

    /// Scales `region` to fit the model's square input, centred on a black
    /// background, as an NHWC tensor in [-1, 1].
    fn letterbox(&self, image: &RgbImage, region: Region) -> (Tensor, Letterbox) {
        let size = self.size as u32;
        let scale = size as f32 / region.width.max(region.height) as f32;
        let width = ((region.width as f32 * scale).round() as u32).clamp(1, size);
        let height = ((region.height as f32 * scale).round() as u32).clamp(1, size);
        let resized = resize_region(image, region, width, height);
        let (pad_x, pad_y) = ((size - width) / 2, (size - height) / 2);
        let mut data = vec![-1.0f32; self.size * self.size * 3];
        let row_len = width as usize * 3;
        for (y, row) in resized.chunks_exact(row_len).enumerate() {
            let start = ((y + pad_y as usize) * self.size + pad_x as usize) * 3;
            for (value, &byte) in data[start..start + row_len].iter_mut().zip(row) {
                *value = f32::from(byte) / 127.5 - 1.0;
            }
        }
        let tensor = tract_ndarray::Array4::from_shape_vec((1, self.size, self.size, 3), data)
            .expect("the buffer has exactly 1×size×size×3 values")
            .into_tensor();
        let letterbox = Letterbox {
            scale: width as f32 / region.width as f32,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
            origin_x: region.x as f32,
            origin_y: region.y as f32,
        };
        (tensor, letterbox)
    }
}

/// `region` of `image` scaled to `width`×`height`, as packed RGB rows.
/// Shrinking (the usual case) averages the area each output pixel covers
/// (a box filter); enlarging a small tile interpolates (a triangle
/// filter). fast_image_resize does both with SIMD.
fn resize_region(image: &RgbImage, region: Region, width: u32, height: u32) -> Vec<u8> {
    let source = ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        PixelType::U8x3,
    )
    .expect("an RgbImage holds width×height RGB pixels");
    let mut resized = Image::new(width, height, PixelType::U8x3);
    let filter = if width <= region.width {
        FilterType::Box
    } else {
        FilterType::Bilinear
    };
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(filter))
        .crop(
            f64::from(region.x),
            f64::from(region.y),
            f64::from(region.width),
            f64::from(region.height),
        );
    Resizer::new()
        .resize(&source, &mut resized, &options)
        .expect("both images are RGB and the region lies inside the image");
    resized.into_vec()
}

/// Finds the score and regressor outputs by shape, so the code does not
/// depend on the exporter's output order: scores are `[1, A, 1]`, boxes
/// `[1, A, 16]`, once for the 512 fine anchors and once for the 384 coarse.
fn split_outputs(outputs: &[TValue]) -> Result<(Vec<f32>, Vec<f32>), DetectError> {
    let by_shape = |anchors: usize, width: usize| -> Result<Vec<f32>, DetectError> {
        outputs
            .iter()
            .find(|o| o.shape() == [1, anchors, width])
            .and_then(|o| f32_values(o).ok())
            .map(<[f32]>::to_vec)
            .ok_or_else(|| DetectError(format!("no [1, {anchors}, {width}] f32 output")))
    };
    let mut scores = by_shape(FINE_ANCHORS, 1)?;
    scores.extend(by_shape(COARSE_ANCHORS, 1)?);
    let mut boxes = by_shape(FINE_ANCHORS, 16)?;
    boxes.extend(by_shape(COARSE_ANCHORS, 16)?);
    Ok((scores, boxes))
}

const FINE_ANCHORS: usize = 16 * 16 * 2;
const COARSE_ANCHORS: usize = 8 * 8 * 6;

/// BlazeFace's anchors, for both input sizes: a 16×16 grid with 2 anchors a
/// cell, then an 8×8 grid with 6, each at its cell's centre.
fn anchors() -> Vec<[f32; 2]> {
    let mut anchors = Vec::with_capacity(FINE_ANCHORS + COARSE_ANCHORS);
    for (grid, per_cell) in [(16, 2), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                let centre = [
                    (x as f32 + 0.5) / grid as f32,
                    (y as f32 + 0.5) / grid as f32,
                ];
                anchors.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    anchors
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

/// A rectangle of the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    pub fn whole(image: &RgbImage) -> Self {
        Self {
            x: 0,
            y: 0,
            width: image.width(),
            height: image.height(),
        }
    }

    /// A grid of tiles that share `overlap` of their side with their
    /// neighbours, each side at most `max_side` (so a small face keeps
    /// enough pixels in the back model's input), at least 2×2, and at most
    /// `max_tiles` in all (past that, the tiles grow instead).
    fn tiles(image: &RgbImage, overlap: f32, max_side: u32, max_tiles: u32) -> Vec<Self> {
        let (width, height) = (image.width(), image.height());
        // Tiles along a side of `len` pixels for tiles of at most `side`.
        let count = |len: u32, side: u32| {
            let covered = len as f32 * (1.0 + overlap);
            ((covered / side.max(1) as f32).ceil() as u32).max(2)
        };
        let mut side = max_side.max(1);
        let (mut cols, mut rows) = (count(width, side), count(height, side));
        while cols * rows > max_tiles.max(4) {
            side += side / 8 + 1;
            (cols, rows) = (count(width, side), count(height, side));
        }
        let length =
            |len: u32, n: u32| ((len as f32 * (1.0 + overlap) / n as f32).ceil() as u32).min(len);
        let (w, h) = (length(width, cols), length(height, rows));
        let start = |i: u32, n: u32, len: u32, tile: u32| {
            ((u64::from(i) * u64::from(len - tile)) / u64::from(n - 1)) as u32
        };
        (0..rows)
            .flat_map(|row| {
                (0..cols).map(move |col| Self {
                    x: start(col, cols, width, w),
                    y: start(row, rows, height, h),
                    width: w,
                    height: h,
                })
            })
            .collect()
    }

    /// Whether `bbox` reaches within `margin` of an edge of this tile that
    /// is not also an edge of the image: such a face may be cut, and the
    /// neighbouring tile, or the whole-image pass, sees it whole.
    fn cuts(&self, bbox: &[f32; 4], image: &RgbImage, margin: f32) -> bool {
        let (x0, y0) = (self.x as f32, self.y as f32);
        let (x1, y1) = (x0 + self.width as f32, y0 + self.height as f32);
        (self.x > 0 && bbox[0] < x0 + margin)
            || (self.y > 0 && bbox[1] < y0 + margin)
            || (x1 < image.width() as f32 && bbox[2] > x1 - margin)
            || (y1 < image.height() as f32 && bbox[3] > y1 - margin)
    }
}

/// Maps model-input pixels back to image pixels.
#[derive(Debug, Clone, Copy)]
struct Letterbox {
    /// Model-input pixels per image pixel.
    scale: f32,
    pad_x: f32,
    pad_y: f32,
    origin_x: f32,
    origin_y: f32,
}

impl Letterbox {
    fn image_point(self, x: f32, y: f32) -> [f32; 2] {
        [
            (x - self.pad_x) / self.scale + self.origin_x,
            (y - self.pad_y) / self.scale + self.origin_y,
        ]
    }
}

/// Both BlazeFace models and how to combine them.
#[derive(Debug)]
pub struct Detector {
    front: BlazeFace,
    back: BlazeFace,
    config: DetectConfig,
}

impl Detector {
    pub fn new(front: BlazeFace, back: BlazeFace, config: DetectConfig) -> Self {
        Self {
            front,
            back,
            config,
        }
    }

    /// The front (128 px) model.
    pub fn front(&self) -> &BlazeFace {
        &self.front
    }

    /// The back (256 px) model.
    pub fn back(&self) -> &BlazeFace {
        &self.back
    }

    /// Every face in `image`, most confident first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let config = &self.config;
        let whole = Region::whole(image);
        let tiled = image.width().max(image.height()) >= config.tile_min_side;
        // In a tiled image the whole-image back pass sees small faces at a
        // handful of pixels, where its weak answers are mostly clothing and
        // background; the tiles see those faces large. So it answers with
        // the tiles' stricter threshold there.
        let back_threshold = if tiled {
            config.back_threshold.max(config.tile_threshold)
        } else {
            config.back_threshold
        };
        let mut found = self
            .front
            .detect_region(image, whole, config.front_threshold)?;
        found.extend(self.back.detect_region(image, whole, back_threshold)?);
        if tiled {
            let tiles = Region::tiles(
                image,
                config.tile_overlap,
                config.tile_max_side,
                config.max_tiles,
            );
            for tile in tiles {
                let margin = tile.width.min(tile.height) as f32 * 0.02;
                let in_tile = self
                    .back
                    .detect_region(image, tile, config.tile_threshold)?;
                found.extend(
                    in_tile
                        .into_iter()
                        .filter(|d| !tile.cuts(&d.bbox, image, margin)),
                );
            }
        }
        Ok(weighted_nms(found, config.overlap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_cover_both_grids_at_cell_centres() {
        let anchors = anchors();
        assert_eq!(anchors.len(), 896);
        assert_eq!(anchors[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(anchors[1], anchors[0]);
        assert_eq!(anchors[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(anchors[FINE_ANCHORS], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(anchors[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn letterbox_maps_model_pixels_back_to_the_region() {
        let letterbox = Letterbox {
            scale: 0.5,
            pad_x: 0.0,
            pad_y: 14.0,
            origin_x: 100.0,
            origin_y: 50.0,
        };
        assert_eq!(letterbox.image_point(10.0, 14.0), [120.0, 50.0]);
    }

    #[test]
    fn tiles_overlap_and_cover_the_image() {
        let image = RgbImage::new(1000, 600);
        let tiles = Region::tiles(&image, 0.25, 10_000, 12);
        assert_eq!(tiles.len(), 4, "at least 2×2");
        assert_eq!(tiles[0].width, 625);
        assert_eq!(tiles[3].x + tiles[3].width, 1000);
        assert_eq!(tiles[3].y + tiles[3].height, 600);
        assert!(tiles[1].x < tiles[0].width, "horizontal overlap");
    }

    #[test]
    fn a_1080p_photo_gets_small_tiles_and_a_4k_one_no_more_than_the_cap() {
        let covered = |tiles: &[Region], image: &RgbImage| {
            (0..image.width()).step_by(7).all(|x| {
                (0..image.height()).step_by(7).all(|y| {
                    tiles
                        .iter()
                        .any(|t| x >= t.x && x < t.x + t.width && y >= t.y && y < t.y + t.height)
                })
            })
        };
        let hd = RgbImage::new(1920, 1080);
        let tiles = Region::tiles(&hd, 0.25, DEFAULT_TILE_MAX_SIDE, DEFAULT_MAX_TILES);
        assert_eq!(tiles.len(), 12);
        assert!(tiles.iter().all(|t| t.width <= 640 && t.height <= 640));
        assert!(covered(&tiles, &hd));
        // Neighbours share a quarter of a tile, so a face on a seam is
        // whole in one of them.
        assert!(tiles[0].x + tiles[0].width >= tiles[1].x + tiles[0].width / 5);
        let uhd = RgbImage::new(3840, 2160);
        let tiles = Region::tiles(&uhd, 0.25, DEFAULT_TILE_MAX_SIDE, DEFAULT_MAX_TILES);
        assert!(tiles.len() <= 12, "{}", tiles.len());
        assert!(covered(&tiles, &uhd));
    }

    #[test]
    fn a_box_at_an_inner_tile_edge_is_cut_but_one_at_the_image_edge_is_not() {
        let image = RgbImage::new(1000, 600);
        let tile = Region::tiles(&image, 0.25, 10_000, 12)[0];
        assert!(tile.cuts(&[600.0, 100.0, 630.0, 130.0], &image, 5.0));
        assert!(!tile.cuts(&[0.0, 0.0, 30.0, 30.0], &image, 5.0));
    }
}
