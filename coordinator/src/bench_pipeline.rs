//! `lambdex bench pipeline`: the coordinator alone, against functions that
//! only sleep. N jobs go through the real path — download from a local HTTP
//! server, header check, face-crop, both classifiers in parallel — with C
//! jobs in flight, against functions of fixed latency L. A job takes two
//! function latencies (crop, then the classifiers at once), so the bound
//! is C / 2L jobs a second. The batch window (on by default) lets several
//! images share a face-crop call, and crops of several images a classifier
//! call: fewer invocations per job, for at most the window's wait. A
//! sleeping function takes L per call whatever its batch; a real face-crop
//! call takes about its images' time in turn.
//!
//! The functions and the image server run in a child process (`lambdex
//! bench pipeline --serve-functions`: a local Lambda with sleeping
//! in-process handlers, and an HTTP server with one JPEG), so the CPU time
//! and peak memory printed are the coordinator's own; `--pin` puts the
//! coordinator on one CPU and the child on the others. Every job is its
//! own task, as in the worker. The rate is given over the whole run and
//! over the stretch while C jobs were in flight (the start and the tail,
//! when fewer are, left out), with a job's mean time in each stage.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt as _;
use lambda_runtime::Diagnostic;
use lambdex_lambdas::local::config::{FunctionSpec, Handler};
use lambdex_lambdas::local::instance::peak_memory_mb;
use lambdex_lambdas::local::{InProcessFunction, InProcessHandler, LocalConfig, LocalLambda};
use lambdex_proto::{
    AgePrediction, BBox, Base64Bytes, ClassifyRequest, ClassifyResponse, ClassifyTimings, Crop,
    CropFormat, CropTimings, CroppedFace, FaceCropBatchRequest, FaceCropBatchResponse,
    FaceCropResponse, Gender, GenderPrediction, ImageResult, ImageSize, Job, Keypoints, ModelInfo,
    Point, Prediction, Status,
};
use serde::de::IgnoredAny;

use crate::affinity;
use crate::config::{Config, Credentials, DEFAULT_BATCH_WINDOW, DEFAULT_CROP_BATCH_SIZE};
use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct PipelineBenchArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Jobs in flight (C).
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Each function's latency (L), in milliseconds.
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Faces the face-crop function finds in every image.
    #[arg(long, default_value_t = 2)]
    faces: usize,
    /// The batch window of face-crop and of the classifiers, in
    /// milliseconds (0: each image, and each image's crops, go alone).
    #[arg(long, default_value_t = DEFAULT_BATCH_WINDOW.as_millis() as u64)]
    batch_window_ms: u64,
    /// Images per face-crop call at most (1: each image alone).
    #[arg(long, default_value_t = DEFAULT_CROP_BATCH_SIZE)]
    crop_batch: usize,
    /// Run the coordinator on one CPU and the functions on the others
    /// (Linux; needs 2 CPUs): the coordinator measured on one core, without
    /// the functions' threads in its way.
    #[arg(long)]
    pin: bool,
    /// The CPUs the functions' process runs on (what `--pin` gives its
    /// child).
    #[arg(long, hide = true, value_delimiter = ',')]
    functions_cpus: Vec<usize>,
    /// Serve the sleeping functions and the image, and print both URLs
    /// (what the bench starts as its child).
    #[arg(long, hide = true)]
    serve_functions: bool,
}

/// Function latencies per job: the crop, then the classifiers at once.
pub(crate) const SEQUENTIAL_CALLS: f64 = 2.0;

