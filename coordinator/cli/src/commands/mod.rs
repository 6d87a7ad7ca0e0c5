//! One module per `lambdex` command; [`run`] dispatches to them.

pub mod admin;
pub mod bench;
pub mod config;
pub mod definitions;
pub mod dlq;
pub mod enqueue;
pub mod function;
pub mod local_lambda;
pub mod predict;
pub mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::UsageError;

/// Face age and gender prediction at scale.
#[derive(Debug, Parser)]
#[command(name = "lambdex", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Label every face in local images or http(s) URLs (the functions run
    /// in-process, called through the Lambda Invoke API; with --remote,
    /// the functions of the configured endpoint).
    Predict(predict::Args),
    /// Consume jobs from RabbitMQ, label them and store the documents in
    /// Elasticsearch, until SIGTERM or Ctrl-C.
    Worker(ConfigArgs),
    /// Publish jobs for the workers: image URLs, or a file of them.
    Enqueue(enqueue::Args),
    /// The HTTP trigger for ad-hoc requests, and its tokens.
    #[command(subcommand)]
    Admin(admin::Command),
    /// Read, export, replay or purge the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: dlq::Command,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the deployment definitions derived from the settings.
    #[command(subcommand)]
    Definitions(definitions::Command),
    /// The coordinator's settings.
    #[command(subcommand)]
    Config(config::Command),
    /// Serve the functions on a local Lambda Invoke API until Ctrl-C.
    LocalLambda(local_lambda::Args),
    /// Measure the models and the functions.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Run one function as a Lambda custom runtime (what `local-lambda`
    /// starts for each instance).
    #[command(hide = true)]
    Function {
        #[arg(value_enum)]
        function: function::Binary,
    },
}

/// Runs every command but `function` (which runs before any runtime).
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match command {
        Command::Predict(args) => predict::run(args).await,
        Command::Worker(args) => worker::run(args.load()?).await.map(done),
        Command::Enqueue(args) => enqueue::run(args).await.map(done),
        Command::Admin(command) => admin::run(command).await.map(done),
        Command::Dlq { command, config } => {
            dlq::run(&config.load()?.queue, command).await.map(done)
        }
        Command::Definitions(command) => definitions::run(command).map(done),
        Command::Config(command) => config::run(command).map(done),
        Command::LocalLambda(args) => local_lambda::run(args).await.map(done),
        Command::Bench(command) => bench::run(command).await.map(done),
        Command::Function { .. } => unreachable!("run before the runtime starts"),
    }
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The coordinator's TOML settings (default: built-in defaults).
    #[arg(long, env = "LAMBDEX_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<lambdex::config::Config> {
        lambdex::config::Config::load(self.config.as_deref())
            .map_err(|error| UsageError(error.to_string()).into())
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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

/// The folder holding the weights: the argument, or where
/// [`lambdex_functions::models::models_dir`] finds it.
pub fn models_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match arg {
        Some(dir) => dir,
        None => lambdex_functions::models::models_dir()?,
    })
}
