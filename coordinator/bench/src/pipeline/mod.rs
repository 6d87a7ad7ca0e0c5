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

mod functions;
mod jobs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambdex::config::{Config, Credentials, DEFAULT_BATCH_WINDOW, DEFAULT_CROP_BATCH_SIZE};
use lambdex::pipeline::Pipeline;
use lambdex_local::procstat::{self, Process, peak_memory_of};

pub use functions::FunctionsProcess;
use jobs::run_jobs;

use crate::affinity;
use crate::table::measures_table;

#[derive(Debug, clap::Args)]
pub struct Args {
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
pub const SEQUENTIAL_CALLS: f64 = 2.0;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.serve_functions {
        if !args.functions_cpus.is_empty() {
            affinity::pin_process(&args.functions_cpus)?;
        }
        return functions::serve(
            Duration::from_millis(args.latency_ms),
            args.faces,
            args.concurrency,
        )
        .await;
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
            format!("{} MB", peak_memory_of(Process::This)),
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

/// User + system CPU time of this process.
pub fn cpu_time() -> anyhow::Result<Duration> {
    Ok(procstat::cpu_time(Process::This)?)
}
