//! `lambdex bench models`: the single-thread median time of each stage of
//! the per-image path, the models alone against onnxruntime's reference
//! figures, and each function binary's cold start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use lambdex_lambdas::decode::{DecodeLimits, decode};
use lambdex_lambdas::detect::Region;
use lambdex_lambdas::handler::classify_request;
use lambdex_lambdas::{FaceCropConfig, MODEL_ENV, Task, models};
use lambdex_proto::{Base64Bytes, ClassifyRequest, FaceCropRequest};

use crate::functions::InProcess;
use lambdex_lambdas::oneshot::{Answer, invoke_once, sibling_binary};

/// onnxruntime 1.32, single thread, on this kind of machine (see
/// `models/README.md`): BlazeFace 128, BlazeFace 256, age-v1, gender-v1.
const ONNXRUNTIME_MS: [(&str, f64); 4] = [
    ("blazeface-128", 1.13),
    ("blazeface-256", 5.7),
    ("age-v1", 1.1),
    ("gender-v1", 0.29),
];

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The photo to measure with.
    #[arg(long, default_value_os_t = default_image())]
    image: PathBuf,
    /// Measured runs of each stage (after one warm-up).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Cold starts measured per function binary (0 skips them).
    #[arg(long, default_value_t = 10)]
    cold_starts: usize,
    /// The folder holding blazeface/ and age-gender/.
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
}

fn default_image() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/astronaut.png"
    ))
}

/// Median of `iterations` timed runs of `work`, after one warm-up, in ms.
fn median_ms<T>(iterations: usize, mut work: impl FnMut() -> T) -> f64 {
    std::hint::black_box(work());
    let mut times: Vec<f64> = (0..iterations.max(1))
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(work());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub async fn models(args: BenchArgs) -> anyhow::Result<()> {
    let models_dir = match args.models_dir.clone() {
        Some(dir) => dir,
        None => models::models_dir()?,
    };
    let functions = InProcess::load(&models_dir, FaceCropConfig::default())?;
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let n = args.iterations;
    let cropper = functions.cropper();
    let image = decode(&bytes, DecodeLimits::default())?;
    let faces = cropper.detect(&image)?;
    let face = faces.first().context("the bench image must show a face")?;
    let chip = cropper.chip(&image, face);
    let (age, gender) = (
        functions.classifier(Task::Age),
        functions.classifier(Task::Gender),
    );
    let detector = cropper.detector();
    let whole = Region::whole(&image);

    println!(
        "lambdex bench models — {} ({}×{}, {} face(s)), median of {n} runs, one thread\n",
        args.image.display(),
        image.width(),
        image.height(),
        faces.len()
    );

    // The networks alone, against onnxruntime.
    let front_input = detector.front().input(&image, whole);
    let back_input = detector.back().input(&image, whole);
    let age_input = age.input(std::slice::from_ref(&chip));
    let gender_input = gender.input(std::slice::from_ref(&chip));
    let model_ms = [
        median_ms(n, || detector.front().infer(front_input.clone())),
        median_ms(n, || detector.back().infer(back_input.clone())),
        median_ms(n, || age.infer(age_input.clone())),
        median_ms(n, || gender.infer(gender_input.clone())),
    ];
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "model (inference only)",
        "tract ms",
        "onnxruntime ms",
        "ratio",
    ]);
    for ((name, reference), ms) in ONNXRUNTIME_MS.iter().zip(model_ms) {
        table.add_row(vec![
            (*name).to_owned(),
            format!("{ms:.2}"),
            format!("{reference:.2}"),
            format!("{:.2}×", ms / reference),
        ]);
    }
    let (ours, theirs): (f64, f64) = (
        model_ms.iter().sum(),
        ONNXRUNTIME_MS.iter().map(|(_, ms)| ms).sum(),
    );
    table.add_row(vec![
        "per-image model time (one face)".to_owned(),
        format!("{ours:.2}"),
        format!("{theirs:.2}"),
        format!("{:.2}× (target ≤ 1.20×)", ours / theirs),
    ]);
    println!("{table}\n");

    // Each stage of the per-image path, as the functions run it.
    let crop_request = FaceCropRequest {
        image: Base64Bytes(bytes.clone()),
    };
    let crop_response = cropper.crop(&crop_request)?;
    let classify = ClassifyRequest {
        crops: crop_response.faces.iter().map(|f| f.crop.clone()).collect(),
    };
    let stages = [
        (
            "decode",
            median_ms(n, || decode(&bytes, DecodeLimits::default())),
        ),
        (
            "detect (both models, NMS)",
            median_ms(n, || cropper.detect(&image)),
        ),
        (
            "align + crop (per face)",
            median_ms(n, || cropper.chip(&image, face)),
        ),
        (
            "face-crop function (all of the above + PNG)",
            median_ms(n, || cropper.crop(&crop_request)),
        ),
        (
            "age function (batch of the image's faces)",
            median_ms(n, || classify_request(age, &classify)),
        ),
        (
            "gender function (batch of the image's faces)",
            median_ms(n, || classify_request(gender, &classify)),
        ),
        (
            "whole per-image path",
            median_ms(n, || {
                let crops = cropper.crop(&crop_request);
                (
                    crops,
                    classify_request(age, &classify),
                    classify_request(gender, &classify),
                )
            }),
        ),
    ];
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["stage", "median ms"]);
    for (stage, ms) in stages {
        table.add_row(vec![stage.to_owned(), format!("{ms:.2}")]);
    }
    println!("{table}\n");

    if args.cold_starts > 0 {
        cold_starts(&models_dir, &crop_request, &classify, args.cold_starts).await?;
    }
    Ok(())
}

/// Process start → first answer of each function binary, models loaded.
async fn cold_starts(
    models_dir: &std::path::Path,
    crop_request: &FaceCropRequest,
    classify: &ClassifyRequest,
    runs: usize,
) -> anyhow::Result<()> {
    let functions = [
        (
            "face-crop",
            "face-crop",
            None,
            serde_json::to_vec(crop_request)?,
        ),
        (
            "age",
            "classify",
            Some("age"),
            serde_json::to_vec(classify)?,
        ),
        (
            "gender",
            "classify",
            Some("gender"),
            serde_json::to_vec(classify)?,
        ),
    ];
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "function",
        "cold start median ms",
        "min",
        "max",
    ]);
    for (name, binary, model, event) in functions {
        let Some(path) = sibling_binary(binary) else {
            println!(
                "cold start: no {binary} binary beside this one; build it with `cargo build --release --workspace`"
            );
            return Ok(());
        };
        let mut env = HashMap::from([(
            models::MODELS_DIR_ENV.to_owned(),
            models_dir.display().to_string(),
        )]);
        if let Some(model) = model {
            env.insert(MODEL_ENV.to_owned(), model.to_owned());
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let invocation =
                invoke_once(&path, &env, event.clone(), Duration::from_secs(60)).await?;
            if let Answer::Error(body) = &invocation.answer {
                anyhow::bail!(
                    "{name} answered an error: {}",
                    String::from_utf8_lossy(body)
                );
            }
            times.push(invocation.cold_start.as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        table.add_row(vec![
            name.to_owned(),
            format!("{:.1} (target ≤ 150)", times[times.len() / 2]),
            format!("{:.1}", times[0]),
            format!("{:.1}", times[times.len() - 1]),
        ]);
    }
    println!("{table}");
    Ok(())
}
