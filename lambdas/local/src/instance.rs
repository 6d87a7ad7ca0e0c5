//! One execution environment: a process running a function binary against
//! its own Runtime API, or an in-process handler. Started cold, reused
//! warm, destroyed after an exit or a timeout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lambdex_proto::limits::SYNC_RESPONSE_BYTES;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::cgroup::{Cgroup, CpuLimiter};
use crate::config::{Handler, VersionSpec};
use crate::in_process::{InProcessFunction, InProcessHandler};
use crate::invocation::{Answer, Event, Outcome, error_body, too_large_response};
use crate::runtime_api::{InitSignal, RuntimeApi};

/// A process instance's log file is emptied once it grows past this.
const LOG_ROTATE_BYTES: u64 = 1024 * 1024;
const SHUTTING_DOWN: &str = "the local Lambda is shutting down";

/// What an instance needs to start.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Unique among this host's instances; names its cgroup and log.
    pub id: String,
    pub function: &'a str,
    pub version: &'a str,
    pub spec: &'a VersionSpec,
    pub region: &'a str,
    pub init_timeout: Duration,
    pub limiter: &'a CpuLimiter,
    pub log_dir: &'a Path,
}

/// An instance whose init failed: how, after how long, and what it logged.
#[derive(Debug)]
pub struct InitFailure {
    pub outcome: Outcome,
    pub init_duration: Duration,
    pub output: String,
    pub max_memory_mb: u32,
}

#[derive(Debug)]
pub enum Instance {
    Process(Box<ProcessInstance>),
    InProcess(InProcessInstance),
}

impl Instance {
    /// The init phase; on success, the instance and how long init took.
    pub async fn start(
        launch: &Launch<'_>,
        cancel: &CancellationToken,
    ) -> Result<(Self, Duration), InitFailure> {
        match &launch.spec.handler {
            Handler::Command { program, args } => {
                ProcessInstance::start(launch, program, args, cancel)
                    .await
                    .map(|(instance, init)| (Self::Process(Box::new(instance)), init))
            }
            Handler::InProcess(function) => {
                InProcessInstance::start(launch, Arc::clone(function), cancel)
                    .await
                    .map(|(instance, init)| (Self::InProcess(instance), init))
            }
        }
    }

    /// Runs one event; the instance is fit for another only if the outcome
    /// [keeps it](Outcome::keeps_instance).
    pub async fn invoke(
        &mut self,
        event: Event,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Outcome {
        match self {
            Self::Process(instance) => instance.invoke(event, timeout, cancel).await,
            Self::InProcess(instance) => instance.invoke(event, timeout, cancel).await,
        }
    }

    /// The function's output since the last call.
    pub fn take_output(&mut self) -> String {
        match self {
            Self::Process(instance) => instance.log.take(),
            Self::InProcess(_) => String::new(),
        }
    }

    /// Peak resident memory of the instance so far, in MB.
    pub fn max_memory_mb(&mut self) -> u32 {
        match self {
            Self::Process(instance) => {
                instance.max_memory_mb = instance
                    .max_memory_mb
                    .max(crate::procstat::peak_memory_mb(instance.pid));
                instance.max_memory_mb
            }
            // Instances share this process: its peak is the closest figure.
            Self::InProcess(_) => crate::procstat::peak_memory_mb(std::process::id()),
        }
    }

    /// Whether it can still take an invocation (a process may have exited
    /// while idle).
    pub fn is_alive(&mut self) -> bool {
        match self {
            Self::Process(instance) => matches!(instance.child.try_wait(), Ok(None)),
            Self::InProcess(instance) => instance.handler.is_some(),
        }
    }

    /// The process id, for processes.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Process(instance) => Some(instance.pid),
            Self::InProcess(_) => None,
        }
    }

    /// Kills the process (if any) and removes what it left behind.
    pub async fn destroy(self) {
        if let Self::Process(instance) = self {
            instance.destroy().await;
        }
    }
}

/// A process instance's stdout and stderr, in one file read per invocation.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    offset: u64,
    function: String,
}