pub async fn run(args: PipelineBenchArgs) -> anyhow::Result<()> {
    if args.serve_functions {
        if !args.functions_cpus.is_empty() {
            affinity::pin_process(&args.functions_cpus)?;
        }
        return serve(&args).await;
    }
    let pinned = args.pin.then(affinity::split_cpus).transpose()?;
    if let Some((coordinator, _)) = &pinned {
        affinity::pin_process(&[*coordinator])?;
    }
    let functions = FunctionsProcess::start(
        args.latency_ms,
        args.faces,
        args.concurrency,
        pinned.as_ref().map(|(_, functions)| functions.as_slice()),
    )?;

    let mut config = Config::default();
    config.lambda.endpoint_url = Some(functions.url.clone());
    config.lambda.credentials = Credentials::Local;
    config.fetch.allow = vec!["127.0.0.0/8".parse().expect("a network")];
    config.pipeline.max_jobs_in_flight = args.concurrency;
    let window = Duration::from_millis(args.batch_window_ms);
    for model in config.models.values_mut() {
        model.batch_window = Some(window);
    }
    config.face_crop.batch_window = Some(window);
    config.face_crop.batch_size = Some(args.crop_batch);
    config.validate()?;
    let pipeline = Arc::new(Pipeline::new(config).await?);

    // Warm-up: instances started, connections open.
    run_jobs(
        &pipeline,
        &functions.image_url,
        args.concurrency,
        args.concurrency,
    )
    .await?;
    let (cpu_before, functions_before) = (cpu_time()?, functions.cpu_time()?);
    let started = Instant::now();
    let run = run_jobs(&pipeline, &functions.image_url, args.jobs, args.concurrency).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_time()? - cpu_before;
    let functions_cores =
        (functions.cpu_time()? - functions_before).as_secs_f64() / elapsed.as_secs_f64();

    let achieved = args.jobs as f64 / elapsed.as_secs_f64();
    let bound = args.concurrency as f64 / (SEQUENTIAL_CALLS * args.latency_ms as f64 / 1000.0);
    let cpu_us_per_job = cpu.as_secs_f64() * 1e6 / args.jobs as f64;
    let cores = cpu.as_secs_f64() / elapsed.as_secs_f64();
    let stats = pipeline.stats();
    let throttled: u64 = stats.functions.values().map(|s| s.throttled).sum();
    let retries: u64 = stats.functions.values().map(|s| s.retries).sum();
    let classifier_calls: u64 = stats
        .functions
        .iter()
        .filter(|(name, _)| *name != "face_crop")
        .map(|(_, s)| s.calls)
        .sum();
    let crop_calls = stats.functions.get("face_crop").map_or(0, |s| s.calls);
    // The warm-up's jobs count in the callers' counters too.
    let warmed_jobs = (args.jobs + args.concurrency) as f64;

    let table = measures_table([
        ("jobs", args.jobs.to_string()),
        ("jobs in flight (C)", args.concurrency.to_string()),
        ("function latency (L)", format!("{} ms", args.latency_ms)),
        ("faces per image", args.faces.to_string()),
        ("batch window", format!("{} ms", args.batch_window_ms)),
        (
            "images per face-crop call at most",
            args.crop_batch.to_string(),
        ),
        (
            "face-crop calls per job",
            format!("{:.3}", crop_calls as f64 / warmed_jobs),
        ),
        (
            "classifier calls per job (all models)",
            format!("{:.3}", classifier_calls as f64 / warmed_jobs),
        ),
        ("elapsed", format!("{:.2} s", elapsed.as_secs_f64())),
        ("bound C / 2L", format!("{bound:.0} jobs/s")),
        (
            "achieved, whole run (start and tail included)",
            format!(
                "{achieved:.0} jobs/s, {:.1} % of the bound",
                100.0 * achieved / bound
            ),
        ),
        (
            "achieved / bound, while C jobs were in flight",
            run.steady_rate(args.concurrency).map_or_else(
                || "the run is too short: give it more than 2 C jobs".to_owned(),
                |steady| format!("{:.1} % ({steady:.0} jobs/s)", 100.0 * steady / bound),
            ),
        ),
        ("coordinator CPU per job", format!("{cpu_us_per_job:.0} µs")),
        ("coordinator cores busy", format!("{cores:.2}")),
        (
            "functions and image server cores busy",
            format!(
                "{functions_cores:.2} (of {} on this machine)",
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
        ),
        (
            "coordinator peak memory (VmHWM)",
            format!("{} MB", peak_memory_mb(std::process::id())),
        ),
        ("throttled / retries", format!("{throttled} / {retries}")),
        (
            "CPUs",
            pinned.as_ref().map_or_else(
                || "shared by the coordinator and the functions (--pin: one each)".to_owned(),
                |(coordinator, functions)| {
                    format!("coordinator pinned to CPU {coordinator}, functions to {functions:?}")
                },
            ),
        ),
        (
            "a job's mean time by stage (crop and models: L plus waits)",
            run.stages
                .iter()
                .map(|(stage, ms)| format!("{stage} {ms:.1} ms"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]);
    println!("{table}");
    println!(
        "targets: ≥ 95 % of the bound with 1,000 jobs in flight on ≤ 1 core; ≤ 200 µs CPU per job"
    );
    drop(functions);
    Ok(())
}

/// A two-column table of a bench's measures.
pub(crate) fn measures_table<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["measure", "value"]);
    for (measure, value) in rows {
        table.add_row(vec![measure.to_owned(), value]);
    }
    table
}

/// What a run of jobs took.
struct Run {
    /// Each stage's mean time in milliseconds over the jobs, by stage name.
    stages: BTreeMap<String, f64>,
    /// When each job ended, earliest first.
    ends: Vec<Instant>,
}

impl Run {
    /// Jobs a second while `concurrency` jobs were in flight: from the end
    /// of the first `concurrency` jobs to the last end before fewer were
    /// left to start, so neither the start nor the tail counts. `None` when
    /// the run is too short to have such a stretch.
    fn steady_rate(&self, concurrency: usize) -> Option<f64> {
        let (first, last) = (concurrency, self.ends.len().checked_sub(concurrency)?);
        if last <= first {
            return None;
        }
        let seconds = (self.ends[last - 1] - self.ends[first - 1]).as_secs_f64();
        (seconds > 0.0).then(|| (last - first) as f64 / seconds)
    }
}

/// Runs `jobs` jobs, `concurrency` at a time.
async fn run_jobs(
    pipeline: &Arc<Pipeline>,
    url: &str,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let mut done = futures::stream::iter(0..jobs)
        .map(|i| {
            let pipeline = Arc::clone(pipeline);
            let job = Job::new(format!("bench-{i}"), url);
            tokio::spawn(async move { (pipeline.process(&job).await, Instant::now()) })
        })
        .buffer_unordered(concurrency);
    // Each document is read as it comes and dropped, so the peak memory
    // is the pipeline's, not a pile of finished documents.
    let mut stages = BTreeMap::<String, f64>::new();
    let mut ends = Vec::with_capacity(jobs);
    let (mut failed, mut first_failure) = (0, None);
    while let Some(next) = done.next().await {
        let (doc, end) = next.context("a job's task panicked")?;
        ends.push(end);
        if doc.status != Status::Ok {
            failed += 1;
            first_failure.get_or_insert(doc.failure);
            continue;
        }
        for timing in doc.timings {
            *stages.entry(timing.stage).or_default() += timing.ms;
        }
    }
    if let Some(failure) = first_failure {
        bail!("{failed} of {jobs} jobs did not succeed; the first: {failure:?}");
    }
    for total in stages.values_mut() {
        *total /= jobs.max(1) as f64;
    }
    ends.sort_unstable();
    Ok(Run { stages, ends })
}

/// The child process serving the sleeping functions and the image.
pub(crate) struct FunctionsProcess {
    child: std::process::Child,
    /// The local Lambda's endpoint.
    pub url: String,
    /// The one image every job fetches.
    pub image_url: String,
}

impl FunctionsProcess {
    /// The CPU time the functions and image server have used.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        process_cpu_time(&self.child.id().to_string())
    }

    /// Functions of `latency_ms`, the crop finding `faces`, with room for
    /// `concurrency` jobs in flight; on `cpus` only, if given.
    pub fn start(
        latency_ms: u64,
        faces: usize,
        concurrency: usize,
        cpus: Option<&[usize]>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args([
            "bench",
            "pipeline",
            "--serve-functions",
            "--latency-ms",
            &latency_ms.to_string(),
            "--faces",
            &faces.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ]);
        if let Some(cpus) = cpus {
            let cpus: Vec<String> = cpus.iter().map(ToString::to_string).collect();
            command.args(["--functions-cpus", &cpus.join(",")]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the functions' process")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some((url, image_url)) = line
            .trim()
            .split_once(' ')
            .filter(|(url, _)| url.starts_with("http://"))
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the functions' process did not start: {line:?}");
        };
        Ok(Self {
            url: url.to_owned(),
            image_url: image_url.to_owned(),
            child,
        })
    }
}

impl Drop for FunctionsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the child: a local Lambda of sleeping functions and the image
/// server, until killed.
async fn serve(args: &PipelineBenchArgs) -> anyhow::Result<()> {
    let latency = Duration::from_millis(args.latency_ms);
    let functions: [(&str, Arc<dyn InProcessFunction>); 3] = [
        ("face-crop", Arc::new(Sleeper::crop(latency, args.faces))),
        ("age", Arc::new(Sleeper::classify(latency, Kind::Age))),
        ("gender", Arc::new(Sleeper::classify(latency, Kind::Gender))),
    ];
    let config = LocalConfig {
        functions: functions
            .into_iter()
            .map(|(name, function)| {
                (
                    name.to_owned(),
                    FunctionSpec::new(Handler::InProcess(function)),
                )
            })
            .collect(),
        // A job holds one or two invocations at a time.
        account_concurrency: u32::try_from(args.concurrency * 3).unwrap_or(u32::MAX),
        ..LocalConfig::default()
    };
    let lambda = LocalLambda::start(config, 0).await?;
    let images = ImageServer::start().await?;
    println!("{} {}", lambda.endpoint_url(), images.url);
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Crop(usize),
    Age,
    Gender,
}

/// A function that sleeps L and answers a canned answer of the right shape.
#[derive(Debug)]
struct Sleeper {
    latency: Duration,
    kind: Kind,
}

impl Sleeper {
    fn crop(latency: Duration, faces: usize) -> Self {
        Self {
            latency,
            kind: Kind::Crop(faces),
        }
    }

    fn classify(latency: Duration, kind: Kind) -> Self {
        Self { latency, kind }
    }
}

struct SleeperInstance {
    latency: Duration,
    kind: Kind,
    /// Face-crop's answer for every image.
    answer: Option<FaceCropResponse>,
}

impl InProcessFunction for Sleeper {
    fn init(
        &self,
        _environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        Ok(Box::new(SleeperInstance {
            latency: self.latency,
            kind: self.kind,
            answer: match self.kind {
                Kind::Crop(faces) => Some(crop_answer(faces)),
                Kind::Age | Kind::Gender => None,
            },
        }))
    }
}

impl InProcessHandler for SleeperInstance {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        std::thread::sleep(self.latency);
        let fail = |error: serde_json::Error| Diagnostic {
            error_type: "InvalidRequest".to_owned(),
            error_message: error.to_string(),
        };
        match (&self.answer, self.kind) {
            (Some(answer), _) => {
                let request: FaceCropBatchRequest<IgnoredAny> =
                    serde_json::from_slice(event).map_err(fail)?;
                let response = FaceCropBatchResponse {
                    results: vec![ImageResult::Cropped(answer.clone()); request.images.len()],
                };
                serde_json::to_vec(&response).map_err(fail)
            }
            (None, kind) => {
                let request: ClassifyRequest = serde_json::from_slice(event).map_err(fail)?;
                serde_json::to_vec(&classify_answer(kind, request.crops.len())).map_err(fail)
            }
        }
    }
}

fn model(id: &str) -> ModelInfo {
    ModelInfo {
        id: id.to_owned(),
        sha256: "0".repeat(64),
    }
}

fn crop_answer(faces: usize) -> FaceCropResponse {
    let point = Point { x: 1.0, y: 1.0 };
    FaceCropResponse {
        image: ImageSize {
            width: 640,
            height: 480,
        },
        faces: (0..faces)
            .map(|i| CroppedFace {
                bbox: BBox {
                    x: 10.0 * i as f32,
                    y: 10.0,
                    width: 50.0,
                    height: 60.0,
                },
                keypoints: Keypoints {
                    right_eye: point,
                    left_eye: point,
                    nose_tip: point,
                    mouth: point,
                    right_ear: point,
                    left_ear: point,
                },
                score: 0.9,
                crop: Crop {
                    format: CropFormat::Png,
                    width: 64,
                    height: 64,
                    // About what a real 64 px crop weighs.
                    data: Base64Bytes(vec![7; 6 * 1024]),
                },
            })
            .collect(),
        detector: model("sleeping-detector"),
        timings: CropTimings::default(),
    }
}

fn classify_answer(kind: Kind, crops: usize) -> ClassifyResponse {
    let prediction = match kind {
        Kind::Gender => Prediction::Gender(GenderPrediction {
            label: Gender::Female,
            probability: 0.9,
        }),
        _ => Prediction::Age(AgePrediction {
            years: 30.0,
            std_dev: 5.0,
            top_bins: Vec::new(),
        }),
    };
    ClassifyResponse {
        model: model("sleeping-classifier"),
        predictions: vec![prediction; crops],
        timings: ClassifyTimings::default(),
    }
}

/// A local HTTP server with one small JPEG.
struct ImageServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    async fn start() -> anyhow::Result<Self> {
        let jpeg = tiny_jpeg()?;
        let app = axum::Router::new().route(
            "/image.jpg",
            axum::routing::get(move || {
                let jpeg = jpeg.clone();
                async move { ([("content-type", "image/jpeg")], jpeg) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/image.jpg", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, task })
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tiny_jpeg() -> anyhow::Result<axum::body::Bytes> {
    let picture = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner().into())
}

/// User + system CPU time of this process.
pub(crate) fn cpu_time() -> anyhow::Result<Duration> {
    process_cpu_time("self")
}

/// The CPU time `/proc/<process>/stat` shows (`self` or a pid).
fn process_cpu_time(process: &str) -> anyhow::Result<Duration> {
    // Fields 14 and 15: utime and stime in clock ticks.
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| path.clone())?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .with_context(|| format!("{path} is short"))?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// `sysconf(_SC_CLK_TCK)` on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ends_ms: &[u64]) -> Run {
        let start = Instant::now();
        Run {
            stages: BTreeMap::new(),
            ends: ends_ms
                .iter()
                .map(|ms| start + Duration::from_millis(*ms))
                .collect(),
        }
    }

    #[test]
    fn the_steady_rate_leaves_out_the_first_and_the_last_jobs_in_flight() {
        // Two in flight: a slow start, a job a millisecond, a slow tail.
        let run = run(&[50, 60, 61, 62, 63, 64, 65, 66, 200, 300]);
        // From the 2nd end (60 ms) to the 8th (66 ms): 6 jobs in 6 ms.
        let rate = run.steady_rate(2).expect("a steady stretch");
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(run.steady_rate(5), None, "no more than 2 C jobs");
    }
}
