//! Running one function at one memory size on the local Lambda, its CPU
//! limited to memory/1769 of a core, and keeping every `REPORT` line: the
//! first call of each new instance (a cold start, with its `Init
//! Duration`), then, after a warm-up call per other payload, the measured
//! warm calls. Calls go through
//! `aws-sdk-lambda` and [`lambdex::lambda::invoke`], as the pipeline makes them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use lambdex_local::config::{MAX_MEMORY_MB, MIN_MEMORY_MB, ProjectFunctions, lambdex_environment};
use lambdex_local::{LocalConfig, LocalLambda};
use lambdex_proto::Report;

use lambdex::lambda::{client as lambda_client, invoke};

/// The functions' timeout on the local Lambda: at 128 MB (7 % of a core)
/// a call takes fourteen times as long as on a whole core.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the bench waits for one call, a cold start included.
const CALL_TIMEOUT: Duration = Duration::from_secs(320);

/// One request body a function is measured with.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Which photo it comes from.
    pub image: String,
    pub body: Vec<u8>,
}

/// How to run the functions.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `lambdex` binary, run as `lambdex function …` by the local Lambda.
    pub program: PathBuf,
    pub models_dir: PathBuf,
    /// Measured warm calls per memory size.
    pub invocations: usize,
    /// New instances started per memory size, each one's first call a
    /// cold start.
    pub cold_starts: usize,
}

/// The `REPORT` lines of one function at one memory size.
#[derive(Debug, Clone)]
pub struct Measured {
    pub memory_mb: u32,
    pub cold: Vec<Report>,
    pub warm: Vec<Report>,
}

/// Checks a memory size is one Lambda allows.
pub fn check_memory(memory_mb: u32) -> anyhow::Result<()> {
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        bail!("--memory {memory_mb}: Lambda allows {MIN_MEMORY_MB}–{MAX_MEMORY_MB} MB");
    }
    Ok(())
}

/// `function` at `memory_mb`: `plan.cold_starts` new instances, each
/// called once (a cold start), then on the last one a warm-up call with
/// each other payload and `plan.invocations` measured calls, cycling
/// through `payloads`. Stops, rather than measure an unlimited core,
/// where the local Lambda cannot limit CPU.
pub async fn measure(
    plan: &Plan,
    function: &str,
    memory_mb: u32,
    payloads: &[Payload],
    progress: &ProgressBar,
) -> anyhow::Result<Measured> {
    if payloads.is_empty() {
        bail!("no request to send to {function}");
    }
    let mut config = LocalConfig::project(&ProjectFunctions {
        program: Some(plan.program.clone()),
        models_dir: plan.models_dir.clone(),
        environment: lambdex_environment(),
        memory_mb,
        timeout: FUNCTION_TIMEOUT,
    });
    config.functions.retain(|name, _| name == function);
    if config.functions.is_empty() {
        bail!("the local Lambda has no function {function}");
    }
    config.limit_cpu = true;

    let mut cold = Vec::with_capacity(plan.cold_starts);
    let mut warm = Vec::with_capacity(plan.invocations);
    let instances = plan.cold_starts.max(1);
    for instance in 0..instances {
        let lambda = LocalLambda::start(config.clone(), 0)
            .await
            .context("starting the local Lambda")?;
        if let Some(reason) = lambda.cpu_limit_unavailable() {
            let reason = reason.to_owned();
            lambda.shutdown().await;
            bail!(
                "this machine cannot limit a function's CPU to memory/1769 of a core ({reason}); \
                 without it every memory size would run on a whole core, so there is nothing true to report"
            );
        }
        let client = lambda_client::local(&lambda.endpoint_url());
        let result = async {
            let first = &payloads[instance % payloads.len()];
            let report = call(&client, function, memory_mb, first).await?;
            if report.init_duration_ms.is_none() {
                bail!("{function}'s first call at {memory_mb} MB reported no Init Duration");
            }
            cold.push(report);
            progress.inc(1);
            if instance + 1 == instances {
                // One unmeasured call per request body: the first call of a
                // new batch size costs a model more than the next ones.
                for payload in payloads.iter().filter(|p| !std::ptr::eq(*p, first)) {
                    call(&client, function, memory_mb, payload).await?;
                }
                for i in 0..plan.invocations {
                    let payload = &payloads[i % payloads.len()];
                    warm.push(call(&client, function, memory_mb, payload).await?);
                    progress.inc(1);
                }
            }
            Ok(())
        }
        .await;
        lambda.shutdown().await;
        result?;
    }
    Ok(Measured {
        memory_mb,
        cold,
        warm,
    })
}

/// One call and its `REPORT` line; a failed call stops the bench.
async fn call(
    client: &aws_sdk_lambda::Client,
    function: &str,
    memory_mb: u32,
    payload: &Payload,
) -> anyhow::Result<Report> {
    let mut report = None;
    let answered = invoke::invoke(
        client,
        function,
        None,
        payload.body.clone(),
        CALL_TIMEOUT,
        |r| report = Some(r),
    )
    .await;
    if let Err(error) = answered {
        bail!(
            "{function} at {memory_mb} MB failed on {}: {error}",
            payload.image
        );
    }
    let report = report.with_context(|| format!("{function} answered without a REPORT line"))?;
    if report.memory_size_mb != memory_mb {
        bail!(
            "{function} ran with {} MB, not the {memory_mb} MB asked for",
            report.memory_size_mb
        );
    }
    Ok(report)
}
