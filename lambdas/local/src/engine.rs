//! The local Lambda's engine: resolves a function and qualifier, takes a
//! concurrency permit (or answers 429), runs the event on a warm instance
//! or a new one, and writes the invocation's log and `REPORT` line.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cgroup::CpuLimiter;
use crate::config::{FunctionSpec, LocalConfig, VersionSpec};
use crate::instance::{Instance, Launch};
use lambdex_proto::limits::{EVENT_REQUEST_BYTES, SYNC_REQUEST_BYTES};

use crate::invocation::{Answer, Event, Outcome};
use lambdex_proto::Report;

use crate::log::invocation_log;

/// The seconds a throttled caller is told to wait.
pub const RETRY_AFTER_S: u32 = 1;
const ACCOUNT_ID: &str = "000000000000";

/// `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvocationType {
    #[default]
    RequestResponse,
    Event,
    DryRun,
}

impl FromStr for InvocationType {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RequestResponse" => Ok(Self::RequestResponse),
            "Event" => Ok(Self::Event),
            "DryRun" => Ok(Self::DryRun),
            other => Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            ))),
        }
    }
}

/// One call of the Invoke API.
#[derive(Debug, Clone, Default)]
pub struct InvokeInput {
    /// A name, `name:qualifier`, or a function ARN.
    pub function: String,
    pub qualifier: Option<String>,
    pub invocation_type: InvocationType,
    /// `LogType=Tail`.
    pub log_tail: bool,
    pub payload: Bytes,
    pub client_context: Option<String>,
}

/// The Invoke API's answer to a call it accepted.
#[derive(Debug, Clone)]
pub struct InvokeOutput {
    /// 200, 202 (Event) or 204 (DryRun).
    pub status: u16,
    pub executed_version: Option<String>,
    /// `Unhandled` when the function failed; the payload is its error.
    pub function_error: Option<String>,
    pub payload: Bytes,
    /// The invocation's whole log (the API returns its last 4 KB).
    pub log: Option<String>,
}

/// A call the Invoke API refused, as AWS refuses it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type} ({status}): {message}")]
pub struct ApiError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    pub reason: Option<&'static str>,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    fn new(status: u16, error_type: &'static str, message: String) -> Self {
        Self {
            status,
            error_type,
            message,
            reason: None,
            retry_after_s: None,
        }
    }

    pub fn invalid_parameter(message: String) -> Self {
        Self::new(400, "InvalidParameterValueException", message)
    }

    fn throttled(reason: &'static str) -> Self {
        Self {
            reason: Some(reason),
            retry_after_s: Some(RETRY_AFTER_S),
            ..Self::new(429, "TooManyRequestsException", "Rate Exceeded.".to_owned())
        }
    }
}

#[derive(Debug)]
struct FunctionState {
    spec: FunctionSpec,
    reserved: Option<Arc<Semaphore>>,
    /// Warm instances by version.
    idle: Mutex<Vec<(String, Instance)>>,
    started: AtomicU64,
    /// Invocations that ran (had capacity).
    invoked: AtomicU64,
    /// Synchronous invocations refused with 429.
    throttled: AtomicU64,
}

/// The concurrency an invocation holds while it runs.
#[derive(Debug)]
struct Permits {
    _reserved: Option<OwnedSemaphorePermit>,
    _account: OwnedSemaphorePermit,
}

#[derive(Debug)]
pub struct Engine {
    functions: BTreeMap<String, FunctionState>,
    account: Arc<Semaphore>,
    region: String,
    init_timeout: Duration,
    pub(super) limiter: CpuLimiter,
    log_dir: tempfile::TempDir,
    pub(super) cancel: CancellationToken,
    pub(super) tasks: TaskTracker,
    next_instance: AtomicU64,
    id: String,
}

impl Engine {
    pub fn new(config: LocalConfig) -> std::io::Result<Self> {
        let id = format!(
            "lambdex-local-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let limiter = if !config.has_processes() {
            CpuLimiter::off("every function runs in-process")
        } else if config.limit_cpu {
            CpuLimiter::detect(&id)
        } else {
            CpuLimiter::off("turned off in the configuration (limit_cpu = false)")
        };
        let functions = config
            .functions
            .into_iter()
            .map(|(name, spec)| {
                let state = FunctionState {
                    reserved: spec
                        .reserved_concurrency
                        .map(|n| Arc::new(Semaphore::new(n as usize))),
                    spec,
                    idle: Mutex::new(Vec::new()),
                    started: AtomicU64::new(0),
                    invoked: AtomicU64::new(0),
                    throttled: AtomicU64::new(0),
                };
                (name, state)
            })
            .collect();
        Ok(Self {
            functions,
            account: Arc::new(Semaphore::new(config.account_concurrency as usize)),
            region: config.region,
            init_timeout: config.init_timeout,
            limiter,
            log_dir: tempfile::Builder::new()
                .prefix("lambdex-local-")
                .tempdir()?,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_instance: AtomicU64::new(0),
            id,
        })
    }

