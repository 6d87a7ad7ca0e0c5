//! The Runtime API one process instance polls: `…/invocation/next` hands
//! it the next event, `…/{id}/response` and `…/{id}/error` take its
//! answer, `…/init/error` its failed init. Each instance has its own
//! server, on its own port, because `AWS_LAMBDA_RUNTIME_API` is a bare
//! `host:port`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use lambdex_proto::limits::SYNC_RESPONSE_BYTES;

use crate::invocation::{Answer, Event, too_large_response};

const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// What the instance's first call to the Runtime API said.
#[derive(Debug)]
pub enum InitSignal {
    /// It polled for its first event: init is done.
    Ready,
    /// It reported a failed init.
    Failed(Answer),
}

/// The invocation waiting for the instance's answer.
#[derive(Debug)]
struct Waiter {
    request_id: String,
    answer: oneshot::Sender<Answer>,
}

#[derive(Debug)]
struct Shared {
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    waiter: Mutex<Option<Waiter>>,
    init: Mutex<Option<oneshot::Sender<InitSignal>>>,
}

/// One instance's Runtime API server.
#[derive(Debug)]
pub struct RuntimeApi {
    pub address: SocketAddr,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    /// Listens on 127.0.0.1 (a free port); the receiver fires when init
    /// ends.
    pub async fn start() -> std::io::Result<(Self, oneshot::Receiver<InitSignal>)> {
        let (events, receiver) = mpsc::channel(1);
        let (init, init_receiver) = oneshot::channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(receiver),
            waiter: Mutex::new(None),
            init: Mutex::new(Some(init)),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // The response size is checked, and answered as Lambda does, below.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((
            Self {
                address,
                events,
                shared,
                server,
            },
            init_receiver,
        ))
    }

    /// Hands `event` to the instance's next poll; the receiver gets its
    /// answer.
    pub async fn deliver(&self, event: Event) -> oneshot::Receiver<Answer> {
        let (sender, receiver) = oneshot::channel();
        *self.shared.waiter.lock().expect("not poisoned") = Some(Waiter {
            request_id: event.request_id.clone(),
            answer: sender,
        });
        // The receiver lives as long as the server: the send cannot fail
        // while this instance exists.
        let _ = self.events.send(event).await;
        receiver
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(init) = shared.init.lock().expect("not poisoned").take() {
        let _ = init.send(InitSignal::Ready);
    }
    let Some(event) = shared.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("lambda-runtime-aws-request-id", &event.request_id);
    set("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &event.function_arn);
    set("lambda-runtime-trace-id", &event.trace_id);
    if let Some(context) = &event.client_context {
        set("lambda-runtime-client-context", context);
    }
    (StatusCode::OK, headers, event.payload).into_response()
}

/// Sends `answer` to the invocation `id`, if it is the one waiting.
fn answer(shared: &Shared, id: &str, answer: Answer) -> Response {
    let mut waiter = shared.waiter.lock().expect("not poisoned");
    match waiter.take() {
        Some(w) if w.request_id == id => {
            let _ = w.answer.send(answer);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        other => {
            *waiter = other;
            (
                StatusCode::BAD_REQUEST,
                [(ERROR_TYPE_HEADER, "InvalidRequestID")],
                r#"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#,
            )
                .into_response()
        }
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > SYNC_RESPONSE_BYTES {
        answer(&shared, &id, too_large_response(body.len()));
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#,
        )
            .into_response();
    }
    answer(&shared, &id, Answer::Response(body))
}

fn error_answer(headers: &HeaderMap, body: Bytes) -> Answer {
    Answer::Error {
        body,
        error_type: headers
            .get(ERROR_TYPE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, &id, error_answer(&headers, body))
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match shared.init.lock().expect("not poisoned").take() {
        Some(init) => {
            let _ = init.send(InitSignal::Failed(error_answer(&headers, body)));
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            r#"{"errorMessage":"init is over","errorType":"InvalidStateTransition"}"#,
        )
            .into_response(),
    }
}
