//! The `lambdex` command: parses the command line and hands over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use lambdex::aggregate::{self, Timings};
use lambdex::config::{self, Config};
use lambdex::enqueue::{self, EnqueueArgs};
use lambdex::input::Input;
use lambdex::pipeline::Pipeline;
use lambdex::sink::{self, Sink};
use lambdex::topology::Topology;
use lambdex::worker::Worker;
use lambdex::{bench, bench_pipeline, bench_worker, dlq_cli, lambda_client, power, render};
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
    /// in-process, called through the Lambda Invoke API; with --remote,
    /// the functions of the configured endpoint).
    Predict(PredictArgs),
    /// Consume jobs from RabbitMQ, label them and store the documents in
    /// Elasticsearch, until SIGTERM or Ctrl-C.
    Worker(ConfigArgs),
    /// Publish jobs for the workers: image URLs, or a file of them.
    Enqueue(EnqueueCommandArgs),
    /// The HTTP trigger for ad-hoc requests, and its tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Read, export, replay or purge the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: dlq_cli::DlqCommand,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the deployment definitions derived from the settings.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// The coordinator's settings.
    #[command(subcommand)]
    Config(ConfigCommand),
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

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the settings and print the effective values (defaults, the
    /// file, then `LAMBDEX__…` variables) as TOML.
    Check(ConfigArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Serve the admin API on `admin.listen` until SIGTERM or Ctrl-C.
    Serve(ConfigArgs),
    /// Print a new random token and its `[[admin.tokens]]` entry.
    NewToken {
        /// The token's name in logs and its rate limit.
        #[arg(long, default_value = "support")]
        name: String,
    },
    /// Print the SHA-256 of the token read from stdin, for `admin.tokens`.
    HashToken,
}

#[derive(Debug, Subcommand)]
enum DefinitionsCommand {
    /// The exchanges, queues and bindings, as RabbitMQ definitions JSON.
    Rabbitmq(ConfigArgs),
    /// The index template for `elasticsearch.index`, as JSON.
    Elasticsearch(ConfigArgs),
}

#[derive(Debug, clap::Args)]
struct EnqueueCommandArgs {
    #[command(flatten)]
    jobs: EnqueueArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// The coordinator's TOML settings (default: built-in defaults).
    #[arg(long, env = "LAMBDEX_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref()).map_err(|error| UsageError(error.to_string()).into())
    }
}

/// Bad settings: exit code 64 (EX_USAGE), before any work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// `sysexits.h`'s EX_USAGE.
const EXIT_USAGE: u8 = 64;

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