    /// The functions served, by name.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    /// Instances started so far for `function` (cold starts).
    pub fn instances_started(&self, function: &str) -> u64 {
        self.functions
            .get(function)
            .map_or(0, |f| f.started.load(Ordering::Relaxed))
    }

    /// Invocations of `function` that ran, whatever their outcome.
    pub fn invocations(&self, function: &str) -> u64 {
        self.functions
            .get(function)
            .map_or(0, |f| f.invoked.load(Ordering::Relaxed))
    }

    /// Synchronous invocations of `function` refused for want of capacity.
    pub fn throttles(&self, function: &str) -> u64 {
        self.functions
            .get(function)
            .map_or(0, |f| f.throttled.load(Ordering::Relaxed))
    }

    fn arn(&self, function: &str, qualifier: Option<&str>) -> String {
        let mut arn = format!(
            "arn:aws:lambda:{}:{ACCOUNT_ID}:function:{function}",
            self.region
        );
        if let Some(qualifier) = qualifier {
            arn.push(':');
            arn.push_str(qualifier);
        }
        arn
    }

    /// The Invoke API.
    pub async fn invoke(self: &Arc<Self>, input: InvokeInput) -> Result<InvokeOutput, ApiError> {
        if self.cancel.is_cancelled() {
            return Err(ApiError::new(
                503,
                "ServiceException",
                "the local Lambda is shutting down".to_owned(),
            ));
        }
        let (name, qualifier) = split_function_name(&input.function, input.qualifier.as_deref())?;
        let not_found = || {
            ApiError::new(
                404,
                "ResourceNotFoundException",
                format!("Function not found: {}", self.arn(name, qualifier)),
            )
        };
        let function = self.functions.get(name).ok_or_else(not_found)?;
        let (version, spec) = function.spec.resolve(qualifier).ok_or_else(not_found)?;
        let limit = match input.invocation_type {
            InvocationType::Event => EVENT_REQUEST_BYTES,
            _ => SYNC_REQUEST_BYTES,
        };
        if input.payload.len() > limit {
            return Err(request_too_large(input.payload.len(), limit));
        }
        let payload = if input.payload.is_empty() {
            Bytes::from_static(b"{}")
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(&input.payload).is_err() {
            return Err(ApiError::new(
                400,
                "InvalidRequestContentException",
                "Could not parse request body into json: the payload is not valid JSON".to_owned(),
            ));
        } else {
            input.payload
        };
        let call = Call {
            function: name.to_owned(),
            version: version.to_owned(),
            spec: spec.clone(),
            arn: self.arn(name, qualifier),
            payload,
            client_context: input.client_context,
        };
        match input.invocation_type {
            InvocationType::DryRun => Ok(InvokeOutput {
                status: 204,
                executed_version: None,
                function_error: None,
                payload: Bytes::new(),
                log: None,
            }),
            InvocationType::Event => {
                let host = Arc::clone(self);
                self.tasks.spawn(async move { host.run_event(call).await });
                Ok(InvokeOutput {
                    status: 202,
                    executed_version: None,
                    function_error: None,
                    payload: Bytes::new(),
                    log: None,
                })
            }
            InvocationType::RequestResponse => {
                let permits = self.try_permits(function).inspect_err(|_| {
                    function.throttled.fetch_add(1, Ordering::Relaxed);
                })?;
                function.invoked.fetch_add(1, Ordering::Relaxed);
                let host = Arc::clone(self);
                // A task of its own: as on AWS, the invocation runs to its end
                // even if the caller hangs up.
                let (answer, log) = self
                    .tasks
                    .spawn(async move { host.execute(call, permits).await })
                    .await
                    .map_err(|error| {
                        ApiError::new(
                            500,
                            "ServiceException",
                            format!("the invocation failed: {error}"),
                        )
                    })?;
                let (function_error, payload) = match answer {
                    Answer::Response(body) => (None, body),
                    Answer::Error { body, .. } => (Some("Unhandled".to_owned()), body),
                };
                Ok(InvokeOutput {
                    status: 200,
                    executed_version: Some(version.to_owned()),
                    function_error,
                    payload,
                    log: input.log_tail.then_some(log),
                })
            }
        }
    }

    /// Permits for a synchronous call, or the 429 AWS gives.
    fn try_permits(&self, function: &FunctionState) -> Result<Permits, ApiError> {
        let reserved = match &function.reserved {
            Some(slots) => Some(Arc::clone(slots).try_acquire_owned().map_err(|_| {
                ApiError::throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
            })?),
            None => None,
        };
        let account = Arc::clone(&self.account)
            .try_acquire_owned()
            .map_err(|_| ApiError::throttled("ConcurrentInvocationLimitExceeded"))?;
        Ok(Permits {
            _reserved: reserved,
            _account: account,
        })
    }

    /// An `Event` call: Lambda queues it until there is capacity.
    async fn run_event(self: Arc<Self>, call: Call) {
        let Some(function) = self.functions.get(&call.function) else {
            return;
        };
        if function.spec.reserved_concurrency == Some(0) {
            tracing::warn!(function = %call.function, "event dropped: the function's reserved concurrency is 0");
            return;
        }
        let permits = tokio::select! {
            permits = async {
                let reserved = match &function.reserved {
                    Some(slots) => Some(Arc::clone(slots).acquire_owned().await.ok()?),
                    None => None,
                };
                let account = Arc::clone(&self.account).acquire_owned().await.ok()?;
                Some(Permits { _reserved: reserved, _account: account })
            } => permits,
            () = self.cancel.cancelled() => None,
        };
        let Some(permits) = permits else {
            return;
        };
        function.invoked.fetch_add(1, Ordering::Relaxed);
        let function_name = call.function.clone();
        let (answer, _) = self.execute(call, permits).await;
        if let Answer::Error { body, .. } = answer {
            tracing::warn!(function = %function_name, "event invocation failed: {}", String::from_utf8_lossy(&body));
        }
    }

    /// Runs `call` on a warm instance or a new one; its answer and log.
    async fn execute(&self, call: Call, permits: Permits) -> (Answer, String) {
        let function = &self.functions[&call.function];
        let request_id = uuid::Uuid::new_v4().to_string();
        let warm = take_warm(function, &call.version);
        let (mut instance, init_duration) = match warm {
            Some(instance) => (instance, None),
            None => {
                function.started.fetch_add(1, Ordering::Relaxed);
                let launch = Launch {
                    id: format!(
                        "{}-{}",
                        sanitize(&call.function),
                        self.next_instance.fetch_add(1, Ordering::Relaxed)
                    ),
                    function: &call.function,
                    version: &call.version,
                    spec: &call.spec,
                    region: &self.region,
                    init_timeout: self.init_timeout,
                    limiter: &self.limiter,
                    log_dir: self.log_dir.path(),
                };
                match Instance::start(&launch, &self.cancel).await {
                    Ok((instance, init)) => (instance, Some(init)),
                    Err(failure) => {
                        let report = self.report(
                            &call,
                            &request_id,
                            &failure.outcome,
                            Duration::ZERO,
                            Some(failure.init_duration),
                            failure.max_memory_mb,
                        );
                        let log = invocation_log(&call.version, &failure.output, &report);
                        return (failure.outcome.into_answer(&request_id), log);
                    }
                }
            }
        };
        let timeout = call.spec.timeout;
        let event = Event {
            request_id: request_id.clone(),
            payload: call.payload.clone(),
            deadline_ms: chrono::Utc::now().timestamp_millis()
                + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2),
            function_arn: call.arn.clone(),
            trace_id: trace_id(),
            client_context: call.client_context.clone(),
        };
        let started = Instant::now();
        let outcome = instance.invoke(event, timeout, &self.cancel).await;
        let duration = started.elapsed();
        let mut output = instance.take_output();
        if let Outcome::TimedOut(limit) = &outcome {
            output.push_str(&format!(
                "{} {request_id} Task timed out after {:.2} seconds\n",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                limit.as_secs_f64()
            ));
        }
        let report = self.report(
            &call,
            &request_id,
            &outcome,
            duration,
            init_duration,
            instance.max_memory_mb(),
        );
        let log = invocation_log(&call.version, &output, &report);
        if outcome.keeps_instance() && !self.cancel.is_cancelled() {
            function
                .idle
                .lock()
                .expect("not poisoned")
                .push((call.version.clone(), instance));
        } else {
            instance.destroy().await;
        }
        drop(permits);
        (outcome.into_answer(&request_id), log)
    }

