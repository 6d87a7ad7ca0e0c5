//! The Elasticsearch sink: documents in, bulk requests out, and for each
//! document an answer only once Elasticsearch has it (or has refused it for
//! good), so the worker acknowledges a job only after its document is
//! stored.
//!
//! - Batches by count, bytes and a flush interval (`[elasticsearch]`),
//!   with up to `bulk_concurrency` bulk requests in flight; a job's
//!   documents may race in two of them, and the versions settle it.
//! - The document id is the job id: reprocessing a job replaces its
//!   document instead of adding another.
//! - External versioning, the version being `processed_at` in µs
//!   ([`version_of`]): a redelivered job's older result never overwrites a
//!   newer one (the 409 that answers it counts as stored — a newer result
//!   is). A failed job's document (written when it is dead-lettered, so
//!   its outcome can be looked up by id) ranks below every result: a later
//!   success replaces it, it never replaces a result.
//! - Items answered 429 or 5xx, and whole requests that fail (the cluster
//!   down, a timeout), are retried with backoff until they succeed; the
//!   worker holds their jobs unacknowledged meanwhile, and the bounded
//!   queue in front of the sink stops it pulling more.
//! - Items refused for good (a mapping or validation error) answer
//!   [`SinkError::Rejected`] with Elasticsearch's reason: the worker
//!   dead-letters that job. A whole request refused (400, 413) is split in
//!   halves until the document at fault is alone: only it is rejected.
//! - 401 or 403 is not the documents' fault but the settings': every
//!   document of the request answers [`SinkError::Unauthorized`] (its job
//!   goes back to the queue), and the sink reports itself [`Sink::blocked`]
//!   until a request passes, so the worker stops taking jobs meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::params::VersionType;
use elasticsearch::{BulkOperation, BulkOperations, BulkParts, Elasticsearch};
use lambdex_proto::text::truncated;
use lambdex_proto::{PredictionDoc, Status};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::ElasticsearchConfig;

/// The index template as committed in `infra/`; its `index_patterns` are
/// set to the configured index when installed.
pub const INDEX_TEMPLATE: &str =
    include_str!("../../../../infra/elasticsearch/index-template.json");

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("Elasticsearch refused the document ({status}): {reason}")]
    Rejected { status: u16, reason: String },
    #[error("the Elasticsearch sink has stopped")]
    Closed,
    #[error("invalid Elasticsearch setting: {0}")]
    Config(String),
    #[error("Elasticsearch: {0}")]
    Client(#[from] elasticsearch::Error),
    #[error("Elasticsearch answered {status} to {what}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("Elasticsearch refuses the worker's credentials ({status}): {body}")]
    Unauthorized { status: u16, body: String },
}

/// How much of an error answer's body a message quotes.
const QUOTED_BODY_BYTES: usize = 512;

/// A document waiting for its bulk request.
#[derive(Debug)]
struct Pending {
    doc: PredictionDoc,
    bytes: usize,
    done: oneshot::Sender<Result<(), SinkError>>,
}

/// The handle jobs write through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sink {
    sender: mpsc::Sender<Pending>,
    blocked: Blocked,
}

/// Why Elasticsearch refuses the worker, and since when, while it does.
type Blocked = Arc<Mutex<Option<(String, Instant)>>>;

/// The task that batches and sends; finishes once every [`Sink`] is
/// dropped and what they sent is stored.
pub type SinkTask = tokio::task::JoinHandle<()>;

impl Sink {
    /// A sink writing to the cluster `config` names, and its task.
    pub fn start(config: &ElasticsearchConfig) -> Result<(Self, SinkTask), SinkError> {
        let client = client(config)?;
        let (sender, receiver) = mpsc::channel(config.bulk_max_docs.max(1));
        let blocked = Blocked::default();
        let task = tokio::spawn(run(client, config.clone(), receiver, Arc::clone(&blocked)));
        Ok((Self { sender, blocked }, task))
    }

