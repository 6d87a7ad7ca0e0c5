//! Face chips exactly as dlib cuts them: `get_face_chip_details` from the
//! five landmarks, then `extract_image_chip` (`dlib/image_transforms/
//! interpolation.h`), which the age and gender nets were trained on.
//!
//! When a chip is much smaller than the face, dlib does not sample the
//! image directly (that would alias): it crops the region around the chip,
//! halves it through its 5×5 Gaussian pyramid (`pyramid_down<2>`) until one
//! more halving would leave fewer pixels than the chip has, and samples
//! that level bilinearly. Every step here follows dlib's arithmetic (its
//! inclusive rectangles, its pyramid's point mapping, its truncating pixel
//! assignment), so the chips match the reference pixel for pixel.

use image::RgbImage;
use multiversion::multiversion;

use crate::landmarks::{PARTS, round};

/// dlib's default chip padding, and the one the age and gender nets saw.
pub const DEFAULT_PADDING: f64 = 0.2;

/// dlib's five-point face template (`get_face_chip_details`), in the unit
/// square before padding, in the landmark model's order.
const TEMPLATE: [[f64; 2]; PARTS] = [
    [0.859_567_459_599_2, 0.213_498_153_801_4],
    [0.646_060_476_410_4, 0.228_967_438_767_7],
    [0.120_575_062_078_9, 0.213_727_452_684_8],
    [0.334_085_061_371_2, 0.229_064_240_324_2],
    [0.490_112_313_567_9, 0.627_797_531_647_5],
];

/// A rectangle with real corners; `right` and `bottom` are inclusive, as in
/// dlib's `drectangle` (its width is `right − left + 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

impl DRect {
    fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }

    fn area(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            (self.right - self.left + 1.0) * (self.bottom - self.top + 1.0)
        }
    }

    fn center(&self) -> [f64; 2] {
        [
            (self.left + self.right) / 2.0,
            (self.top + self.bottom) / 2.0,
        ]
    }

    /// `pyramid_down<2>::rect_down`.
    fn down(&self) -> Self {
        let [left, top] = point_down([self.left, self.top]);
        let [right, bottom] = point_down([self.right, self.bottom]);
        Self {
            left,
            top,
            right,
            bottom,
        }
    }

    fn translate(&self, dx: f64, dy: f64) -> Self {
        Self {
            left: self.left + dx,
            top: self.top + dy,
            right: self.right + dx,
            bottom: self.bottom + dy,
        }
    }
}

/// `pyramid_down<2>::point_down`: where a point lands one level down.
fn point_down([x, y]: [f64; 2]) -> [f64; 2] {
    [x / 2.0 - 1.25, y / 2.0 - 0.75]
}

/// Where and how a chip is cut: dlib's `chip_details`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    /// The chip's footprint in the image before rotation.
    pub rect: DRect,
    /// Its rotation about the rectangle's centre, in radians.
    pub angle: f64,
    pub size: u32,
}

/// `get_face_chip_details(shape, size, padding)`: the similarity transform
/// taking the padded template onto the five points.
pub fn face_chip_details(points: &[[i64; 2]; PARTS], size: u32, padding: f64) -> ChipDetails {
    let side = f64::from(size);
    let from = TEMPLATE.map(|[x, y]| {
        [
            (padding + x) / (2.0 * padding + 1.0) * side,
            (padding + y) / (2.0 * padding + 1.0) * side,
        ]
    });
    let to = points.map(|[x, y]| [x as f64, y as f64]);
    let [a, b, tx, ty] = similarity(&from, &to);
    let angle = b.atan2(a);
    let scale = a.hypot(b);
    let half = side / 2.0;
    let centre = [a * half - b * half + tx, b * half + a * half + ty];
    // dlib's centered_drect: the width counts the last pixel.
    let (width, height) = (side * scale - 1.0, side * scale - 1.0);
    ChipDetails {
        rect: DRect {
            left: centre[0] - width / 2.0,
            top: centre[1] - height / 2.0,
            right: centre[0] + width / 2.0,
            bottom: centre[1] + height / 2.0,
        },
        angle,
        size,
    }
}

/// The least-squares similarity `p ↦ [a −b; b a]·p + t` taking `from` onto
/// `to` (dlib's `find_similarity_transform`, closed form in two dimensions):
/// `[a, b, tx, ty]`.
pub(crate) fn similarity(from: &[[f64; 2]], to: &[[f64; 2]]) -> [f64; 4] {
    let n = from.len() as f64;
    let mean = |points: &[[f64; 2]]| {
        let sum = points
            .iter()
            .fold([0.0, 0.0], |s, p| [s[0] + p[0], s[1] + p[1]]);
        [sum[0] / n, sum[1] / n]
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
        let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
        dot += fx * tx + fy * ty;
        cross += fx * ty - fy * tx;
        norm += fx * fx + fy * fy;
    }
    let (a, b) = if norm > 0.0 {
        (dot / norm, cross / norm)
    } else {
        (1.0, 0.0)
    };
    [
        a,
        b,
        mt[0] - (a * mf[0] - b * mf[1]),
        mt[1] - (b * mf[0] + a * mf[1]),
    ]
}

