//! The `lambdex` command: parses the command line and hands over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use lambdex::aggregate::{self, Timings};
use lambdex::bench;
use lambdex::functions::{FunctionNames, Lambda};
use lambdex::input::Input;
use lambdex::lambda_client;
use lambdex::predict::PredictConfig;
use lambdex::render;
use lambdex_lambdas::local::{LocalConfig, LocalLambda};
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
    /// Label every face in local images or http(s) URLs (the functions run
    /// in-process, called through the Lambda Invoke API).
    Predict(PredictArgs),
    /// Serve the functions on a local Lambda Invoke API until Ctrl-C.
    LocalLambda(LocalLambdaArgs),
    /// Measure the models and the functions.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one function as a Lambda custom runtime (what `local-lambda`
    /// starts for each instance).
    #[command(hide = true)]
    Function {
        #[arg(value_enum)]
        function: FunctionBinary,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FunctionBinary {
    FaceCrop,
    /// The model `$LAMBDEX_MODEL` names.
    Classify,
}

#[derive(Debug, clap::Args)]
struct LocalLambdaArgs {
    /// A TOML file of functions (default: face-crop, age and gender, run
    /// as processes of this binary).
    #[arg(long, env = "LAMBDEX_LOCAL_LAMBDA_CONFIG")]
    config: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_LOCAL_PORT)]
    port: u16,
    /// The folder holding blazeface/ and age-gender/ (default: see README).
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
}

/// Where `lambdex local-lambda` listens by default.
const DEFAULT_LOCAL_PORT: u16 = 9001;

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
    let cli = Cli::parse();
    if let Command::Function { function } = cli.command {
        // lambda_runtime sets up its own logging, as it does on Lambda.
        return run_function(function);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lambdex::function=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Predict(args) => predict(args).await,
            Command::LocalLambda(args) => local_lambda(args).await.map(|()| ExitCode::SUCCESS),
            Command::Function { .. } => unreachable!("handled above"),
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

fn run_function(function: FunctionBinary) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let served = runtime.block_on(async {
        match function {
            FunctionBinary::FaceCrop => lambdex_lambdas::runtime::face_crop().await,
            FunctionBinary::Classify => lambdex_lambdas::runtime::classify().await,
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lambdex function: {error}");
            ExitCode::FAILURE
        }
    }
}

fn models_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match arg {
        Some(dir) => dir,
        None => models::models_dir()?,
    })
}

async fn local_lambda(args: LocalLambdaArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => LocalConfig::from_file(path)?,
        None => {
            // Checked here so a bad setting fails now, not at each cold start.
            FaceCropConfig::from_env()?;
            let program = std::env::current_exe().context("finding this program")?;
            LocalConfig::project_defaults(Some(program), models_dir(args.models_dir)?)
        }
    };
    let lambda = LocalLambda::start(config, args.port)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let names: Vec<&str> = lambda.host().function_names().collect();
    println!(
        "local Lambda listening on {} — functions: {}",
        lambda.endpoint_url(),
        names.join(", ")
    );
    println!("(Ctrl-C stops it and every instance it started)");
    shutdown_signal().await;
    lambda.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    FaceCropConfig::from_env()?;
    let lambda = LocalLambda::start(
        LocalConfig::project_defaults(None, models_dir(args.models_dir)?),
        0,
    )
    .await
    .context("starting the in-process local Lambda")?;
    let functions = Lambda::new(
        lambda_client::local(&lambda.endpoint_url()),
        FunctionNames::default(),
    );
    let input = Input::default();
    let config = PredictConfig::default();
    let docs: Vec<PredictionDoc> = futures::stream::iter(&args.images)
        .map(|source| one_image(&functions, &config, &input, source))
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    lambda.shutdown().await;

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
    functions: &Lambda,
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