/// Enough for an account's worth of busy in-process instances (tokio's
/// default is 512).
const MAX_BLOCKING_THREADS: usize = 4096;

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
    /// Call the functions at the configured endpoint (`[lambda]` or
    /// `LAMBDEX__LAMBDA__…`: a `lambdex local-lambda`, or AWS) instead of
    /// running them in-process.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Single-thread median time of each stage and of each function's cold start.
    Models(bench::BenchArgs),
    /// The coordinator's throughput, CPU and memory against functions of a
    /// fixed latency.
    Pipeline(bench_pipeline::PipelineBenchArgs),
    /// Jobs/s through RabbitMQ, the pipeline and Elasticsearch, and the
    /// worker's CPU per job, against the pipeline bench's bound.
    Worker(bench_worker::WorkerBenchArgs),
    /// Each function's duration and cost per memory size on the local
    /// Lambda (CPU limited to memory/1769 of a core), the pipeline's cost
    /// per 8M images, a Markdown report and a chart.
    Power(power::PowerBenchArgs),
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A thread-caching allocator: the coordinator allocates and frees many
/// small buffers per job on several threads (glibc's malloc was ~20 % of its
/// CPU in `lambdex bench pipeline`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // In-process functions run one blocking thread per busy instance.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .expect("a tokio runtime starts");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Predict(args) => predict(args).await,
            Command::LocalLambda(args) => local_lambda(args).await.map(|()| ExitCode::SUCCESS),
            Command::Function { .. } => unreachable!("handled above"),
            Command::Worker(args) => worker(args.load()?).await.map(|()| ExitCode::SUCCESS),
            Command::Enqueue(args) => {
                let config = args.config.load()?;
                let jobs =
                    enqueue::jobs_of(&args.jobs).map_err(|error| UsageError(error.to_string()))?;
                enqueue::publish(&config, jobs).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(AdminCommand::Serve(args)) => {
                admin(args.load()?).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Admin(AdminCommand::NewToken { name }) => {
                let token = lambdex::admin::new_token()
                    .map_err(|error| anyhow::anyhow!("no random bytes: {error}"))?;
                println!("token (give it to its holder; it is not stored): {token}");
                println!();
                println!("[[admin.tokens]]");
                println!("name = {name:?}");
                println!("sha256 = {:?}", lambdex::admin::hash_token(&token));
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(AdminCommand::HashToken) => {
                let mut token = String::new();
                std::io::stdin()
                    .read_line(&mut token)
                    .context("reading the token from stdin")?;
                if token.trim().is_empty() {
                    return Err(UsageError("no token on stdin".to_owned()).into());
                }
                println!("{}", lambdex::admin::hash_token(&token));
                Ok(ExitCode::SUCCESS)
            }
            Command::Dlq { command, config } => {
                dlq_cli::run(&config.load()?.queue, command).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Definitions(DefinitionsCommand::Rabbitmq(args)) => {
                let config = args.load()?;
                println!("{:#}", Topology::new(&config.queue).definitions());
                Ok(ExitCode::SUCCESS)
            }
            Command::Definitions(DefinitionsCommand::Elasticsearch(args)) => {
                let config = args.load()?;
                println!("{:#}", sink::index_template(&config.elasticsearch));
                Ok(ExitCode::SUCCESS)
            }
            Command::Config(ConfigCommand::Check(args)) => {
                let config = args.load()?;
                print!("{}", config.to_redacted_toml());
                eprintln!("lambdex: the configuration is valid");
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Models(args)) => {
                bench::models(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Pipeline(args)) => {
                bench_pipeline::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Worker(args)) => {
                bench_worker::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Power(args)) => {
                power::run(args).await.map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lambdex: {error:#}");
            if error.is::<UsageError>() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
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

/// `lambdex worker`: the pipeline, the sink and the consumer, until a
/// signal; then in-flight jobs finish (within `queue.shutdown_deadline`)
/// and their documents are flushed before the connection closes.
async fn worker(config: Config) -> anyhow::Result<()> {
    let pipeline = std::sync::Arc::new(Pipeline::new(config.clone()).await?);
    sink::install_template_when_up(
        &config.elasticsearch,
        config.queue.reconnect_delays(),
        config.queue.reconnect_max_delay,
    )
    .await
    .context("installing the index template")?;
    let (sink, sink_task) = Sink::start(&config.elasticsearch)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("signal received: finishing in-flight jobs");
            shutdown.cancel();
        }
    });
    if let Some(address) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("metrics.listen {address}"))?;
        tracing::info!(%address, "serving /metrics");
        tokio::spawn(lambdex::admin::serve_metrics(listener, shutdown.clone()));
    }
    Worker::new(config, pipeline, sink).run(shutdown).await?;
    // Every job has its answer from the sink; let its task end.
    sink_task.await.context("the Elasticsearch sink")?;
    Ok(())
}

/// `lambdex admin serve`: the HTTP trigger until a signal; requests in
/// progress finish, and stored documents are flushed.
async fn admin(config: Config) -> anyhow::Result<()> {
    let lambda = lambda_client::from_config(&config.lambda).await;
    let address = config.admin.listen;
    let (state, sink_task) = lambdex::admin::AdminState::new(config, lambda).await?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on admin.listen {address}"))?;
    eprintln!(
        "lambdex admin listening on http://{} (OpenAPI at /openapi.json)",
        listener.local_addr()?
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    lambdex::admin::serve(listener, state, shutdown).await?;
    sink_task.await.context("the Elasticsearch sink")?;
    Ok(())
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
    let mut config = args.config.load()?;
    let local = if args.remote {
        None
    } else {
        FaceCropConfig::from_env()?;
        Some(
            LocalLambda::start(
                LocalConfig::project_defaults(None, models_dir(args.models_dir)?),
                0,
            )
            .await
            .context("starting the in-process local Lambda")?,
        )
    };
    let pipeline = match &local {
        Some(lambda) => {
            // The embedded functions go by the project's names.
            config.face_crop.function = "face-crop".to_owned();
            for (name, model) in &mut config.models {
                model.function.clone_from(name);
                model.fallback = None;
            }
            config.lambda.endpoint_url = Some(lambda.endpoint_url());
            config.lambda.credentials = config::Credentials::Local;
            let client = lambda_client::local(&lambda.endpoint_url());
            Pipeline::with_client(config, client)?
        }
        None => Pipeline::new(config).await?,
    };
    let input = Input::default();
    let docs: Vec<PredictionDoc> = futures::stream::iter(&args.images)
        .map(|source| one_image(&pipeline, &input, source))
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    if let Some(lambda) = local {
        lambda.shutdown().await;
    }

    if args.json {
        for doc in &docs {
            println!("{}", serde_json::to_string(doc)?);
        }
    } else {
        println!("{}", render::faces_table(&docs));
    }
    let mut failed = 0;
    for doc in &docs {
        if let Some(failure) = &doc.failure {
            eprintln!("lambdex: {}: {}", doc.image_url, failure.reason);
            failed += usize::from(doc.status == Status::Failed);
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn one_image(pipeline: &Pipeline, input: &Input, source: &str) -> PredictionDoc {
    let job = Job::new(source, source);
    if Input::is_url(source) {
        return pipeline.process(&job).await;
    }
    match input.read_file(std::path::Path::new(source)).await {
        Ok(bytes) => pipeline.process_bytes(&job, bytes).await,
        Err(error) => aggregate::failed(
            &job,
            "read_failed",
            error.to_string(),
            false,
            Timings::default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        // Duplicate flags, bad defaults, conflicting names: clap's own checks.
        Cli::command().debug_assert();
    }
}