/// An RGB image held as rows of pixels, for the pyramid's levels.
#[derive(Debug, Clone)]
struct Plane {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

impl Plane {
    /// The part of `image` inside the inclusive integer rectangle (already
    /// clipped to the image).
    fn crop(image: &RgbImage, left: i64, top: i64, right: i64, bottom: i64) -> Self {
        let width = (right - left + 1).max(0) as usize;
        let height = (bottom - top + 1).max(0) as usize;
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                pixels.push(
                    image
                        .get_pixel(left as u32 + x as u32, top as u32 + y as u32)
                        .0,
                );
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// One level of `pyramid_down<2>` on RGB: a 1-4-6-4-1 filter across,
    /// then down, keeping every other column and row, divided by 256 and
    /// truncated. An image of 8 rows or columns or fewer has no level below.
    fn down(&self) -> Self {
        if self.width <= 8 || self.height <= 8 {
            return Self {
                width: 0,
                height: 0,
                pixels: Vec::new(),
            };
        }
        let columns = (self.width - 3) / 2;
        let rows = (self.height - 3) / 2;
        let mut across = vec![[0u16; 3]; self.height * columns];
        for y in 0..self.height {
            let row = &self.pixels[y * self.width..(y + 1) * self.width];
            for c in 0..columns {
                let p = &row[2 * c..2 * c + 5];
                for k in 0..3 {
                    across[y * columns + c][k] = u16::from(p[0][k])
                        + 4 * u16::from(p[1][k])
                        + 6 * u16::from(p[2][k])
                        + 4 * u16::from(p[3][k])
                        + u16::from(p[4][k]);
                }
            }
        }
        let mut pixels = Vec::with_capacity(rows * columns);
        for r in 0..rows {
            let centre = 2 + 2 * r;
            for c in 0..columns {
                let at = |y: usize| across[y * columns + c];
                let (a, b, m, d, e) = (
                    at(centre - 2),
                    at(centre - 1),
                    at(centre),
                    at(centre + 1),
                    at(centre + 2),
                );
                // The sum fits in u16 (at most 255 × 256), as in dlib.
                pixels.push(std::array::from_fn(|k| {
                    ((a[k] + 4 * b[k] + 6 * m[k] + 4 * d[k] + e[k]) / 256) as u8
                }));
            }
        }
        Self {
            width: columns,
            height: rows,
            pixels,
        }
    }

    /// dlib's `interpolate_bilinear` on RGB: `None` when any of the four
    /// neighbours is outside; each channel truncated to a byte.
    #[inline(always)]
    fn bilinear(&self, x: f64, y: f64) -> Option<[u8; 3]> {
        let left = x.floor();
        let top = y.floor();
        if left < 0.0 || top < 0.0 {
            return None;
        }
        let (left_i, top_i) = (left as usize, top as usize);
        if left_i + 1 >= self.width || top_i + 1 >= self.height {
            return None;
        }
        let (fx, fy) = (x - left, y - top);
        let at = |xx: usize, yy: usize| self.pixels[yy * self.width + xx];
        let (tl, tr, bl, br) = (
            at(left_i, top_i),
            at(left_i + 1, top_i),
            at(left_i, top_i + 1),
            at(left_i + 1, top_i + 1),
        );
        Some(std::array::from_fn(|k| {
            let value = (1.0 - fy) * ((1.0 - fx) * f64::from(tl[k]) + fx * f64::from(tr[k]))
                + fy * ((1.0 - fx) * f64::from(bl[k]) + fx * f64::from(br[k]));
            value.clamp(0.0, 255.0) as u8
        }))
    }
}

/// `rotate_point(centre, p, angle)`.
fn rotate(centre: [f64; 2], [x, y]: [f64; 2], angle: f64) -> [f64; 2] {
    let (sin, cos) = angle.sin_cos();
    let (dx, dy) = (x - centre[0], y - centre[1]);
    [
        cos * dx - sin * dy + centre[0],
        sin * dx + cos * dy + centre[1],
    ]
}

/// `extract_image_chip(image, details)`: the `size`×`size` chip, black
/// where it falls outside the image.
pub fn extract_image_chip(image: &RgbImage, details: &ChipDetails) -> RgbImage {
    let size = details.size as usize;
    let chip_area = (size * size) as f64;
    let rect = details.rect;

    // How deep the pyramid must go, and the region it is built from: the
    // rotated footprint, grown by the border each halving needs.
    let mut grow = 2.0;
    let mut down = rect.down();
    while down.area() > chip_area {
        down = down.down();
        grow = grow * 2.0 + 2.0;
    }
    let centre = rect.center();
    let corners = [
        [rect.left, rect.top],
        [rect.right, rect.top],
        [rect.left, rect.bottom],
        [rect.right, rect.bottom],
    ]
    .map(|corner| rotate(centre, corner, details.angle));
    let min = |k: usize| corners.iter().map(|c| c[k]).fold(f64::INFINITY, f64::min);
    let max = |k: usize| {
        corners
            .iter()
            .map(|c| c[k])
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let (width, height) = (f64::from(image.width()), f64::from(image.height()));
    // grow_rect, then intersect with the image, then rounded to integers.
    let region = DRect {
        left: (min(0) - grow).max(0.0),
        top: (min(1) - grow).max(0.0),
        right: (max(0) + grow).min(width - 1.0),
        bottom: (max(1) + grow).min(height - 1.0),
    };
    let mut chip = RgbImage::new(details.size, details.size);
    if region.is_empty() {
        return chip;
    }
    let (left, top, right, bottom) = (
        round(region.left),
        round(region.top),
        round(region.right),
        round(region.bottom),
    );

    // Which level to sample: the deepest whose next halving would still
    // cover the chip.
    let mut level: i32 = -1;
    let mut at_level = rect.translate(-(left as f64), -(top as f64));
    while at_level.down().area() > chip_area {
        level += 1;
        at_level = at_level.down();
    }
    let mut source = Plane::crop(image, left, top, right, bottom);
    for _ in 0..=level {
        source = source.down();
    }

    // The affine map from chip pixels to the level: the chip's top-left,
    // top-right and bottom-left corners onto the rotated rectangle's.
    let centre = at_level.center();
    let tl = rotate(centre, [at_level.left, at_level.top], details.angle);
    let tr = rotate(centre, [at_level.right, at_level.top], details.angle);
    let bl = rotate(centre, [at_level.left, at_level.bottom], details.angle);
    let last = (size.max(2) - 1) as f64;
    let along_x = [(tr[0] - tl[0]) / last, (tr[1] - tl[1]) / last];
    let along_y = [(bl[0] - tl[0]) / last, (bl[1] - tl[1]) / last];
    sample(&source, tl, along_x, along_y, &mut chip);
    chip
}

/// Each chip pixel `(c, r)` sampled at `origin + c·along_x + r·along_y`.
/// Compiled for SSE4.1 and AVX2 as well as the baseline, where
/// `f64::floor` is a library call; the arithmetic, and so the chip, is the
/// same.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn sample(
    source: &Plane,
    origin: [f64; 2],
    along_x: [f64; 2],
    along_y: [f64; 2],
    chip: &mut RgbImage,
) {
    for (c, r, pixel) in chip.enumerate_pixels_mut() {
        let (c, r) = (f64::from(c), f64::from(r));
        let x = origin[0] + along_x[0] * c + along_y[0] * r;
        let y = origin[1] + along_x[1] * c + along_y[1] * r;
        if let Some(value) = source.bilinear(x, y) {
            pixel.0 = value;
        }
    }
}

/// The chip of one face from its five points: dlib's
/// `extract_image_chip(image, get_face_chip_details(shape, size, padding))`.
pub fn face_chip(
    image: &RgbImage,
    points: &[[i64; 2]; PARTS],
    size: u32,
    padding: f64,
) -> RgbImage {
    extract_image_chip(image, &face_chip_details(points, size, padding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_itself_maps_onto_the_chip_unrotated() {
        // Points placed where the padded template puts them in a 200 px
        // chip: the chip is the identity, so its rectangle is the chip.
        let points = TEMPLATE.map(|[x, y]| {
            [
                ((0.2 + x) / 1.4 * 200.0).round() as i64,
                ((0.2 + y) / 1.4 * 200.0).round() as i64,
            ]
        });
        let details = face_chip_details(&points, 200, 0.2);
        assert!(details.angle.abs() < 0.01, "{details:?}");
        assert!((details.rect.left + 0.5).abs() < 1.5, "{details:?}");
        assert!((details.rect.right - 199.5).abs() < 1.5, "{details:?}");
    }

    #[test]
    fn one_pyramid_level_halves_with_dlibs_filter() {
        // A flat grey image stays flat (the filter's weights sum to 256).
        let plane = Plane {
            width: 20,
            height: 12,
            pixels: vec![[100, 150, 200]; 240],
        };
        let down = plane.down();
        assert_eq!((down.width, down.height), (8, 4));
        assert!(down.pixels.iter().all(|p| *p == [100, 150, 200]));
        let tiny = Plane {
            width: 8,
            height: 30,
            pixels: vec![[0; 3]; 240],
        };
        assert_eq!(tiny.down().pixels.len(), 0);
    }

    #[test]
    fn a_chip_outside_the_image_is_black() {
        let image = RgbImage::from_pixel(50, 50, image::Rgb([200, 200, 200]));
        let far = TEMPLATE.map(|[x, y]| [(x * 40.0) as i64 + 1000, (y * 40.0) as i64 + 1000]);
        let chip = face_chip(&image, &far, 32, 0.2);
        assert!(chip.pixels().all(|p| p.0 == [0, 0, 0]));
        let near = TEMPLATE.map(|[x, y]| [(x * 30.0) as i64 + 10, (y * 30.0) as i64 + 10]);
        let chip = face_chip(&image, &near, 32, 0.2);
        assert_eq!(chip.get_pixel(16, 16).0, [200, 200, 200]);
    }
}
