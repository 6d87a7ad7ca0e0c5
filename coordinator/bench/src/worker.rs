//! `lambdex bench worker`: the queue path end to end. N jobs are published
//! (confirmed) to a queue of their own, then an in-process worker takes
//! them through the pipeline — against sleeping functions of latency L in a
//! child process, as `bench pipeline` — into Elasticsearch, and the clock
//! stops when the last document is stored. With `queue.prefetch` jobs in
//! flight, the bound is prefetch / 2L jobs a second, the pipeline bench's.
//!
//! It needs RabbitMQ and an Elasticsearch-API server at the configured
//! URLs; it declares its own `bench-…` queues and index and deletes them at
//! the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use elasticsearch::CountParts;
use elasticsearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesRefreshParts,
};
use lambdex_local::procstat::peak_memory_mb;
use lambdex_proto::Job;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{FunctionsProcess, SEQUENTIAL_CALLS, cpu_time};
use crate::table::measures_table;
use lambdex::config::{Config, Credentials};
use lambdex::pipeline::Pipeline;
use lambdex::queue::topology::Topology;
use lambdex::queue::worker::Worker;
use lambdex::queue::{amqp, enqueue};
use lambdex::sink::{self, Sink};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs to publish and process.
    #[arg(long, default_value_t = 5_000)]
    jobs: usize,
    /// Jobs the worker holds in flight (`queue.prefetch`).
    #[arg(long, default_value_t = 500)]
    prefetch: u16,
    /// Each function's latency (L), in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Faces the face-crop function finds in every image.
    #[arg(long, default_value_t = 2)]
    faces: usize,
    /// The settings file: RabbitMQ (`queue.url`) and Elasticsearch
    /// (`elasticsearch.*`) are taken from it.
    #[arg(long, env = "LAMBDEX_CONFIG")]
    config: Option<std::path::PathBuf>,
}

