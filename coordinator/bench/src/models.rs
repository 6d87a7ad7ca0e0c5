//! `lambdex bench models`: the single-thread median time of each stage of
//! the per-image path, the models alone against onnxruntime's reference
//! figures, and each function's cold start on the local Lambda.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use lambdex_functions::decode::{DecodeLimits, decode};
use lambdex_functions::detect::Region;
use lambdex_functions::handler::classify_request;
use lambdex_functions::onnx::{self, OnnxFile};
use lambdex_functions::{FaceCropConfig, FaceCropper, Task, models};
use lambdex_local::config::PROJECT_MEMORY_MB;
use lambdex_local::{InvokeInput, LocalConfig, LocalLambda};
use lambdex_proto::Report;
use lambdex_proto::{Base64Bytes, ClassifyRequest, FaceCropRequest};

use crate::machine::{Machine, Simd};

/// onnxruntime 1.32, single thread, on an AMD EPYC with AVX-512 (see
/// `models/PROVENANCE.md`): BlazeFace 128, BlazeFace 256, age-v1, gender-v1.
const ONNXRUNTIME_MS: [(&str, f64); 4] = [
    ("blazeface-128", 1.13),
    ("blazeface-256", 5.7),
    ("age-v1", 1.1),
    ("gender-v1", 0.29),
];
/// The SIMD level of the machine [`ONNXRUNTIME_MS`] was measured on: on
/// another, the ratios compare two machines.
const ONNXRUNTIME_SIMD: Simd = Simd::Avx512;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The photo to measure with.
    #[arg(long, default_value_os_t = crate::default_image())]
    image: PathBuf,
    /// Measured runs of each stage (after one warm-up).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Cold starts measured per function binary (0 skips them).
    #[arg(long, default_value_t = 10)]
    cold_starts: usize,
    /// Also print, for each network, where a run spends its time op by op,
    /// with our kernels and with tract's alone (each node timed over the
    /// measured runs).
    #[arg(long)]
    layers: bool,
    /// The folder holding blazeface/ and age-gender/.
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let models_dir = match args.models_dir.clone() {
        Some(dir) => dir,
        None => models::models_dir()?,
    };
    let cropper = FaceCropper::load(&models_dir, FaceCropConfig::default())?;
    let age = models::load_classifier(&models_dir, Task::Age)?;
    let gender = models::load_classifier(&models_dir, Task::Gender)?;
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let n = args.iterations;
    let image = decode(&bytes, DecodeLimits::default())?;
    let faces = cropper.detect(&image)?;
    let face = faces.first().context("the bench image must show a face")?;
    let chip = cropper.chip(&image, face);
    let detector = cropper.detector();
    let whole = Region::whole(&image);

    println!(
        "lambdex bench models — {} ({}×{}, {} face(s)), median of {n} runs, one thread\n",
        args.image.display(),
        image.width(),
        image.height(),
        faces.len()
    );
    let host = Machine::this();
    println!("host: {host}\n");

    // The networks alone, against onnxruntime.
    let front_input = detector.front().input(&image, whole);
    let back_input = detector.back().input(&image, whole);
    let age_input = age.input(&chip);
    let gender_input = gender.input(&chip);
    let model_ms = [
        median_ms(n, || detector.front().infer(front_input.clone())),
        median_ms(n, || detector.back().infer(back_input.clone())),
        median_ms(n, || age.infer(age_input.clone())),
        median_ms(n, || gender.infer(gender_input.clone())),
    ];
    // The same networks on tract's kernels alone: what `kernels` saves.
    let (_, age_file, age_side) = Task::Age.model();
    let (_, gender_file, gender_side) = Task::Gender.model();
    let tract_only = [
        (models::BLAZEFACE_FRONT, vec![1, 128, 128, 3], &front_input),
        (models::BLAZEFACE_BACK, vec![1, 256, 256, 3], &back_input),
        (
            age_file,
            vec![1, 3, age_side as usize, age_side as usize],
            &age_input,
        ),
        (
            gender_file,
            vec![1, 3, gender_side as usize, gender_side as usize],
            &gender_input,
        ),
    ];
    let mut tract_ms = Vec::new();
    let mut layers = Vec::new();
    for (file, shape, input) in tract_only {
        let model = OnnxFile::read(&models_dir.join(file))?;
        let plan = model.tract_plan(&shape)?;
        tract_ms.push(median_ms(n, || onnx::run(&plan, input.clone())));
        if args.layers {
            let ours = onnx::profile(&model.plan(&shape)?, input, n)?;
            layers.push((file, layers_table(&ours, &onnx::profile(&plan, input, n)?)));
        }
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "model (inference only)",
        "tract + our kernels ms",
        "tract's kernels only ms",
        "onnxruntime ms",
        "ratio",
    ]);
    for (((name, reference), ms), tract_ms) in ONNXRUNTIME_MS.iter().zip(model_ms).zip(tract_ms) {
        table.add_row(vec![
            (*name).to_owned(),
            format!("{ms:.2}"),
            format!("{tract_ms:.2}"),
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
        String::new(),
        format!("{theirs:.2}"),
        format!("{:.2}× (target ≤ 1.20×)", ours / theirs),
    ]);
    println!("{table}\n");
    if host.simd != ONNXRUNTIME_SIMD {
        println!(
            "onnxruntime's times were measured with {ONNXRUNTIME_SIMD}; this host has {}, so the \
             ratios compare two machines (onnxruntime here: see models/PROVENANCE.md).\n",
            host.simd
        );
    }
    for (file, table) in layers {
        println!("{file}, op by op (mean per run):\n{table}\n");
    }

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
            median_ms(n, || classify_request(&age, &classify)),
        ),
        (
            "gender function (batch of the image's faces)",
            median_ms(n, || classify_request(&gender, &classify)),
        ),
        (
            "whole per-image path",
            median_ms(n, || {
                let crops = cropper.crop(&crop_request);
                (
                    crops,
                    classify_request(&age, &classify),
                    classify_request(&gender, &classify),
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

/// Both plans' time by op, side by side: our plan's ops, slowest first,
/// then those only tract's plan runs, slowest first.
fn layers_table(ours: &[onnx::OpTime], tract: &[onnx::OpTime]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "op",
        "nodes (ours)",
        "ms (ours)",
        "nodes (tract's)",
        "ms (tract's)",
    ]);
    let cells = |times: &[onnx::OpTime], op: &str| {
        times.iter().find(|time| time.op == op).map_or_else(
            || [String::new(), String::new()],
            |time| {
                [
                    time.nodes.to_string(),
                    format!("{:.3}", time.mean.as_secs_f64() * 1000.0),
                ]
            },
        )
    };
    let mut ops: Vec<&str> = ours.iter().map(|time| time.op.as_str()).collect();
    ops.extend(
        tract
            .iter()
            .map(|time| time.op.as_str())
            .filter(|op| !ours.iter().any(|time| time.op == *op)),
    );
    for op in ops {
        let [ours_nodes, ours_ms] = cells(ours, op);
        let [tract_nodes, tract_ms] = cells(tract, op);
        table.add_row(vec![
            op.to_owned(),
            ours_nodes,
            ours_ms,
            tract_nodes,
            tract_ms,
        ]);
    }
    let total = |times: &[onnx::OpTime]| {
        let ms: f64 = times
            .iter()
            .map(|time| time.mean.as_secs_f64() * 1000.0)
            .sum();
        format!("{ms:.3}")
    };
    table.add_row(vec![
        "all (timed node by node)".to_owned(),
        String::new(),
        total(ours),
        String::new(),
        total(tract),
    ]);
    table
}

/// Each function's cold start as the local Lambda reports it: a new
/// process of this binary per run, its `Init Duration` (process start →
/// first poll for an event, models loaded) and its first invocation.
async fn cold_starts(
    models_dir: &std::path::Path,
    crop_request: &FaceCropRequest,
    classify: &ClassifyRequest,
    runs: usize,
) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("finding this program")?;
    let project = LocalConfig::project_defaults(Some(program), models_dir.to_owned());
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "function (memory MB)",
        "init duration median ms",
        "min",
        "max",
        "init + first call median ms",
        "max memory used MB",
    ]);
    let mut cpu_note = None;
    for (name, event) in [
        ("face-crop", serde_json::to_vec(crop_request)?),
        ("age", serde_json::to_vec(classify)?),
        ("gender", serde_json::to_vec(classify)?),
    ] {
        let mut config = project.clone();
        config.functions.retain(|function, _| function == name);
        let mut reports = Vec::with_capacity(runs);
        for _ in 0..runs {
            // A new local Lambda each run: every call is a cold start.
            let lambda = LocalLambda::start(config.clone(), 0).await?;
            cpu_note = lambda.cpu_limit_unavailable().map(str::to_owned);
            let output = lambda
                .engine()
                .invoke(InvokeInput {
                    function: name.to_owned(),
                    log_tail: true,
                    payload: event.clone().into(),
                    ..InvokeInput::default()
                })
                .await;
            lambda.shutdown().await;
            let output = output?;
            if output.function_error.is_some() {
                anyhow::bail!(
                    "{name} answered an error: {}",
                    String::from_utf8_lossy(&output.payload)
                );
            }
            let log = output.log.unwrap_or_default();
            reports.push(Report::parse(&log).context("no REPORT line in the log")?);
        }
        let init = |r: &Report| r.init_duration_ms.unwrap_or(f64::NAN);
        let mut inits: Vec<f64> = reports.iter().map(init).collect();
        inits.sort_by(f64::total_cmp);
        let mut totals: Vec<f64> = reports.iter().map(|r| init(r) + r.duration_ms).collect();
        totals.sort_by(f64::total_cmp);
        let memory = reports
            .iter()
            .map(|r| r.max_memory_used_mb)
            .max()
            .unwrap_or(0);
        table.add_row(vec![
            format!("{name} ({PROJECT_MEMORY_MB})"),
            format!("{:.1}", inits[inits.len() / 2]),
            format!("{:.1}", inits[0]),
            format!("{:.1}", inits[inits.len() - 1]),
            format!("{:.1} (target ≤ 150)", totals[totals.len() / 2]),
            memory.to_string(),
        ]);
    }
    println!("Cold starts on the local Lambda, {runs} per function");
    if let Some(reason) = cpu_note {
        println!("(CPU not limited to memory/1769 of a core: {reason})");
    }
    println!("{table}");
    Ok(())
}
