//! One queue test's world: the functions behind the local Lambda (the
//! project's, and one that always fails), an Elasticsearch-API server, its
//! own queues and index, and `lambdex` child processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use lambdex::config::Config;
use lambdex::queue::headers::{
    ATTEMPTS_HEADER, ERROR_HEADER, LAST_FAILURE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER,
};
use lambdex::queue::topology::Topology;
use lambdex::queue::{amqp, enqueue};
use lambdex_local::{LocalConfig, LocalLambda};
use lambdex_proto::{Job, PredictionDoc, Status};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;

use crate::fakes::Faulty;
use crate::images::ImageServer;
use crate::models_dir;
use crate::services::{self, Elastic, ElasticServer, RABBITMQ_URL};

/// How long a test waits for the documents or dead letters it expects.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// How many more times a test's queues are deleted when the broker refuses.
const DELETE_TRIES: u32 = 30;

/// One test's world: functions, images, an Elasticsearch, its own queues.
#[derive(Debug)]
pub struct World {
    /// The `lambdex` binary under test.
    pub bin: PathBuf,
    /// The test's images, good and hostile.
    pub images: ImageServer,
    pub lambda: LocalLambda,
    pub elastic: ElasticServer,
    pub env: BTreeMap<String, String>,
    pub config: Config,
    pub logs: tempfile::TempDir,
    pub workers: Workers,
}

/// The test's `lambdex worker` processes, killed when dropped.
#[derive(Debug, Default)]
pub struct Workers(pub Vec<Child>);

impl Workers {
    pub fn kill(&mut self) {
        for mut worker in self.0.drain(..) {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill();
    }
}

impl World {
    /// A world whose workers and commands run `bin` (a suite gives
    /// `env!("CARGO_BIN_EXE_lambdex")`), with `settings` over the test's.
    pub async fn new(bin: &str, elastic: Elastic, settings: &[(&str, &str)]) -> Self {
        let mut functions = LocalConfig::project_defaults(None, models_dir());
        functions.functions.insert(
            "always-fails".to_owned(),
            Faulty::always("ModelFailure").spec(),
        );
        Self::with_functions(bin, elastic, settings, functions).await
    }

