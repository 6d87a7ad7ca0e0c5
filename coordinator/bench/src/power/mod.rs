//! `lambdex bench power`: what a prediction costs at each memory size.
//!
//! Each function runs on the local Lambda with its CPU limited to
//! memory/1769 of a core, as Lambda allots it, on real photos (one face
//! and several); the `REPORT` lines give durations, billed durations and
//! cold starts, priced at Lambda's list prices on both architectures. The
//! result — a Markdown report, an SVG chart and JSON — says which memory
//! size is cheapest per function, what the whole pipeline costs per 8M
//! images, and how that compares with the article's figures.
//!
//! - [`measure`]: running a function at a memory size.
//! - [`summary`]: percentiles, costs, the best size, the pipeline.
//! - [`cost`]: prices, the reference file, the arithmetic of a bill.
//! - [`render`], [`chart`]: Markdown and SVG.

pub mod chart;
pub mod cost;
pub mod measure;
pub mod render;
pub mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use image::{ImageFormat, RgbImage, imageops};
use indicatif::{ProgressBar, ProgressStyle};
use lambdex_functions::{FaceCropConfig, FaceCropper, models};
use lambdex_proto::{Base64Bytes, ClassifyRequest, FaceCropBatchRequest, FaceCropRequest};
use serde::Serialize;

use crate::machine::Machine;
use cost::{Prices, Reference, ReferenceFigure};
use lambdex::config::Config;
use measure::{Payload, Plan};
use summary::{FunctionFigures, PipelineFigures};

/// How face-crop gets its images and the classifiers their crops, and so
/// how many calls an image costs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    /// Images share full face-crop batches, and crops of several images
    /// full classifier batches (the batch window on a queue busy enough to
    /// fill them): face-crop gets 1 / its batch size calls per image, a
    /// model faces / its batch size.
    Shared,
    /// Each image goes alone, and its crops too (`batch_window = "0s"`, or
    /// a quiet queue): one face-crop call and ceil(faces / batch size)
    /// calls per model per image.
    PerImage,
}

impl Batching {
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerImage => "per-image",
        }
    }
}

/// The functions the bench can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Function {
    FaceCrop,
    Age,
    Gender,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Self::FaceCrop => "face-crop",
            Self::Age => "age",
            Self::Gender => "gender",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Functions to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "face-crop,age,gender"
    )]
    function: Vec<Function>,
    /// Memory sizes in MB, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,256,512,1024,1536,1769,3008"
    )]
    memory: Vec<u32>,
    /// Measured warm calls per memory size.
    #[arg(long, default_value_t = 150)]
    invocations: usize,
    /// New instances per memory size, each measured as a cold start.
    #[arg(long, default_value_t = 3)]
    cold_starts: usize,
    /// How the classifiers' calls are filled.
    #[arg(long, value_enum, default_value = "shared")]
    batching: Batching,
    /// Share of calls that start cold, for the cost cold starts add.
    #[arg(long, default_value_t = 0.01)]
    cold_start_rate: f64,
    /// A photo to send (repeat for more). Default: the astronaut fixture
    /// (one face) and a 2×2 grid of it (four faces).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Prices and reference figures (TOML, as `coordinator/data/power-reference.toml`).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Folder for power.md, power.svg and power.json.
    #[arg(long, default_value = "target/bench-power")]
    out: PathBuf,
    /// Print the JSON report instead of the Markdown one.
    #[arg(long)]
    json: bool,
    /// The folder holding blazeface/ and age-gender/.
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
}

/// A photo the functions are measured with.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub faces: usize,
}

/// Everything the bench found, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PowerReport {
    pub generated_at: String,
    /// The CPU measured on: the durations, and so the costs, are its own.
    pub host: Machine,
    pub invocations: usize,
    pub cold_starts: usize,
    pub cold_start_rate: f64,
    pub batching: Batching,
    pub images: Vec<ImageInfo>,
    pub prices: Prices,
    /// Calls per image for each function of the pipeline.
    pub calls_per_image: BTreeMap<String, f64>,
    /// Faces in a classifier call, on average over the calls measured.
    pub faces_per_classifier_call: f64,
    /// Images in a face-crop call.
    pub images_per_crop_call: f64,
    /// Faces those images show, on average over the face-crop calls.
    pub faces_per_crop_call: f64,
    pub functions: Vec<FunctionFigures>,
    pub pipeline: Option<PipelineFigures>,
    pub reference: Vec<ReferenceFigure>,
    pub model_target_usd_per_8m: f64,
    pub pipeline_target_usd_per_8m: f64,
}