    /// Why Elasticsearch refuses the worker's requests (401, 403), and
    /// when it last did, while it does; `None` once a request passes again.
    pub fn blocked(&self) -> Option<(String, Instant)> {
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stores `doc`; returns once Elasticsearch has it.
    pub async fn write(&self, doc: PredictionDoc) -> Result<(), SinkError> {
        let bytes = serde_json::to_vec(&doc).map_or(0, |json| json.len());
        let (done, answer) = oneshot::channel();
        self.sender
            .send(Pending { doc, bytes, done })
            .await
            .map_err(|_| SinkError::Closed)?;
        answer.await.map_err(|_| SinkError::Closed)?
    }
}

/// A result's versions start here, above every failed document's (whose
/// version is its time in µs, below 2^52 until the year 2112).
const RESULT_VERSIONS: i64 = 1 << 52;

/// The document's external version: its time in µs, and for a result
/// (any status but failed) [`RESULT_VERSIONS`] more, so that a result
/// always wins over a failure, and the newer of two alike wins.
pub fn version_of(doc: &PredictionDoc) -> i64 {
    let micros = doc.processed_at.timestamp_micros().max(0);
    if doc.status == Status::Failed {
        micros
    } else {
        micros.saturating_add(RESULT_VERSIONS)
    }
}

/// The official client for `config`'s cluster.
pub fn client(config: &ElasticsearchConfig) -> Result<Elasticsearch, SinkError> {
    let url = url::Url::parse(config.url.expose()).map_err(|error| {
        // Shown redacted: the URL may carry a password.
        SinkError::Config(format!("elasticsearch.url {}: {error}", config.url))
    })?;
    let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(config.request_timeout)
        .disable_proxy();
    if let Some(api_key) = &config.api_key {
        transport = transport.auth(Credentials::EncodedApiKey(api_key.expose().to_owned()));
    } else if let Some(username) = &config.username {
        transport = transport.auth(Credentials::Basic(
            username.clone(),
            config
                .password
                .as_ref()
                .map(|password| password.expose().to_owned())
                .unwrap_or_default(),
        ));
    }
    let transport = transport
        .build()
        .map_err(|error| SinkError::Config(error.to_string()))?;
    Ok(Elasticsearch::new(transport))
}

/// The committed template, matching `config.index`.
pub fn index_template(config: &ElasticsearchConfig) -> Value {
    let mut template: Value =
        serde_json::from_str(INDEX_TEMPLATE).expect("the committed template is JSON");
    template["index_patterns"] = serde_json::json!([config.index]);
    template
}

/// The template as `flavour` takes it: Elasticsearch's `flattened` is
/// OpenSearch's `flat_object` (one field for any metadata keys, so
/// producers' keys cannot grow the mapping).
pub fn template_for(config: &ElasticsearchConfig, flavour: Flavour) -> Value {
    let mut template = index_template(config);
    if flavour == Flavour::OpenSearch {
        template["template"]["mappings"]["properties"]["metadata"]["type"] =
            Value::from("flat_object");
    }
    template
}

/// Which API the cluster speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Elasticsearch,
    OpenSearch,
}

/// The cluster's flavour, from its root answer's `version.distribution`.
pub async fn flavour(client: &Elasticsearch) -> Result<Flavour, SinkError> {
    let response = client.info().send().await?;
    let status = response.status_code().as_u16();
    if !(200..300).contains(&status) {
        return Err(SinkError::Status {
            what: "the cluster's information",
            status,
            body: response.text().await.unwrap_or_default(),
        });
    }
    let info: Value = response.json().await?;
    Ok(if info["version"]["distribution"] == "opensearch" {
        Flavour::OpenSearch
    } else {
        Flavour::Elasticsearch
    })
}

/// Installs the index template for `config.index` (idempotent), in the
/// cluster's flavour.
pub async fn install_template(
    client: &Elasticsearch,
    config: &ElasticsearchConfig,
) -> Result<(), SinkError> {
    let template = template_for(config, flavour(client).await?);
    let response = client
        .indices()
        .put_index_template(IndicesPutIndexTemplateParts::Name(&config.index))
        .body(template)
        .send()
        .await?;
    let status = response.status_code().as_u16();
    if !(200..300).contains(&status) {
        return Err(SinkError::Status {
            what: "the index template",
            status,
            body: response.text().await.unwrap_or_default(),
        });
    }
    Ok(())
}

/// [`install_template`] when `config.install_template` is on, waiting for
/// Elasticsearch (it may still be starting) with `delays` between tries.
pub async fn install_template_when_up(
    config: &ElasticsearchConfig,
    mut delays: impl Iterator<Item = Duration>,
    max_delay: Duration,
) -> Result<(), SinkError> {
    if !config.install_template {
        return Ok(());
    }
    let client = client(config)?;
    loop {
        match install_template(&client, config).await {
            Err(SinkError::Client(error)) => {
                let delay = delays.next().unwrap_or(max_delay);
                tracing::warn!(%error, ?delay, "cannot reach Elasticsearch; retrying");
                tokio::time::sleep(delay).await;
            }
            done => return done,
        }
    }
}

