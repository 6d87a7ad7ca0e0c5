//! `lambdex local-lambda`: the functions on a local Lambda Invoke API until
//! Ctrl-C, each instance a process of this binary (`lambdex function …`)
//! or what a config file names.

use std::path::PathBuf;

use anyhow::Context as _;
use lambdex_functions::{FaceCropConfig, models};
use lambdex_local::{LocalConfig, LocalLambda};

use super::{models_dir, shutdown_signal};

/// Where `lambdex local-lambda` listens by default.
const DEFAULT_PORT: u16 = 9001;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML file of functions (default: face-crop, age and gender, run
    /// as processes of this binary).
    #[arg(long, env = "LAMBDEX_LOCAL_LAMBDA_CONFIG")]
    config: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// The folder holding blazeface/ and age-gender/ (default: see README).
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
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
    let names: Vec<&str> = lambda.engine().function_names().collect();
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
