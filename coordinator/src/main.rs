//! The `lambdex` command: parses the command line and hands over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use lambdex::aggregate::{self, Timings};
use lambdex::bench;
use lambdex::functions::InProcess;
use lambdex::input::Input;
use lambdex::predict::PredictConfig;
use lambdex::render;
use lambdex_lambdas::{FaceCropConfig, models};
use lambdex_proto::{Job, PredictionDoc, Status};

/// Face age and gender prediction at scale.
#[derive(Debug, Parser)]
#[command(name = "lambdex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Label every face in local images or http(s) URLs, in-process.
    Predict(PredictArgs),
    /// Measure the models and the functions.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, clap::Args)]
struct PredictArgs {
    /// Image files or http(s) URLs (JPEG, PNG, WebP, GIF).
    #[arg(required = true)]
    images: Vec<String>,
    /// Print one JSON document per line instead of a table.
    #[arg(long)]
    json: bool,
    /// The folder holding blazeface/ and age-gender/ (default: see README).
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
    /// Images processed at once.
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Single-thread median time of each stage and of each function's cold start.
    Models(bench::BenchArgs),
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Predict(args) => predict(args).await,
            Command::Bench(BenchCommand::Models(args)) => {
                bench::models(args).await.map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lambdex: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let models_dir = match args.models_dir {
        Some(dir) => dir,
        None => models::models_dir()?,
    };
    let functions = InProcess::load(&models_dir, FaceCropConfig::from_env()?)
        .with_context(|| format!("loading the models from {}", models_dir.display()))?;
    let input = Input::default();
    let config = PredictConfig::default();
    let docs: Vec<PredictionDoc> = futures::stream::iter(&args.images)
        .map(|source| one_image(&functions, &config, &input, source))
        .buffered(args.concurrency.max(1))
        .collect()
        .await;

    if args.json {
        for doc in &docs {
            println!("{}", serde_json::to_string(doc)?);
        }
    } else {
        println!("{}", render::faces_table(&docs));
    }
    let mut failed = 0;
    for doc in &docs {
        if let (Status::Failed, Some(failure)) = (doc.status, &doc.failure) {
            eprintln!("lambdex: {}: {}", doc.image_url, failure.reason);
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn one_image(
    functions: &InProcess,
    config: &PredictConfig,
    input: &Input,
    source: &str,
) -> PredictionDoc {
    let job = Job::new(source, source);
    let started = std::time::Instant::now();
    let mut timings = Timings::default();
    let bytes = input.read(source).await;
    timings.record("fetch", started.elapsed().as_secs_f64() * 1000.0);
    let mut doc = match bytes {
        Ok(bytes) => lambdex::predict::predict(functions, config, &job, bytes, timings).await,
        Err(error) => aggregate::failed(&job, "fetch_failed", error.to_string(), timings),
    };
    doc.timings.push(lambdex_proto::StageTiming {
        stage: "total".to_owned(),
        ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    doc
}
