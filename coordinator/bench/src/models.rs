//! `lambdex bench models`: the single-thread median time of each stage of
//! the per-image path, the networks alone at every SIMD level this host
//! runs (each level in a child process of this program, started as
//! `lambdex bench models --one-level`) beside onnxruntime measured in the
//! same run, and each function's cold start on the local Lambda.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use lambdex_functions::decode::{DecodeLimits, decode};
use lambdex_functions::detect::Region;
use lambdex_functions::handler::classify_request;
use lambdex_functions::kernels::Choice;
use lambdex_functions::kernels::simd::{self, Level, SIMD_ENV, TRACT_ISA_ENV};
use lambdex_functions::onnx::{self, OnnxFile, Tensor};
use lambdex_functions::{FaceCropConfig, FaceCropper, Task, models};
use lambdex_local::config::PROJECT_MEMORY_MB;
use lambdex_local::{InvokeInput, LocalConfig, LocalLambda};
use lambdex_proto::Report;
use lambdex_proto::{Base64Bytes, ClassifyRequest, FaceCropRequest};

use serde::{Deserialize, Serialize};

use crate::machine::Machine;

/// The flag of the child that measures one level (`LAMBDEX_SIMD`'s) and
/// prints JSON.
const CHILD_FLAG: &str = "--one-level";

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
    /// The SIMD levels to measure the networks at (each in a process of
    /// its own, tract's kernels taken down to the same level), e.g.
    /// `avx2,sse`. Default: every level this CPU runs.
    #[arg(long, value_delimiter = ',', value_parser = parse_level)]
    levels: Vec<Level>,
    /// Measure only the level this process runs at and print JSON (what
    /// the per-level children do).
    #[arg(long = "one-level", hide = true)]
    one_level: bool,
}

