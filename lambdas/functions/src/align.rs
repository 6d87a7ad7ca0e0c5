//! Aligned face crops: dlib's face chip (`get_face_chip_details` with its
//! 5-point template), fitted to BlazeFace's keypoints.
//!
//! dlib's 5-point template has both corners of each eye and the bottom of
//! the nose. BlazeFace gives eye centres, the nose tip and the mouth centre,
//! so we fit three points: the two eye centres (the means of dlib's corner
//! pairs) and the nose bottom, estimated as 40 % of the way from the nose
//! tip to the mouth. A least-squares similarity transform maps the chip onto
//! the image; each chip pixel averages the image area it covers (supersampled
//! bilinear), as dlib does with its pyramid, so small chips of large faces
//! are not aliased.

use image::RgbImage;
use multiversion::multiversion;

use crate::detect::Detection;

/// dlib's template, chip coordinates in [0, 1] before padding.
const TEMPLATE_RIGHT_EYE: [f64; 2] = [
    (0.130_997_606_132_0 + 0.350_711_496_823_6) / 2.0,
    (0.233_852_070_745_5 + 0.229_715_676_325_1) / 2.0,
];
const TEMPLATE_LEFT_EYE: [f64; 2] = [
    (0.859_567_459_599_2 + 0.646_060_476_410_4) / 2.0,
    (0.213_498_153_801_4 + 0.228_967_438_767_7) / 2.0,
];
const TEMPLATE_NOSE_BOTTOM: [f64; 2] = [0.490_147_711_174_0, 0.657_999_889_095_0];

/// Where the nose bottom sits between the nose tip and the mouth centre.
const NOSE_BOTTOM_FRACTION: f32 = 0.4;

/// dlib's default chip padding, and the one the age and gender nets saw.
pub const DEFAULT_PADDING: f64 = 0.2;

/// A similarity transform `p ↦ [a −b; b a]·p + t`, from chip to image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// The least-squares similarity transform taking each `from` point to
    /// its `to` point (Umeyama's method without reflection).
    pub fn fit(from: &[[f64; 2]], to: &[[f64; 2]]) -> Self {
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
        Self {
            a,
            b,
            tx: mt[0] - (a * mf[0] - b * mf[1]),
            ty: mt[1] - (b * mf[0] + a * mf[1]),
        }
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    /// Image pixels per chip pixel.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }
}

/// The transform from a `size`×`size` chip to the image for one face.
pub fn chip_transform(face: &Detection, size: u32, padding: f64) -> Similarity {
    let to_chip = |p: [f64; 2]| {
        let scale = f64::from(size) / (2.0 * padding + 1.0);
        [(padding + p[0]) * scale, (padding + p[1]) * scale]
    };
    let [right_eye, left_eye, nose, mouth, ..] = face.keypoints;
    let nose_bottom = [
        nose[0] + NOSE_BOTTOM_FRACTION * (mouth[0] - nose[0]),
        nose[1] + NOSE_BOTTOM_FRACTION * (mouth[1] - nose[1]),
    ];
    let from = [TEMPLATE_RIGHT_EYE, TEMPLATE_LEFT_EYE, TEMPLATE_NOSE_BOTTOM].map(to_chip);
    let to = [right_eye, left_eye, nose_bottom].map(|p| [f64::from(p[0]), f64::from(p[1])]);
    Similarity::fit(&from, &to)
}

/// Extracts the aligned `size`×`size` chip of one face. Pixels that fall
/// outside the image are black, as in dlib.
pub fn extract_chip(image: &RgbImage, face: &Detection, size: u32, padding: f64) -> RgbImage {
    let transform = chip_transform(face, size, padding);
    // Enough samples per chip pixel that each covers at most about one image
    // pixel: an area average, not a point sample, when shrinking.
    let samples = transform.scale().ceil().clamp(1.0, 16.0) as u32;
    let mut chip = vec![0u8; size as usize * size as usize * 3];
    sample_chip(image, &transform, size, samples, &mut chip);
    RgbImage::from_raw(size, size, chip).expect("the buffer holds size × size RGB pixels")
}