/// How often the bench checks whether the last document is stored.
const POLL_EVERY: Duration = Duration::from_millis(20);

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.jobs == 0 || args.prefetch == 0 || args.latency_ms == 0 {
        bail!("--jobs, --prefetch and --latency-ms must be above 0");
    }
    let mut config = Config::load(args.config.as_deref())?;
    let name = format!("bench-{:08x}", fastrand::u32(..));
    config.queue.prefix.clone_from(&name);
    config.queue.prefetch = args.prefetch;
    config.elasticsearch.index = format!("{name}-docs");
    config.pipeline.max_jobs_in_flight = usize::from(args.prefetch);
    let functions = FunctionsProcess::start(
        args.latency_ms,
        args.faces,
        usize::from(args.prefetch),
        None,
    )?;
    config.lambda.endpoint_url = Some(functions.url.clone());
    config.lambda.credentials = Credentials::Local;
    config.fetch.allow = vec!["127.0.0.0/8".parse().expect("a network")];

    let client = sink::client(&config.elasticsearch)?;
    sink::install_template(&client, &config.elasticsearch)
        .await
        .with_context(|| format!("Elasticsearch at {}", config.elasticsearch.url))?;
    let jobs: Vec<Job> = (0..args.jobs)
        .map(|i| Job::new(format!("{name}-{i}"), &functions.image_url))
        .collect();
    eprintln!("publishing {} jobs to {}.jobs", args.jobs, name);
    let published = Instant::now();
    enqueue::publish(&config, jobs, || {})
        .await
        .with_context(|| "RabbitMQ at queue.url".to_owned())?;
    let publish_rate = args.jobs as f64 / published.elapsed().as_secs_f64();

    let pipeline = Arc::new(Pipeline::new(config.clone()).await?);
    let (sink, sink_task) = Sink::start(&config.elasticsearch)?;
    let worker = Worker::new(config.clone(), pipeline, sink);
    let stats = worker.stats();
    let shutdown = CancellationToken::new();
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let progress = indicatif::ProgressBar::new(args.jobs as u64);
    loop {
        let counts = stats.counts();
        progress.set_position(counts.stored);
        if counts.stored + counts.dead_lettered + counts.requeued >= args.jobs as u64 {
            break;
        }
        if running.is_finished() {
            bail!("the worker stopped early: {counts:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time()? - cpu_before;
    progress.finish_and_clear();
    shutdown.cancel();
    running.await??;
    sink_task.await?;

    let counts = stats.counts();
    let stored_docs = count_documents(&client, &config.elasticsearch.index).await?;
    cleanup(&config, &client).await;
    drop(functions);
    if counts.stored != args.jobs as u64 || stored_docs != args.jobs as u64 {
        bail!(
            "{} of {} jobs stored ({stored_docs} documents in the index): {counts:?}",
            counts.stored,
            args.jobs
        );
    }

    let achieved = args.jobs as f64 / elapsed.as_secs_f64();
    let bound = f64::from(args.prefetch) / (SEQUENTIAL_CALLS * args.latency_ms as f64 / 1000.0);
    let cpu_us_per_job = cpu.as_secs_f64() * 1e6 / args.jobs as f64;
    let table = measures_table([
        ("jobs", args.jobs.to_string()),
        ("published (confirmed)", format!("{publish_rate:.0} jobs/s")),
        ("jobs in flight (prefetch)", args.prefetch.to_string()),
        ("function latency (L)", format!("{} ms", args.latency_ms)),
        ("faces per image", args.faces.to_string()),
        (
            "elapsed, first delivery → last document",
            format!("{:.2} s", elapsed.as_secs_f64()),
        ),
        ("achieved", format!("{achieved:.0} jobs/s")),
        ("bound prefetch / 2L", format!("{bound:.0} jobs/s")),
        (
            "achieved / bound",
            format!("{:.1} %", 100.0 * achieved / bound),
        ),
        ("worker CPU per job", format!("{cpu_us_per_job:.0} µs")),
        (
            "worker cores busy",
            format!("{:.2}", cpu.as_secs_f64() / elapsed.as_secs_f64()),
        ),
        (
            "worker peak memory (VmHWM)",
            format!("{} MB", peak_memory_mb(std::process::id())),
        ),
        ("documents in the index", stored_docs.to_string()),
    ]);
    println!("{table}");
    println!(
        "the worker's CPU includes RabbitMQ (consume, ack) and the bulk writes; \
         `lambdex bench pipeline` measures the pipeline alone"
    );
    Ok(())
}

/// The index's documents, after a refresh: Elasticsearch counts only what
/// its last refresh made searchable.
async fn count_documents(
    client: &elasticsearch::Elasticsearch,
    index: &str,
) -> anyhow::Result<u64> {
    client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await?
        .error_for_status_code()?;
    let response = client
        .count(CountParts::Index(&[index]))
        .send()
        .await?
        .error_for_status_code()?;
    let body: serde_json::Value = response.json().await?;
    body["count"].as_u64().context("a count")
}

/// Deletes the bench's queues, index and template; a failure is only
/// reported.
async fn cleanup(config: &Config, client: &elasticsearch::Elasticsearch) {
    let index = config.elasticsearch.index.as_str();
    let deleted_index = client
        .indices()
        .delete(IndicesDeleteParts::Index(&[index]))
        .send()
        .await;
    let deleted_template = client
        .indices()
        .delete_index_template(IndicesDeleteIndexTemplateParts::Name(index))
        .send()
        .await;
    let queues = async {
        let connection = amqp::connect(&config.queue, "lambdex bench").await?;
        let channel = connection.create_channel().await?;
        Topology::new(&config.queue).delete(&channel).await?;
        connection.close(200, "done").await?;
        Ok::<_, amqp::AmqpError>(())
    };
    if let Err(error) = queues.await {
        eprintln!("could not delete the bench's queues: {error}");
    }
    if deleted_index.is_err() || deleted_template.is_err() {
        eprintln!("could not delete the bench's index {index} or its template");
    }
}