fn parse_level(name: &str) -> Result<Level, String> {
    let level = Level::parse(name)
        .ok_or_else(|| format!("{name:?}: not a SIMD level (avx512, avx2, sse, neon or scalar)"))?;
    if Level::available().contains(&level) {
        Ok(level)
    } else {
        Err(format!(
            "this CPU cannot run {level} (it has {})",
            Level::available()
                .iter()
                .map(|level| level.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The four networks of the per-image path at one SIMD level.
#[derive(Debug, Serialize, Deserialize)]
struct LevelTimes {
    level: String,
    /// The kernels the table chooses at this level.
    chosen: String,
    networks: Vec<NetworkTimes>,
    /// With `--layers`: each network's op-by-op table, rendered.
    layers: Vec<(String, String)>,
}

/// One network's median ms with the chosen kernels, with all of ours and
/// with tract's alone.
#[derive(Debug, Serialize, Deserialize)]
struct NetworkTimes {
    name: String,
    chosen_ms: f64,
    ours_ms: f64,
    tract_ms: f64,
}

/// The networks of the per-image path: name, file, input shape.
fn networks() -> [(&'static str, &'static str, Vec<usize>); 4] {
    let (_, age_file, age_side) = Task::Age.model();
    let (_, gender_file, gender_side) = Task::Gender.model();
    let (age_side, gender_side) = (age_side as usize, gender_side as usize);
    [
        (
            "blazeface-128",
            models::BLAZEFACE_FRONT,
            vec![1, 128, 128, 3],
        ),
        (
            "blazeface-256",
            models::BLAZEFACE_BACK,
            vec![1, 256, 256, 3],
        ),
        ("age-v1", age_file, vec![1, 3, age_side, age_side]),
        (
            "gender-v1",
            gender_file,
            vec![1, 3, gender_side, gender_side],
        ),
    ]
}

/// Median of `iterations` timed runs of `work`, after one warm-up, in ms.
fn median_ms<T>(iterations: usize, mut work: impl FnMut() -> T) -> f64 {
    std::hint::black_box(work());
    median(
        (0..iterations.max(1))
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(work());
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

/// The middle of `times` (not empty).
fn median(mut times: Vec<f64>) -> f64 {
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

    let inputs = [
        detector.front().input(&image, whole),
        detector.back().input(&image, whole),
        age.input(&chip),
        gender.input(&chip),
    ];
    if args.one_level {
        let times = level_times(&models_dir, &inputs, n, args.layers)?;
        println!("{}", serde_json::to_string(&times)?);
        return Ok(());
    }

    println!(
        "lambdex bench models — {} ({}×{}, {} face(s)), median of {n} runs, one thread\n",
        args.image.display(),
        image.width(),
        image.height(),
        faces.len()
    );
    let host = Machine::this();
    println!("host: {host}\n");

    // The networks alone at every level, beside onnxruntime on this host.
    let levels = if args.levels.is_empty() {
        Level::available()
    } else {
        args.levels.clone()
    };
    let mut measured = Vec::with_capacity(levels.len());
    for level in levels {
        measured.push(measure_level(level, &args, &models_dir)?);
    }
    let reference = onnxruntime_ms(&models_dir, n);
    println!("{}\n", levels_table(&measured, reference.as_ref().ok()));
    match &reference {
        Ok(reference) => println!(
            "onnxruntime {} ran at this CPU's widest level ({}), one thread.\n",
            reference.version, host.simd
        ),
        Err(reason) => println!("onnxruntime not measured: {reason}\n"),
    }
    for times in &measured {
        for (file, table) in &times.layers {
            println!(
                "{file} at {}, op by op (mean per run):\n{table}\n",
                times.level
            );
        }
    }

    // Each stage of the per-image path, as the functions run it.
    let crop_request = FaceCropRequest {
        image: Base64Bytes(bytes.clone()),
    };
    let crop_response = cropper.crop(&crop_request)?;
    // Each net reads the chip of its own size, as the coordinator sends it.
    let chips_of = |size: u32| ClassifyRequest {
        crops: crop_response
            .faces
            .iter()
            .map(|f| f.chip(Some(size)).clone())
            .collect(),
    };
    let classify = chips_of(age.input_size());
    let classify_gender = chips_of(gender.input_size());
    let rect = lambdex_functions::landmarks::dlib_box(face);
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
            "landmarks (dlib's five points, per face)",
            median_ms(n, || cropper.predictor().predict(&image, rect)),
        ),
        (
            "landmarks + both chips (per face)",
            median_ms(n, || cropper.align(&image, face)),
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
            median_ms(n, || classify_request(&gender, &classify_gender)),
        ),
        (
            "whole per-image path",
            median_ms(n, || {
                let crops = cropper.crop(&crop_request);
                (
                    crops,
                    classify_request(&age, &classify),
                    classify_request(&gender, &classify_gender),
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
        cold_starts(
            &models_dir,
            &crop_request,
            [&classify, &classify_gender],
            args.cold_starts,
        )
        .await?;
    }
    Ok(())
}

/// The networks at this process's SIMD level: with the chosen kernels,
/// all of ours and tract's alone, and with `layers` op by op.
fn level_times(
    models_dir: &Path,
    inputs: &[Tensor; 4],
    n: usize,
    layers: bool,
) -> anyhow::Result<LevelTimes> {
    let chosen = Choice::current();
    let mut times = LevelTimes {
        level: simd::level().to_string(),
        chosen: chosen.to_string(),
        networks: Vec::new(),
        layers: Vec::new(),
    };
    for ((name, file, shape), input) in networks().into_iter().zip(inputs) {
        let model = OnnxFile::read(&models_dir.join(file))?;
        let plans = [
            model.plan_with(&shape, chosen)?,
            model.plan_with(&shape, Choice::OURS)?,
            model.tract_plan(&shape)?,
        ];
        let [chosen_ms, ours_ms, tract_ms] = interleaved_medians_ms(n, &plans, input);
        times.networks.push(NetworkTimes {
            name: name.to_owned(),
            chosen_ms,
            ours_ms,
            tract_ms,
        });
        if layers {
            let ours = onnx::profile(&plans[1], input, n)?;
            let table = layers_table(&ours, &onnx::profile(&plans[2], input, n)?);
            times.layers.push((file.to_owned(), table.to_string()));
        }
    }
    Ok(times)
}

/// Each plan's median ms over `n` rounds that run every plan once, so
/// that what drifts over a run (another process, the CPU's clock) weighs
/// on all three alike.
fn interleaved_medians_ms(n: usize, plans: &[onnx::Plan; 3], input: &Tensor) -> [f64; 3] {
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..=n.max(1) {
        for (plan, times) in plans.iter().zip(&mut times) {
            let started = Instant::now();
            let _ = std::hint::black_box(onnx::run(plan, input.clone()));
            // The first round warms up.
            if round > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    times.map(median)
}

/// Runs this bench again in a process of its own at `level`, tract's
/// kernels capped at the same level (`TRACT_CPU_ISA`, read once per
/// process), and reads what it measured.
fn measure_level(level: Level, args: &Args, models_dir: &Path) -> anyhow::Result<LevelTimes> {
    let program = std::env::current_exe().context("finding this program")?;
    let mut command = std::process::Command::new(program);
    command
        .args(["bench", "models", CHILD_FLAG, "--cold-starts", "0"])
        .arg("--iterations")
        .arg(args.iterations.to_string())
        .arg("--image")
        .arg(&args.image)
        .arg("--models-dir")
        .arg(models_dir)
        .env(SIMD_ENV, level.name())
        .env_remove(TRACT_ISA_ENV)
        .stderr(std::process::Stdio::inherit());
    if let Some(isa) = level.tract_isa() {
        command.env(TRACT_ISA_ENV, isa);
    }
    if args.layers {
        command.arg("--layers");
    }
    let output = command
        .output()
        .with_context(|| format!("measuring at {level}"))?;
    anyhow::ensure!(
        output.status.success(),
        "measuring at {level}: the child process {}",
        output.status
    );
    let json = String::from_utf8_lossy(&output.stdout);
    let line = json.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading what {level} measured: {line}"))
}

/// onnxruntime's times on this host, in this run.
#[derive(Debug, Deserialize)]
struct Reference {
    version: String,
    /// Median ms by network name.
    networks: BTreeMap<String, f64>,
}

/// Runs `models/onnxruntime_times.py` (onnxruntime and numpy must be
/// importable: `PYTHONPATH` may point at them); why not, if it cannot.
fn onnxruntime_ms(models_dir: &Path, n: usize) -> Result<Reference, String> {
    let script = models_dir.join("onnxruntime_times.py");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args(["--json", "--iterations"])
        .arg(n.max(100).to_string())
        .output()
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        return Err(format!(
            "{last} (install it with `python3 -m pip install --target DIR onnxruntime numpy` \
             and set PYTHONPATH=DIR)"
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("{}: unreadable output: {error}", script.display()))
}

/// The target per-image model time against onnxruntime at `level`.
fn target(level: &str) -> Option<f64> {
    match level {
        "avx512" => Some(1.0),
        "avx2" => Some(1.2),
        _ => None,
    }
}

/// One row per network and a per-image total, per level.
fn levels_table(measured: &[LevelTimes], reference: Option<&Reference>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "SIMD level",
        "network (inference only)",
        "chosen kernels ms",
        "all of ours ms",
        "tract's only ms",
        "onnxruntime ms",
        "chosen / onnxruntime",
    ]);
    let reference_ms = |name: &str| reference.and_then(|r| r.networks.get(name).copied());
    let ratio = |ms: f64, reference: Option<f64>| {
        reference.map_or_else(String::new, |reference| format!("{:.2}×", ms / reference))
    };
    for times in measured {
        for network in &times.networks {
            let reference = reference_ms(&network.name);
            table.add_row(vec![
                times.level.clone(),
                network.name.clone(),
                format!("{:.2}", network.chosen_ms),
                format!("{:.2}", network.ours_ms),
                format!("{:.2}", network.tract_ms),
                reference.map_or_else(String::new, |ms| format!("{ms:.2}")),
                ratio(network.chosen_ms, reference),
            ]);
        }
        let sum = |ms: fn(&NetworkTimes) -> f64| times.networks.iter().map(ms).sum::<f64>();
        let reference: Option<f64> = times
            .networks
            .iter()
            .map(|network| reference_ms(&network.name))
            .sum();
        let chosen = sum(|network| network.chosen_ms);
        let mut judged = ratio(chosen, reference);
        if let (Some(target), false) = (target(&times.level), judged.is_empty()) {
            judged.push_str(&format!(" (target ≤ {target:.2}×)"));
        }
        table.add_row(vec![
            times.level.clone(),
            format!("per-image model time, kernels: {}", times.chosen),
            format!("{chosen:.2}"),
            format!("{:.2}", sum(|network| network.ours_ms)),
            format!("{:.2}", sum(|network| network.tract_ms)),
            reference.map_or_else(String::new, |ms| format!("{ms:.2}")),
            judged,
        ]);
    }
    table
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
    [classify_age, classify_gender]: [&ClassifyRequest; 2],
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
        ("age", serde_json::to_vec(classify_age)?),
        ("gender", serde_json::to_vec(classify_gender)?),
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