    fn report(
        &self,
        call: &Call,
        request_id: &str,
        outcome: &Outcome,
        duration: Duration,
        init: Option<Duration>,
        max_memory_mb: u32,
    ) -> Report {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let init_duration_ms = init.map(|d| d.as_secs_f64() * 1000.0);
        Report {
            request_id: request_id.to_owned(),
            duration_ms,
            billed_duration_ms: Report::billed_ms(duration_ms, init_duration_ms),
            memory_size_mb: call.spec.memory_mb,
            max_memory_used_mb: max_memory_mb,
            init_duration_ms,
            status: outcome.report_status().map(str::to_owned),
        }
    }

    /// Kills every idle instance (after the tasks have finished).
    pub(super) async fn destroy_idle(&self) {
        for function in self.functions.values() {
            let idle = std::mem::take(&mut *function.idle.lock().expect("not poisoned"));
            for (_, instance) in idle {
                instance.destroy().await;
            }
        }
        self.limiter.remove();
    }

    /// The process ids of the idle instances (tests check that shutdown
    /// ends them).
    pub fn idle_pids(&self) -> Vec<u32> {
        self.functions
            .values()
            .flat_map(|f| {
                f.idle
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .filter_map(|(_, i)| i.pid())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A warm instance of `version`, dropping any that died while idle.
fn take_warm(function: &FunctionState, version: &str) -> Option<Instance> {
    let mut idle = function.idle.lock().expect("not poisoned");
    while let Some(position) = idle.iter().rposition(|(v, _)| v == version) {
        let (_, mut instance) = idle.swap_remove(position);
        if instance.is_alive() {
            return Some(instance);
        }
        // Its process is gone; kill_on_drop reaps it.
    }
    None
}

/// What one invocation runs.
#[derive(Debug)]
struct Call {
    function: String,
    version: String,
    spec: VersionSpec,
    arn: String,
    payload: Bytes,
    client_context: Option<String>,
}

fn request_too_large(size: usize, limit: usize) -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLargeException",
        format!(
            "Request must be smaller than {limit} bytes for the InvokeFunction operation (it is {size} bytes)"
        ),
    )
}

/// A function name as Invoke takes it: `name`, `name:qualifier`,
/// `account:function:name[:qualifier]` or a full ARN.
fn split_function_name<'a>(
    raw: &'a str,
    qualifier: Option<&'a str>,
) -> Result<(&'a str, Option<&'a str>), ApiError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, in_name) = match parts.as_slice() {
        [name] => (*name, None),
        [name, qualifier] => (*name, Some(*qualifier)),
        ["arn", _, "lambda", _, _, "function", name] | [_, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, qualifier]
        | [_, "function", name, qualifier] => (*name, Some(*qualifier)),
        _ => {
            return Err(ApiError::invalid_parameter(format!(
                "'{raw}' is not a function name or ARN"
            )));
        }
    };
    match (in_name, qualifier) {
        (Some(a), Some(b)) if a != b => Err(ApiError::invalid_parameter(format!(
            "The derived qualifier from the function name '{a}' does not match the specified qualifier '{b}'"
        ))),
        (a, b) => Ok((name, a.or(b))),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An X-Ray trace header like Lambda's (not sampled).
fn trace_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        chrono::Utc::now().timestamp(),
        &id[..24],
        &id[16..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_in_every_form() {
        let ok = |raw, q| split_function_name(raw, q).expect(raw);
        assert_eq!(ok("echo", None), ("echo", None));
        assert_eq!(ok("echo", Some("live")), ("echo", Some("live")));
        assert_eq!(ok("echo:2", None), ("echo", Some("2")));
        assert_eq!(
            ok(
                "arn:aws:lambda:us-east-1:000000000000:function:echo:live",
                None
            ),
            ("echo", Some("live"))
        );
        assert_eq!(ok("000000000000:function:echo", None), ("echo", None));
        assert!(split_function_name("echo:1", Some("2")).is_err());
        assert!(split_function_name("a:b:c", None).is_err());
    }

    #[test]
    fn unknown_invocation_types_are_refused() {
        assert_eq!(
            "Event".parse::<InvocationType>().ok(),
            Some(InvocationType::Event)
        );
        let error = "Later".parse::<InvocationType>().expect_err("refused");
        assert_eq!(error.status, 400);
    }

    #[test]
    fn trace_ids_look_like_xray_ones() {
        let id = trace_id();
        assert!(id.starts_with("Root=1-"), "{id}");
        assert_eq!(id.split(';').count(), 3);
    }
}