async fn run(
    client: Elasticsearch,
    config: ElasticsearchConfig,
    mut receiver: mpsc::Receiver<Pending>,
    blocked: Blocked,
) {
    let config = Arc::new(config);
    // `bulk_concurrency` requests at once; a full set stops the batching,
    // and the bounded channel then stops the jobs.
    let in_flight = Arc::new(Semaphore::new(config.bulk_concurrency));
    let mut requests = JoinSet::new();
    while let Some(first) = receiver.recv().await {
        let deadline = Instant::now() + config.flush_interval;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < config.bulk_max_docs && bytes < config.bulk_max_bytes {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(pending)) => {
                    bytes += pending.bytes;
                    batch.push(pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, config, blocked) = (client.clone(), Arc::clone(&config), Arc::clone(&blocked));
        requests.spawn(async move {
            store(&client, &config, &blocked, batch).await;
            drop(permit);
        });
        // Reap the finished ones so the set stays small.
        while requests.try_join_next().is_some() {}
    }
    // Every handle is gone: finish what is in flight.
    while requests.join_next().await.is_some() {}
}

/// Sends `batch` until every document is stored or refused for good, or
/// the cluster refuses the worker itself.
async fn store(
    client: &Elasticsearch,
    config: &ElasticsearchConfig,
    blocked: &Blocked,
    mut batch: Vec<Pending>,
) {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(config.retry_min_delay)
        .with_max_delay(config.retry_max_delay)
        .without_max_times()
        .with_jitter()
        .build();
    loop {
        // A job that gave up waiting (its worker shutting down) needs no write.
        batch.retain(|pending| !pending.done.is_closed());
        if batch.is_empty() {
            return;
        }
        let retry = match bulk(client, &config.index, &batch).await {
            Ok(statuses) => {
                *blocked.lock().unwrap_or_else(|e| e.into_inner()) = None;
                settle(batch, statuses)
            }
            Err(SinkError::Status {
                status: status @ (401 | 403),
                body,
                ..
            }) => {
                let body = truncated(&body, QUOTED_BODY_BYTES);
                tracing::error!(status, %body, "Elasticsearch refuses the worker's credentials");
                *blocked.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((format!("{status}: {body}"), Instant::now()));
                for pending in batch {
                    let error = SinkError::Unauthorized {
                        status,
                        body: body.clone(),
                    };
                    let _ = pending.done.send(Err(error));
                }
                return;
            }
            Err(SinkError::Status {
                status: status @ (400 | 413),
                body,
                ..
            }) => {
                // The request as a whole: find the document at fault.
                let body = truncated(&body, QUOTED_BODY_BYTES);
                if batch.len() == 1 {
                    let reason = format!("the bulk request of this document alone: {body}");
                    for pending in batch {
                        let _ = pending.done.send(Err(SinkError::Rejected {
                            status,
                            reason: reason.clone(),
                        }));
                    }
                } else {
                    tracing::warn!(
                        status,
                        documents = batch.len(),
                        "a bulk request was refused whole; splitting it"
                    );
                    let second = batch.split_off(batch.len() / 2);
                    Box::pin(store(client, config, blocked, batch)).await;
                    Box::pin(store(client, config, blocked, second)).await;
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, documents = batch.len(), "bulk request failed; retrying");
                batch
            }
        };
        if retry.is_empty() {
            return;
        }
        batch = retry;
        let delay = delays.next().unwrap_or(config.retry_max_delay);
        tokio::time::sleep(delay).await;
    }
}

/// One bulk request; each item's status and error reason, in order.
async fn bulk(
    client: &Elasticsearch,
    index: &str,
    batch: &[Pending],
) -> Result<Vec<(u16, Option<String>)>, SinkError> {
    let mut operations = BulkOperations::new();
    for pending in batch {
        let version = version_of(&pending.doc);
        operations.push(
            BulkOperation::index(&pending.doc)
                .id(pending.doc.job_id.clone())
                .version(version)
                .version_type(VersionType::External),
        )?;
    }
    let response = client
        .bulk(BulkParts::Index(index))
        .body(vec![operations])
        .send()
        .await?;
    let status = response.status_code().as_u16();
    if !(200..300).contains(&status) {
        return Err(SinkError::Status {
            what: "a bulk request",
            status,
            body: response.text().await.unwrap_or_default(),
        });
    }
    let body: Value = response.json().await?;
    let items = body["items"].as_array().cloned().unwrap_or_default();
    if items.len() != batch.len() {
        return Err(SinkError::Status {
            what: "a bulk request",
            status,
            body: format!(
                "{} items answered for {} documents",
                items.len(),
                batch.len()
            ),
        });
    }
    Ok(items
        .iter()
        .map(|item| {
            let result = item.as_object().and_then(|item| item.values().next());
            let status = result
                .and_then(|result| result["status"].as_u64())
                .and_then(|status| u16::try_from(status).ok())
                .unwrap_or(500);
            let reason = result
                .map(|result| &result["error"])
                .filter(|error| !error.is_null())
                .map(|error| {
                    format!(
                        "{}: {}",
                        error["type"].as_str().unwrap_or("error"),
                        error["reason"].as_str().unwrap_or_default()
                    )
                });
            (status, reason)
        })
        .collect())
}

/// Answers the stored and refused documents; returns those to retry.
fn settle(batch: Vec<Pending>, statuses: Vec<(u16, Option<String>)>) -> Vec<Pending> {
    let mut retry = Vec::new();
    for (pending, (status, reason)) in batch.into_iter().zip(statuses) {
        match Outcome::of(status) {
            Outcome::Stored => {
                let _ = pending.done.send(Ok(()));
            }
            Outcome::Retry => {
                tracing::debug!(status, ?reason, job_id = %pending.doc.job_id, "document not taken yet");
                retry.push(pending);
            }
            Outcome::Rejected => {
                let reason = reason.unwrap_or_else(|| format!("status {status}"));
                tracing::warn!(status, %reason, job_id = %pending.doc.job_id, "document refused");
                let _ = pending
                    .done
                    .send(Err(SinkError::Rejected { status, reason }));
            }
        }
    }
    retry
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Stored,
    Retry,
    Rejected,
}

impl Outcome {
    fn of(status: u16) -> Self {
        match status {
            // 409: the stored version is newer or the same; nothing to do.
            200..=299 | 409 => Self::Stored,
            408 | 429 | 500..=599 => Self::Retry,
            _ => Self::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_outranks_every_failure_and_the_newer_of_two_alike_wins() {
        let doc = |status, time: &str| {
            serde_json::from_value::<PredictionDoc>(serde_json::json!({
                "schema_version": lambdex_proto::SCHEMA_VERSION, "job_id": "a",
                "image_url": "https://x/a.jpg", "status": status, "processed_at": time,
            }))
            .expect("a document")
        };
        let old_result = version_of(&doc("ok", "2026-01-01T00:00:00Z"));
        let new_failure = version_of(&doc("failed", "2100-01-01T00:00:00Z"));
        let newer_failure = version_of(&doc("failed", "2100-01-02T00:00:00Z"));
        let new_result = version_of(&doc("no_faces", "2026-01-02T00:00:00Z"));
        assert!(new_failure < old_result);
        assert!(new_failure < newer_failure);
        assert!(old_result < new_result);
    }

    #[test]
    fn item_statuses_are_stored_retried_or_refused() {
        assert_eq!(Outcome::of(201), Outcome::Stored);
        assert_eq!(Outcome::of(409), Outcome::Stored);
        assert_eq!(Outcome::of(429), Outcome::Retry);
        assert_eq!(Outcome::of(503), Outcome::Retry);
        assert_eq!(Outcome::of(400), Outcome::Rejected);
    }

    #[test]
    fn metadata_is_one_flat_field_in_either_flavour() {
        let config = ElasticsearchConfig::default();
        let mapping = |flavour| {
            template_for(&config, flavour)["template"]["mappings"]["properties"]["metadata"]["type"]
                .clone()
        };
        assert_eq!(mapping(Flavour::Elasticsearch), "flattened");
        assert_eq!(mapping(Flavour::OpenSearch), "flat_object");
    }

    #[test]
    fn the_committed_template_is_strict() {
        let template: Value = serde_json::from_str(INDEX_TEMPLATE).expect("JSON");
        assert_eq!(template["template"]["mappings"]["dynamic"], "strict");
        assert_eq!(
            template["template"]["mappings"]["properties"]["faces"]["type"],
            "nested"
        );
    }
}
