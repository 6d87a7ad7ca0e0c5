//! The functions the pipeline bench runs against, in a child process of
//! their own (`lambdex bench pipeline --serve-functions`): sleeping
//! functions behind a local Lambda, and the image server, so the CPU time
//! and memory the bench prints are the coordinator's alone.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lambdex_local::procstat::{self, Process};
use lambdex_local::{FunctionSpec, Handler, InProcessFunction, LocalConfig, LocalLambda};
use lambdex_tests::fakes::Sleeper;
use lambdex_tests::images::ImageServer;

/// The one image every job fetches.
const IMAGE: &str = "gradient.jpg";

/// The child process serving the sleeping functions and the image.
#[derive(Debug)]
pub struct FunctionsProcess {
    child: std::process::Child,
    /// The local Lambda's endpoint.
    pub url: String,
    /// The one image every job fetches.
    pub image_url: String,
}

impl FunctionsProcess {
    /// The CPU time the functions and image server have used.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        Ok(procstat::cpu_time(Process::Pid(self.child.id()))?)
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

/// In the child: a local Lambda of functions that sleep `latency` (the
/// crop finding `faces`), room for `concurrency` jobs, and the image
/// server, until killed. Prints both URLs on one line.
pub async fn serve(latency: Duration, faces: usize, concurrency: usize) -> anyhow::Result<()> {
    let config = LocalConfig {
        functions: Sleeper::project(latency, faces)
            .into_iter()
            .map(|(name, sleeper)| {
                let function: Arc<dyn InProcessFunction> = Arc::new(sleeper);
                (
                    name.to_owned(),
                    FunctionSpec::new(Handler::InProcess(function)),
                )
            })
            .collect(),
        // A job holds one or two invocations at a time.
        account_concurrency: u32::try_from(concurrency * 3).unwrap_or(u32::MAX),
        ..LocalConfig::default()
    };
    let lambda = LocalLambda::start(config, 0).await?;
    let images = ImageServer::start().await?;
    println!("{} {}", lambda.endpoint_url(), images.url(IMAGE));
    std::future::pending::<()>().await;
    Ok(())
}