pub async fn run(mut args: Args) -> anyhow::Result<()> {
    args.memory.sort_unstable();
    args.memory.dedup();
    if args.function.is_empty() || args.memory.is_empty() {
        bail!("--function and --memory need at least one value each");
    }
    if args.invocations == 0 {
        bail!("--invocations must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.cold_start_rate) {
        bail!("--cold-start-rate is a share of calls, 0–1");
    }
    for memory in &args.memory {
        measure::check_memory(*memory)?;
    }
    let reference = match &args.reference {
        Some(path) => Reference::load(path)?,
        None => Reference::builtin()?,
    };
    let models_dir = match args.models_dir.clone() {
        Some(dir) => dir,
        None => models::models_dir()?,
    };
    let photos = photos(&args.image)?;
    let requests = Requests::build(&models_dir, &photos, args.batching)?;
    if requests.classify.is_empty() && args.function.iter().any(|f| *f != Function::FaceCrop) {
        bail!("none of the photos shows a face: the classifiers need face crops to measure");
    }
    let plan = Plan {
        program: std::env::current_exe().context("finding this program")?,
        models_dir,
        invocations: args.invocations,
        cold_starts: args.cold_starts.max(1),
    };

    let calls_per_size = (plan.cold_starts + plan.invocations) as u64;
    let progress =
        ProgressBar::new(calls_per_size * (args.function.len() * args.memory.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls, {msg} ({elapsed}, {eta} left)")
            .expect("a valid template"),
    );
    let mut functions = Vec::with_capacity(args.function.len());
    for function in &args.function {
        let name = function.name();
        let payloads = requests.for_function(*function);
        let mut measured = Vec::with_capacity(args.memory.len());
        for memory in &args.memory {
            progress.set_message(format!("{name} at {memory} MB"));
            measured.push(measure::measure(&plan, name, *memory, payloads, &progress).await?);
        }
        functions.push(summary::function_figures(
            name,
            &measured,
            &reference.prices,
            args.cold_start_rate,
        ));
    }
    progress.finish_and_clear();

    let pipeline = summary::pipeline_figures(&functions, &requests.calls_per_image);
    let report = PowerReport {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        host: Machine::this(),
        invocations: plan.invocations,
        cold_starts: plan.cold_starts,
        cold_start_rate: args.cold_start_rate,
        batching: args.batching,
        images: photos
            .iter()
            .zip(&requests.faces)
            .map(|(photo, faces)| ImageInfo {
                name: photo.name.clone(),
                faces: *faces,
            })
            .collect(),
        prices: reference.prices,
        calls_per_image: requests.calls_per_image.clone(),
        faces_per_classifier_call: requests.faces_per_classifier_call,
        images_per_crop_call: requests.images_per_crop_call,
        faces_per_crop_call: requests.faces_per_crop_call,
        functions,
        pipeline,
        reference: reference.reference,
        model_target_usd_per_8m: summary::MODEL_TARGET_USD,
        pipeline_target_usd_per_8m: summary::PIPELINE_TARGET_USD,
    };
    let markdown = render::markdown(&report);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_file(&args.out.join("power.md"), markdown.as_bytes())?;
    write_file(&args.out.join("power.json"), json.as_bytes())?;
    write_file(
        &args.out.join("power.svg"),
        chart::svg(&report.functions)?.as_bytes(),
    )?;
    if args.json {
        println!("{json}");
    } else {
        println!("{markdown}");
        eprintln!(
            "written: {} (power.md, power.json, power.svg)",
            args.out.display()
        );
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A photo's name and bytes.
#[derive(Debug, Clone)]
struct Photo {
    name: String,
    bytes: Vec<u8>,
}

/// The photos asked for, or the astronaut and a 2×2 grid of her.
fn photos(paths: &[PathBuf]) -> anyhow::Result<Vec<Photo>> {
    let read = |path: &Path| -> anyhow::Result<Photo> {
        Ok(Photo {
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
            bytes: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        })
    };
    if !paths.is_empty() {
        return paths.iter().map(|path| read(path)).collect();
    }
    let single = read(&crate::default_image()).context("the default photo (give --image)")?;
    let image = image::load_from_memory(&single.bytes)
        .context("decoding the default photo")?
        .to_rgb8();
    let (width, height) = image.dimensions();
    let mut grid = RgbImage::new(width * 2, height * 2);
    for (x, y) in [(0, 0), (width, 0), (0, height), (width, height)] {
        imageops::replace(&mut grid, &image, i64::from(x), i64::from(y));
    }
    let mut jpeg = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut jpeg, ImageFormat::Jpeg)
        .context("encoding the grid")?;
    Ok(vec![
        single,
        Photo {
            name: "astronaut 2×2 grid (JPEG)".to_owned(),
            bytes: jpeg.into_inner(),
        },
    ])
}

/// The request bodies each function is measured with, and how many calls
/// the pipeline makes per image.
#[derive(Debug)]
struct Requests {
    face_crop: Vec<Payload>,
    classify: Vec<Payload>,
    faces: Vec<usize>,
    faces_per_classifier_call: f64,
    images_per_crop_call: f64,
    faces_per_crop_call: f64,
    calls_per_image: BTreeMap<String, f64>,
}

impl Requests {
    /// Face-crop gets each photo, alone or (shared) in one full batch of
    /// the photos in turn; the classifiers get the photos' crops (found
    /// here, in-process, as face-crop finds them) in batches of the
    /// configured size, as the pipeline sends them with `batching`.
    fn build(models_dir: &Path, photos: &[Photo], batching: Batching) -> anyhow::Result<Self> {
        let cropper = FaceCropper::load(models_dir, FaceCropConfig::from_env()?)?;
        let config = Config::default();
        let batch_size = config
            .models
            .values()
            .map(|m| m.batch_size())
            .min()
            .unwrap_or(1);
        let mut face_crop = Vec::with_capacity(photos.len());
        let mut crops_per_photo = Vec::with_capacity(photos.len());
        let mut images = Vec::with_capacity(photos.len());
        for photo in photos {
            let request = FaceCropRequest {
                image: Base64Bytes(photo.bytes.clone()),
            };
            let response = cropper
                .crop(&request)
                .map_err(|error| anyhow::anyhow!("{}: {error}", photo.name))?;
            face_crop.push(Payload {
                image: photo.name.clone(),
                body: serde_json::to_vec(&request)?,
            });
            let crops: Vec<_> = response.faces.into_iter().map(|f| f.crop).collect();
            crops_per_photo.push((photo.name.clone(), crops));
            images.push(request);
        }
        let crop_batch = config.face_crop.crop_batch_size();
        let images_per_crop_call = match batching {
            Batching::PerImage => 1,
            Batching::Shared => {
                // One full batch: the photos in turn.
                let images: Vec<_> = images.iter().cycle().take(crop_batch).cloned().collect();
                face_crop = vec![Payload {
                    image: format!("{crop_batch} of the photos"),
                    body: serde_json::to_vec(&FaceCropBatchRequest { images })?,
                }];
                crop_batch
            }
        };
        let faces: Vec<usize> = crops_per_photo.iter().map(|(_, c)| c.len()).collect();
        let mean_faces = faces.iter().sum::<usize>() as f64 / photos.len().max(1) as f64;
        // The photos in turn: one a call (per image), or a batch of them.
        let faces_per_crop_call = match batching {
            Batching::PerImage => mean_faces,
            Batching::Shared => faces.iter().cycle().take(crop_batch).sum::<usize>() as f64,
        };

        let mut classify = Vec::new();
        let mut crops_sent = 0;
        let mut calls_per_image = BTreeMap::new();
        match batching {
            Batching::PerImage => {
                for (photo, crops) in &crops_per_photo {
                    for batch in crops.chunks(batch_size) {
                        crops_sent += batch.len();
                        classify.push(Payload {
                            image: photo.clone(),
                            body: serde_json::to_vec(&ClassifyRequest {
                                crops: batch.to_vec(),
                            })?,
                        });
                    }
                }
                for (model, model_config) in &config.models {
                    let calls: usize = faces
                        .iter()
                        .map(|n| n.div_ceil(model_config.batch_size()))
                        .sum();
                    calls_per_image.insert(model.clone(), calls as f64 / photos.len() as f64);
                }
            }
            Batching::Shared => {
                // One full batch: every photo's crops in turn, as many
                // images' crops as it takes.
                let crops: Vec<_> = crops_per_photo
                    .iter()
                    .flat_map(|(_, crops)| crops)
                    .cycle()
                    .take(batch_size)
                    .cloned()
                    .collect();
                if !crops.is_empty() {
                    crops_sent += crops.len();
                    classify.push(Payload {
                        image: format!("{batch_size} crops of the photos"),
                        body: serde_json::to_vec(&ClassifyRequest { crops })?,
                    });
                }
                for (model, model_config) in &config.models {
                    calls_per_image
                        .insert(model.clone(), mean_faces / model_config.batch_size() as f64);
                }
            }
        }
        calls_per_image.insert(
            Function::FaceCrop.name().to_owned(),
            1.0 / images_per_crop_call as f64,
        );
        Ok(Self {
            face_crop,
            images_per_crop_call: images_per_crop_call as f64,
            faces_per_crop_call,
            faces_per_classifier_call: crops_sent as f64 / classify.len().max(1) as f64,
            classify,
            faces,
            calls_per_image,
        })
    }

    fn for_function(&self, function: Function) -> &[Payload] {
        match function {
            Function::FaceCrop => &self.face_crop,
            Function::Age | Function::Gender => &self.classify,
        }
    }
}