/// Each chip pixel of `out` (`size`×`size` RGB) as the mean of
/// `samples`×`samples` bilinear samples. Compiled for SSE4.1 as well as the
/// baseline, where `f64::floor` is a library call that showed in
/// face-crop's profile; the arithmetic, and so the chip, is the same.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn sample_chip(image: &RgbImage, transform: &Similarity, size: u32, samples: u32, out: &mut [u8]) {
    let step = 1.0 / f64::from(samples);
    let weight = 1.0 / f64::from(samples * samples);
    for (i, pixel) in out.chunks_exact_mut(3).enumerate() {
        let (cx, cy) = (i as u32 % size, i as u32 / size);
        let mut sum = [0.0f64; 3];
        for sy in 0..samples {
            for sx in 0..samples {
                let chip = [
                    f64::from(cx) - 0.5 + (f64::from(sx) + 0.5) * step,
                    f64::from(cy) - 0.5 + (f64::from(sy) + 0.5) * step,
                ];
                let [x, y] = transform.apply(chip);
                let value = bilinear(image, x, y);
                for c in 0..3 {
                    sum[c] += value[c];
                }
            }
        }
        for (out, s) in pixel.iter_mut().zip(sum) {
            *out = (s * weight).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The image's colour at a real-valued point (pixel centres at integers),
/// black outside.
fn bilinear(image: &RgbImage, x: f64, y: f64) -> [f64; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let pixel = |px: i64, py: i64| -> [f64; 3] {
        if px < 0 || py < 0 || px >= w || py >= h {
            return [0.0; 3];
        }
        image.get_pixel(px as u32, py as u32).0.map(f64::from)
    };
    let (ix, iy) = (x0 as i64, y0 as i64);
    let (p00, p10, p01, p11) = (
        pixel(ix, iy),
        pixel(ix + 1, iy),
        pixel(ix, iy + 1),
        pixel(ix + 1, iy + 1),
    );
    std::array::from_fn(|c| {
        let top = p00[c] + fx * (p10[c] - p00[c]);
        let bottom = p01[c] + fx * (p11[c] - p01[c]);
        top + fy * (bottom - top)
    })
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    fn face_with(
        right_eye: [f32; 2],
        left_eye: [f32; 2],
        nose: [f32; 2],
        mouth: [f32; 2],
    ) -> Detection {
        Detection {
            bbox: [0.0; 4],
            keypoints: [right_eye, left_eye, nose, mouth, [0.0; 2], [0.0; 2]],
            score: 1.0,
        }
    }

    #[test]
    fn fit_recovers_an_exact_similarity() {
        let truth = Similarity {
            a: 2.0 * 0.6,
            b: 2.0 * 0.8,
            tx: 5.0,
            ty: -3.0,
        };
        let from = [[0.0, 0.0], [10.0, 0.0], [3.0, 7.0]];
        let to = from.map(|p| truth.apply(p));
        let fitted = Similarity::fit(&from, &to);
        for (got, want) in [fitted.a, fitted.b, fitted.tx, fitted.ty]
            .iter()
            .zip([truth.a, truth.b, truth.tx, truth.ty])
        {
            assert!((got - want).abs() < 1e-9, "{fitted:?}");
        }
        assert!((fitted.scale() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_template_eyes_land_on_the_detected_eyes_of_an_upright_face() {
        // Keypoints placed exactly where the template puts them in a
        // 100-pixel chip, shifted by (40, 20) and scaled by 2.
        let size = 100;
        let chip = |p: [f64; 2]| {
            let s = f64::from(size) / 1.4;
            [
                ((0.2 + p[0]) * s * 2.0 + 40.0) as f32,
                ((0.2 + p[1]) * s * 2.0 + 20.0) as f32,
            ]
        };
        let nose_bottom = chip(TEMPLATE_NOSE_BOTTOM);
        let face = face_with(
            chip(TEMPLATE_RIGHT_EYE),
            chip(TEMPLATE_LEFT_EYE),
            nose_bottom,
            nose_bottom,
        );
        let transform = chip_transform(&face, size, DEFAULT_PADDING);
        assert!((transform.scale() - 2.0).abs() < 1e-3, "{transform:?}");
        assert!(transform.b.abs() < 1e-3, "no rotation: {transform:?}");
        assert!((transform.tx - 40.0).abs() < 1e-2 && (transform.ty - 20.0).abs() < 1e-2);
    }

    #[test]
    fn a_shrinking_chip_averages_the_area_it_covers() {
        // A fine checkerboard averages to mid-grey; a point sampler would
        // alias it to black or white.
        let image = RgbImage::from_fn(400, 400, |x, y| {
            if (x + y) % 2 == 0 {
                Rgb([255; 3])
            } else {
                Rgb([0; 3])
            }
        });
        let face = face_with(
            [130.0, 160.0],
            [270.0, 160.0],
            [200.0, 220.0],
            [200.0, 260.0],
        );
        let chip = extract_chip(&image, &face, 16, DEFAULT_PADDING);
        for pixel in chip.pixels() {
            assert!((100..=155).contains(&pixel[0]), "{pixel:?}");
        }
    }

    #[test]
    fn outside_the_image_is_black() {
        let image = RgbImage::from_pixel(10, 10, Rgb([200; 3]));
        assert_eq!(bilinear(&image, -5.0, 3.0), [0.0; 3]);
        assert_eq!(bilinear(&image, 4.5, 4.5), [200.0; 3]);
    }
}
