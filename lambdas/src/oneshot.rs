//! A one-invocation Lambda Runtime API: starts a real function binary,
//! hands it one event, and times process start → first answer (its cold
//! start, models loaded). Enough for `lambdex bench models` and the binary
//! round-trip tests; the full local Lambda (Invoke API, instances,
//! concurrency, log tails) supersedes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use tokio::sync::oneshot;

/// Runtime API request id of the single invocation.
const REQUEST_ID: &str = "00000000-0000-4000-8000-000000000001";

/// What the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `…/response`: the function's JSON result.
    Response(Vec<u8>),
    /// `…/error` or `…/init/error`: Lambda's error JSON.
    Error(Vec<u8>),
}

/// The answer and how long after spawning the process it came.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub answer: Answer,
    pub cold_start: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(std::io::Error),
    #[error("{path} gave no answer (waited at most {timeout:?}; exit status: {status})")]
    NoAnswer {
        path: PathBuf,
        timeout: Duration,
        status: String,
    },
}

struct Shared {
    event: Bytes,
    handed_out: Mutex<bool>,
    answer: Mutex<Option<oneshot::Sender<Answer>>>,
}

/// Runs `binary` with `env` until it answers `event` once, then kills it.
pub async fn invoke_once(
    binary: &Path,
    env: &HashMap<String, String>,
    event: Vec<u8>,
    timeout: Duration,
) -> Result<Invocation, OneShotError> {
    let (sender, receiver) = oneshot::channel();
    let shared = Arc::new(Shared {
        event: Bytes::from(event),
        handed_out: Mutex::new(false),
        answer: Mutex::new(Some(sender)),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(|state, body| answer(state, body, false)),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(|state, body| answer(state, body, true)),
        )
        .route(
            "/2018-06-01/runtime/init/error",
            post(|state, body| answer(state, body, true)),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(OneShotError::Listen)?;
    let address = listener.local_addr().map_err(OneShotError::Listen)?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(lambda_env(&address.to_string()))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| OneShotError::Spawn {
            path: binary.to_owned(),
            source,
        })?;
    let outcome = tokio::select! {
        answer = tokio::time::timeout(timeout, receiver) => answer.ok().and_then(Result::ok),
        // A process that exits before answering will not answer.
        _ = child.wait() => None,
    };
    let cold_start = started.elapsed();
    let _ = child.kill().await;
    let status = child
        .try_wait()
        .ok()
        .flatten()
        .map_or_else(|| "killed after the time-out".to_owned(), |s| s.to_string());
    server.abort();
    match outcome {
        Some(answer) => Ok(Invocation { answer, cold_start }),
        None => Err(OneShotError::NoAnswer {
            path: binary.to_owned(),
            timeout,
            status,
        }),
    }
}

/// The environment Lambda gives every function.
fn lambda_env(runtime_api: &str) -> [(&'static str, String); 6] {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", "lambdex-oneshot".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/lambdex-oneshot".to_owned(),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "oneshot".to_owned()),
    ]
}

async fn next(State(shared): State<Arc<Shared>>) -> (StatusCode, HeaderMap, Bytes) {
    let first = !std::mem::replace(&mut *shared.handed_out.lock().expect("not poisoned"), true);
    if !first {
        // One invocation only: a second poll waits until the process is killed.
        std::future::pending::<()>().await;
    }
    let mut headers = HeaderMap::new();
    let deadline = chrono::Utc::now().timestamp_millis() + 900_000;
    for (name, value) in [
        ("lambda-runtime-aws-request-id", REQUEST_ID.to_owned()),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:000000000000:function:lambdex-oneshot".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000001".to_owned(),
        ),
    ] {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("ASCII header values"),
        );
    }
    (StatusCode::OK, headers, shared.event.clone())
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes, is_error: bool) -> StatusCode {
    let answer = if is_error {
        Answer::Error(body.to_vec())
    } else {
        Answer::Response(body.to_vec())
    };
    if let Some(sender) = shared.answer.lock().expect("not poisoned").take() {
        let _ = sender.send(answer);
    }
    StatusCode::ACCEPTED
}

/// A function binary built beside the running executable (`target/release`).
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    // Test executables live one level down, in `deps/`.
    if dir.ends_with("deps") {
        dir = dir.parent()?;
    }
    let path = dir.join(name);
    path.is_file().then_some(path)
}
