//! A proxy in front of an Elasticsearch-API server that misbehaves on
//! cue, for the faults a real cluster has that a test server does not:
//! answering 429 to part of a bulk request, refusing the worker's
//! credentials, refusing a whole bulk request for one document in it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Passes everything on.
    Pass = 0,
    /// Passes everything on, then answers every other item of a bulk
    /// request 429 (the cluster was too busy), as a loaded cluster does.
    HalfThrottled = 1,
    /// Answers 401 to everything: the worker's credentials are refused.
    Unauthorized = 2,
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct ElasticProxy {
    url: String,
    mode: Arc<AtomicU8>,
    poison: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct Target {
    backend: String,
    client: reqwest::Client,
    mode: Arc<AtomicU8>,
    poison: Arc<Mutex<Option<String>>>,
}

impl ElasticProxy {
    /// A proxy to the server at `backend`, passing everything at first.
    pub async fn start(backend: &str) -> std::io::Result<Self> {
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let poison = Arc::default();
        let target = Target {
            backend: backend.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            mode: Arc::clone(&mode),
            poison: Arc::clone(&poison),
        };
        let app = axum::Router::new().fallback(forward).with_state(target);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            mode,
            poison,
            task,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// From now on a bulk request holding `text` is refused whole (400),
    /// as a cluster refuses a request it cannot parse; `None` stops it.
    pub fn refuse_bulks_holding(&self, text: Option<&str>) {
        *self.poison.lock().unwrap_or_else(|e| e.into_inner()) = text.map(str::to_owned);
    }
}

impl Drop for ElasticProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(target): State<Target>, request: Request) -> Response {
    let mode = target.mode.load(Ordering::SeqCst);
    if mode == Mode::Unauthorized as u8 {
        let body = json!({"error": {"type": "security_exception", "reason": "unable to authenticate user"}, "status": 401});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let poison = target
        .poison
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(poison) = poison
        && parts.uri.path().ends_with("/_bulk")
        && body
            .windows(poison.len().max(1))
            .any(|w| w == poison.as_bytes())
    {
        let refusal = json!({"error": {"type": "parse_exception", "reason": "the request cannot be parsed"}, "status": 400});
        return (StatusCode::BAD_REQUEST, axum::Json(refusal)).into_response();
    }
    let answer = send(&target, &parts.method, &parts.uri, &parts.headers, body).await;
    let Ok((status, content_type, bytes)) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let is_bulk = parts.uri.path().ends_with("/_bulk");
    let bytes = if mode == Mode::HalfThrottled as u8 && is_bulk && status.is_success() {
        throttle_half(&bytes).unwrap_or(bytes)
    } else {
        bytes
    };
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

async fn send(
    target: &Target,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, String, Bytes), reqwest::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = target
        .client
        .request(method.clone(), format!("{}{path}", target.backend))
        .body(body);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        outgoing = outgoing.header(header::CONTENT_TYPE, content_type);
    }
    let response = outgoing.send().await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    Ok((status, content_type, response.bytes().await?))
}

/// A bulk answer with every other item turned into a 429.
fn throttle_half(answer: &[u8]) -> Option<Bytes> {
    let mut body: Value = serde_json::from_slice(answer).ok()?;
    let items = body["items"].as_array_mut()?;
    for item in items.iter_mut().skip(1).step_by(2) {
        let result = item.as_object_mut()?.values_mut().next()?;
        result["status"] = json!(429);
        result["error"] = json!({
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution (the proxy says the cluster is busy)"
        });
    }
    body["errors"] = json!(true);
    serde_json::to_vec(&body).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_bulk_item_becomes_a_429() {
        let answer = json!({"errors": false, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"index": {"_id": "b", "status": 201}},
            {"index": {"_id": "c", "status": 201}},
        ]});
        let throttled = throttle_half(&serde_json::to_vec(&answer).expect("JSON")).expect("a bulk");
        let body: Value = serde_json::from_slice(&throttled).expect("JSON");
        assert_eq!(body["errors"], true);
        let statuses: Vec<&Value> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| &item["index"]["status"])
            .collect();
        assert_eq!(statuses, [&json!(201), &json!(429), &json!(201)]);
    }
}