    /// A world whose local Lambda serves `functions` (fakes, say) instead
    /// of the project's.
    pub async fn with_functions(
        bin: &str,
        elastic: Elastic,
        settings: &[(&str, &str)],
        functions: LocalConfig,
    ) -> Self {
        services::ensure_rabbitmq();
        let elastic = tokio::task::spawn_blocking(move || ElasticServer::start(elastic))
            .await
            .expect("the server starts");
        let lambda = LocalLambda::start(functions, 0)
            .await
            .expect("the local Lambda starts");
        let name = format!("t{:08x}", fastrand::u32(..));
        let mut env: BTreeMap<String, String> = [
            ("LAMBDEX__LAMBDA__ENDPOINT_URL", lambda.endpoint_url()),
            ("LAMBDEX__LAMBDA__CREDENTIALS", "local".to_owned()),
            ("LAMBDEX__FETCH__ALLOW", "127.0.0.0/8".to_owned()),
            ("LAMBDEX__QUEUE__URL", RABBITMQ_URL.to_owned()),
            ("LAMBDEX__QUEUE__PREFIX", name.clone()),
            ("LAMBDEX__QUEUE__RECONNECT_MIN_DELAY", "100ms".to_owned()),
            ("LAMBDEX__QUEUE__RECONNECT_MAX_DELAY", "1s".to_owned()),
            ("LAMBDEX__ELASTICSEARCH__URL", elastic.url()),
            ("LAMBDEX__ELASTICSEARCH__INDEX", format!("{name}-docs")),
            ("LAMBDEX__ELASTICSEARCH__FLUSH_INTERVAL", "50ms".to_owned()),
            ("LAMBDEX__ELASTICSEARCH__RETRY_MAX_DELAY", "1s".to_owned()),
            ("LAMBDEX__ELASTICSEARCH__REQUEST_TIMEOUT", "5s".to_owned()),
            ("LAMBDEX__RETRY__MIN_DELAY", "10ms".to_owned()),
            ("LAMBDEX__RETRY__MAX_DELAY", "50ms".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        for (key, value) in settings {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let config = Config::load_with(None, Some(env.clone())).expect("valid settings");
        Self {
            bin: PathBuf::from(bin),
            images: ImageServer::start().await.expect("the image server starts"),
            lambda,
            elastic,
            env,
            config,
            logs: tempfile::tempdir().expect("a temporary folder"),
            workers: Workers::default(),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.config.queue)
    }

    /// Starts one more `lambdex worker`; its log goes to the test's folder.
    pub fn start_worker(&mut self) {
        let log = self
            .logs
            .path()
            .join(format!("worker-{}.log", fastrand::u32(..)));
        let log = std::fs::File::create(log).expect("a log file");
        let child = Command::new(&self.bin)
            .arg("worker")
            .envs(&self.env)
            .env(
                "RUST_LOG",
                std::env::var("LAMBDEX_TEST_LOG")
                    .unwrap_or_else(|_| "info,lambdex=debug".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("lambdex worker starts");
        self.workers.0.push(child);
    }

    pub fn kill_workers(&mut self) {
        self.workers.kill();
    }

    /// Sends SIGTERM to every worker and waits for them to exit.
    pub fn terminate_workers(&mut self) -> Vec<std::process::ExitStatus> {
        self.workers
            .0
            .drain(..)
            .map(|mut worker| {
                let sent = Command::new("kill")
                    .args(["-TERM", &worker.id().to_string()])
                    .status()
                    .expect("kill runs");
                assert!(sent.success());
                worker.wait().expect("the worker exits")
            })
            .collect()
    }

    /// Each worker's log.
    pub fn worker_logs(&self) -> Vec<String> {
        std::fs::read_dir(self.logs.path())
            .expect("the log folder")
            .map(|entry| {
                let path = entry.expect("an entry").path();
                format!(
                    "--- {}\n{}",
                    path.display(),
                    std::fs::read_to_string(&path).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The workers' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.worker_logs().concat()
    }

    /// Jobs for the astronaut, each its own URL and id.
    pub fn jobs(&self, count: usize) -> Vec<Job> {
        (0..count)
            .map(|i| {
                let mut job = Job::new(
                    format!("job-{i}"),
                    self.images.url(&format!("astronaut.png?n={i}")),
                );
                job.metadata.insert("post_id".to_owned(), i.to_string());
                job.priority = u8::from(i % 5 == 0);
                job
            })
            .collect()
    }

    pub async fn publish(&self, jobs: Vec<Job>) {
        enqueue::publish(&self.config, jobs, || {})
            .await
            .expect("the jobs are published");
    }

    pub async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = amqp::connect(&self.config.queue, "lambdex worker test")
            .await
            .expect("RabbitMQ answers");
        let channel = amqp::confirmed_channel(&connection)
            .await
            .expect("a channel");
        self.topology().declare(&channel).await.expect("declared");
        (connection, channel)
    }

    /// Publishes raw bytes as a job (what a broken producer might send).
    pub async fn publish_raw(&self, payload: &[u8]) {
        let (connection, channel) = self.channel().await;
        amqp::publish(
            &channel,
            &self.topology().jobs_exchange,
            "batch",
            payload,
            FieldTable::default(),
        )
        .await
        .expect("published");
        let _ = connection.close(200, "done").await;
    }

    /// Every result in the test's index: its documents but those of failed
    /// jobs (which the worker stores as it dead-letters them).
    pub async fn documents(&self) -> Vec<PredictionDoc> {
        let mut docs = self.all_documents().await;
        docs.retain(|doc| doc.status != Status::Failed);
        docs
    }

    /// Every document in the test's index, failed jobs' included.
    pub async fn all_documents(&self) -> Vec<PredictionDoc> {
        let index = &self.config.elasticsearch.index;
        let http = reqwest::Client::new();
        let _ = http
            .post(format!("{}/{index}/_refresh", self.elastic.url()))
            .send()
            .await;
        let Ok(response) = http
            .get(format!("{}/{index}/_search?size=1000", self.elastic.url()))
            .send()
            .await
        else {
            return Vec::new();
        };
        if !response.status().is_success() {
            return Vec::new();
        }
        let body: serde_json::Value = response.json().await.expect("JSON");
        body["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .map(|hit| {
                        serde_json::from_value(hit["_source"].clone()).expect("a PredictionDoc")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the index holds `count` documents; panics with the
    /// workers' logs if it does not in time.
    pub async fn await_documents(&self, count: usize) -> Vec<PredictionDoc> {
        let started = Instant::now();
        loop {
            let docs = self.documents().await;
            if docs.len() >= count {
                return docs;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} of {count} documents after {PATIENCE:?}\n{}",
                docs.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Takes `count` dead letters (headers and body), waiting for them.
    pub async fn take_dead_letters(&self, count: usize) -> Vec<(FieldTable, Vec<u8>)> {
        let (connection, channel) = self.channel().await;
        let started = Instant::now();
        let mut letters = Vec::new();
        while letters.len() < count {
            match take_one(&channel, &self.topology().dead_queue).await {
                Some(letter) => letters.push(letter),
                None => {
                    assert!(
                        started.elapsed() < PATIENCE,
                        "{} of {count} dead letters after {PATIENCE:?}\n{}",
                        letters.len(),
                        self.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let _ = connection.close(200, "done").await;
        letters
    }

    /// Messages waiting in `queues` together, once at least `count` of
    /// them are, or when `PATIENCE` is up: a process that stopped holding
    /// messages unacknowledged has them requeued a moment after it goes,
    /// when the broker sees its connection close.
    pub async fn settled_ready_in(&self, queues: &[&str], count: usize) -> usize {
        let started = Instant::now();
        loop {
            let mut ready = 0;
            for queue in queues {
                ready += self.ready_in(queue).await as usize;
            }
            if ready >= count || started.elapsed() > PATIENCE {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages waiting in `queue` (not counting those delivered).
    pub async fn ready_in(&self, queue: &str) -> u32 {
        let (connection, channel) = self.channel().await;
        let declared = channel
            .queue_declare(
                queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done").await;
        declared.message_count()
    }

    /// Runs `lambdex ARGS` with the test's settings and waits for it.
    pub fn lambdex(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .envs(&self.env)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("lambdex runs")
    }

    /// Publishes `payload` straight to the dead-letter queue, with the
    /// failure headers a worker would have set.
    pub async fn publish_dead_letter(&self, payload: &[u8], reason: &str, last_failure: &str) {
        let (connection, channel) = self.channel().await;
        let mut headers = FieldTable::default();
        amqp::set_text(&mut headers, REASON_HEADER, reason);
        amqp::set_text(
            &mut headers,
            ERROR_HEADER,
            &format!("{reason} (on purpose)"),
        );
        amqp::set_text(&mut headers, LAST_FAILURE_HEADER, last_failure);
        amqp::set_number(&mut headers, ATTEMPTS_HEADER, 3);
        amqp::set_text(&mut headers, ORIGINAL_ROUTING_KEY_HEADER, "batch");
        amqp::publish(&channel, "", &self.topology().dead_queue, payload, headers)
            .await
            .expect("published");
        let _ = connection.close(200, "done").await;
    }

    /// Publishes many payloads to the dead-letter queue with one `reason`.
    pub async fn publish_dead_letters<'a>(
        &self,
        payloads: impl Iterator<Item = &'a [u8]>,
        reason: &str,
    ) {
        use futures::StreamExt as _;
        let (connection, channel) = self.channel().await;
        let mut headers = FieldTable::default();
        amqp::set_text(&mut headers, REASON_HEADER, reason);
        amqp::set_text(&mut headers, LAST_FAILURE_HEADER, &Utc::now().to_rfc3339());
        let dead_queue = self.topology().dead_queue;
        let published: Vec<_> = futures::stream::iter(payloads)
            .map(|payload| amqp::publish(&channel, "", &dead_queue, payload, headers.clone()))
            .buffer_unordered(500)
            .collect()
            .await;
        for result in published {
            result.expect("published");
        }
        let _ = connection.close(200, "done").await;
    }

    /// Takes every message ready in `queue` (headers and body).
    pub async fn drain(&self, queue: &str) -> Vec<(FieldTable, Vec<u8>)> {
        let (connection, channel) = self.channel().await;
        let mut messages = Vec::new();
        while let Some(message) = take_one(&channel, queue).await {
            messages.push(message);
        }
        let _ = connection.close(200, "done").await;
        messages
    }

    /// Stops the workers and deletes the test's queues.
    pub async fn finish(mut self) {
        self.kill_workers();
        // A quorum queue whose broker has just restarted may refuse its
        // deletion (INTERNAL_ERROR, which closes the connection) until its
        // member is back: try again on a new connection for a while.
        let mut tries = 0;
        loop {
            let deleted = self.delete_topology().await;
            match deleted {
                Ok(()) => break,
                Err(error) if tries < DELETE_TRIES => {
                    tries += 1;
                    eprintln!("deleting the test's queues, try {tries}: {error}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => panic!("the test's queues not deleted: {error}"),
            }
        }
        self.lambda.shutdown().await;
    }
}

impl World {
    /// Deletes the test's queues and exchanges on a connection of its own.
    async fn delete_topology(&self) -> Result<(), String> {
        let connection = amqp::connect(&self.config.queue, "lambdex test cleanup")
            .await
            .map_err(|error| error.to_string())?;
        let deleted = match connection.create_channel().await {
            Ok(channel) => self.topology().delete(&channel).await,
            Err(error) => Err(error),
        };
        let _ = connection.close(200, "done").await;
        deleted.map_err(|error| error.to_string())
    }
}

/// Takes (gets and acknowledges) the next message ready in `queue`.
async fn take_one(channel: &lapin::Channel, queue: &str) -> Option<(FieldTable, Vec<u8>)> {
    let message = channel
        .basic_get(queue, BasicGetOptions::default())
        .await
        .expect("basic.get")?;
    message
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("acked");
    let headers = message.delivery.properties.headers().clone();
    Some((headers.unwrap_or_default(), message.delivery.data))
}

pub fn header_text(headers: &FieldTable, key: &str) -> String {
    amqp::header_text(Some(headers), key).unwrap_or_else(|| panic!("no {key} in {headers:?}"))
}

pub fn assert_one_document_per_job(docs: &[PredictionDoc], jobs: usize) {
    let ids: BTreeSet<&str> = docs.iter().map(|doc| doc.job_id.as_str()).collect();
    assert_eq!(docs.len(), jobs, "duplicates or extras: {ids:?}");
    assert_eq!(ids.len(), jobs);
    for doc in docs {
        assert_eq!(doc.status, Status::Ok, "{:?}", doc.failure);
        assert_eq!(doc.faces.len(), 1, "{doc:?}");
        let face = &doc.faces[0];
        assert!(face.age.is_some() && face.gender.is_some(), "{face:?}");
        assert_eq!(
            doc.metadata["post_id"],
            doc.job_id.trim_start_matches("job-")
        );
    }
}