impl LogFile {
    fn create(path: PathBuf, function: &str) -> std::io::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            offset: 0,
            function: function.to_owned(),
        })
    }

    /// What was written since the last call, also passed on to tracing.
    /// Everything a process writes before it answers is in the file by the
    /// time its answer arrives: no line of an invocation is missed.
    fn take(&mut self) -> String {
        let mut bytes = Vec::new();
        if self.file.seek(SeekFrom::Start(self.offset)).is_ok() {
            let _ = self.file.read_to_end(&mut bytes);
        }
        self.offset += bytes.len() as u64;
        if self.offset > LOG_ROTATE_BYTES && self.file.set_len(0).is_ok() {
            self.offset = 0;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for line in text.lines() {
            tracing::info!(target: "lambdex::function", function = %self.function, "{line}");
        }
        text
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
pub struct ProcessInstance {
    child: Child,
    pid: u32,
    api: RuntimeApi,
    log: LogFile,
    cgroup: Option<Cgroup>,
    max_memory_mb: u32,
}

/// The environment Lambda gives a custom runtime, then the function's own.
fn lambda_environment(launch: &Launch<'_>, runtime_api: &str) -> BTreeMap<String, String> {
    let memory = launch.spec.memory_mb.to_string();
    let stream = format!(
        "{}/[{}]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        launch.version,
        launch.id
    );
    let mut env: BTreeMap<String, String> = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", launch.function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", launch.version.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", launch.function),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", launch.region.to_owned()),
        ("AWS_DEFAULT_REGION", launch.region.to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        (
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    env.extend(launch.spec.environment.clone());
    env
}

impl ProcessInstance {
    async fn start(
        launch: &Launch<'_>,
        program: &Path,
        args: &[String],
        cancel: &CancellationToken,
    ) -> Result<(Self, Duration), InitFailure> {
        let started = Instant::now();
        let fail = |outcome: Outcome, output: String| InitFailure {
            outcome,
            init_duration: started.elapsed(),
            output,
            max_memory_mb: 0,
        };
        let internal = |what: &str, error: std::io::Error| {
            fail(
                Outcome::Answered(error_body("Runtime.Unknown", &format!("{what}: {error}"))),
                String::new(),
            )
        };
        let (api, init) = RuntimeApi::start()
            .await
            .map_err(|e| internal("cannot start the Runtime API", e))?;
        let log = LogFile::create(
            launch.log_dir.join(format!("{}.log", launch.id)),
            launch.function,
        )
        .map_err(|e| internal("cannot create the instance's log", e))?;
        let stdout = log
            .file
            .try_clone()
            .map_err(|e| internal("cannot share the instance's log", e))?;
        let stderr = log
            .file
            .try_clone()
            .map_err(|e| internal("cannot share the instance's log", e))?;
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(lambda_environment(launch, &api.address.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                return Err(fail(
                    Outcome::Answered(error_body(
                        "Runtime.InvalidEntrypoint",
                        &format!("cannot run {}: {error}", program.display()),
                    )),
                    String::new(),
                ));
            }
        };
        let pid = child.id().unwrap_or_default();
        let cgroup = match launch.limiter.limit(&launch.id, pid, launch.spec.memory_mb) {
            Ok(cgroup) => cgroup,
            Err(error) => {
                tracing::warn!(instance = %launch.id, "CPU not limited for this instance: {error}");
                None
            }
        };
        let failed = tokio::select! {
            signal = init => match signal {
                Ok(InitSignal::Ready) => None,
                Ok(InitSignal::Failed(answer)) => Some(Outcome::Answered(answer)),
                Err(_) => Some(Outcome::Exited("the Runtime API closed".to_owned())),
            },
            status = child.wait() => Some(Outcome::Exited(exit_status(status))),
            () = tokio::time::sleep(launch.init_timeout) => Some(Outcome::TimedOut(launch.init_timeout)),
            () = cancel.cancelled() => Some(Outcome::Exited(SHUTTING_DOWN.to_owned())),
        };
        let init_duration = started.elapsed();
        let mut instance = Self {
            child,
            pid,
            api,
            log,
            cgroup,
            max_memory_mb: 0,
        };
        match failed {
            None => {
                instance.max_memory_mb = crate::procstat::peak_memory_mb(pid);
                Ok((instance, init_duration))
            }
            Some(outcome) => {
                let max_memory_mb = crate::procstat::peak_memory_mb(pid);
                let output = instance.log.take();
                instance.destroy().await;
                Err(InitFailure {
                    outcome,
                    init_duration,
                    output,
                    max_memory_mb,
                })
            }
        }
    }

    async fn invoke(
        &mut self,
        event: Event,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Outcome {
        let answer = self.api.deliver(event).await;
        let outcome = tokio::select! {
            biased;
            answer = answer => match answer {
                Ok(answer) => Outcome::Answered(answer),
                Err(_) => Outcome::Exited("the Runtime API closed".to_owned()),
            },
            status = self.child.wait() => Outcome::Exited(exit_status(status)),
            () = tokio::time::sleep(timeout) => Outcome::TimedOut(timeout),
            () = cancel.cancelled() => Outcome::Exited(SHUTTING_DOWN.to_owned()),
        };
        self.max_memory_mb = self
            .max_memory_mb
            .max(crate::procstat::peak_memory_mb(self.pid));
        outcome
    }

    async fn destroy(mut self) {
        let _ = self.child.kill().await;
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
    }
}

fn exit_status(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("unknown exit status ({error})"),
    }
}

pub struct InProcessInstance {
    /// `None` once a timed-out call kept it.
    handler: Option<Box<dyn InProcessHandler>>,
}

impl std::fmt::Debug for InProcessInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessInstance")
            .field("alive", &self.handler.is_some())
            .finish()
    }
}

impl InProcessInstance {
    async fn start(
        launch: &Launch<'_>,
        function: Arc<dyn InProcessFunction>,
        cancel: &CancellationToken,
    ) -> Result<(Self, Duration), InitFailure> {
        let started = Instant::now();
        let environment = launch.spec.environment.clone();
        let init = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| function.init(&environment)))
        });
        let outcome = tokio::select! {
            joined = init => match joined {
                Ok(Ok(Ok(handler))) => {
                    return Ok((Self { handler: Some(handler) }, started.elapsed()));
                }
                Ok(Ok(Err(diagnostic))) => {
                    Outcome::Answered(error_body(&diagnostic.error_type, &diagnostic.error_message))
                }
                Ok(Err(panic)) => Outcome::Answered(panicked(&*panic)),
                Err(error) => Outcome::Exited(format!("the init thread failed: {error}")),
            },
            () = tokio::time::sleep(launch.init_timeout) => Outcome::TimedOut(launch.init_timeout),
            () = cancel.cancelled() => Outcome::Exited(SHUTTING_DOWN.to_owned()),
        };
        Err(InitFailure {
            outcome,
            init_duration: started.elapsed(),
            output: String::new(),
            max_memory_mb: crate::procstat::peak_memory_mb(std::process::id()),
        })
    }

    async fn invoke(
        &mut self,
        event: Event,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Outcome {
        let Some(mut handler) = self.handler.take() else {
            return Outcome::Exited("the instance was lost to an earlier timeout".to_owned());
        };
        let payload: Bytes = event.payload;
        let call = tokio::task::spawn_blocking(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&payload)));
            (handler, result)
        });
        tokio::select! {
            joined = call => match joined {
                Ok((handler, result)) => {
                    self.handler = Some(handler);
                    Outcome::Answered(match result {
                        Ok(Ok(response)) if response.len() > SYNC_RESPONSE_BYTES => too_large_response(response.len()),
                        Ok(Ok(response)) => Answer::Response(Bytes::from(response)),
                        Ok(Err(diagnostic)) => error_body(&diagnostic.error_type, &diagnostic.error_message),
                        Err(panic) => panicked(&*panic),
                    })
                }
                Err(error) => Outcome::Exited(format!("the handler's thread failed: {error}")),
            },
            () = tokio::time::sleep(timeout) => Outcome::TimedOut(timeout),
            () = cancel.cancelled() => Outcome::Exited(SHUTTING_DOWN.to_owned()),
        }
    }
}

/// A caught panic as lambda_runtime reports one.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Answer {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    error_body(
        "Runtime.HandlerPanic",
        &format!("Lambda panicked: {message}"),
    )
}
