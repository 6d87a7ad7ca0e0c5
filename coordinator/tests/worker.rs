//! `lambdex worker` as it runs in production: real RabbitMQ, an
//! Elasticsearch-API server (noida-db; the sink's own suite also runs on
//! osmem-server), the project's functions behind the local Lambda, images
//! from a local HTTP server. Each test has its own queue prefix and index,
//! so they run side by side on one broker.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::routing::get;
use chrono::Utc;
use lambda_runtime::Diagnostic;
use lambdex::amqp;
use lambdex::config::Config;
use lambdex::enqueue;
use lambdex::sink::{self, Sink, SinkError};
use lambdex::topology::Topology;
use lambdex::worker::{ATTEMPTS_HEADER, ERROR_HEADER, REASON_HEADER};
use lambdex_lambdas::local::{
    FunctionSpec, Handler, InProcessFunction, InProcessHandler, LocalConfig, LocalLambda,
};
use lambdex_proto::{Job, PredictionDoc, Status};
use lambdex_tests::services::{self, Elastic, ElasticServer, RABBITMQ_URL};
use lambdex_tests::{astronaut_png, models_dir};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;

/// How long a test waits for the documents or dead letters it expects.
const PATIENCE: Duration = Duration::from_secs(90);

/// A function that always fails in a way a retry might fix.
#[derive(Debug)]
struct AlwaysFails;

impl InProcessFunction for AlwaysFails {
    fn init(
        &self,
        _environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        Ok(Box::new(AlwaysFails))
    }
}

impl InProcessHandler for AlwaysFails {
    fn handle(&mut self, _event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        Err(Diagnostic {
            error_type: "ModelFailure".to_owned(),
            error_message: "the model failed (on purpose)".to_owned(),
        })
    }
}

/// One test's world: functions, images, an Elasticsearch, its own queues.
struct World {
    lambda: LocalLambda,
    elastic: ElasticServer,
    env: BTreeMap<String, String>,
    config: Config,
    logs: tempfile::TempDir,
    workers: Workers,
}

/// The test's `lambdex worker` processes, killed when dropped.
#[derive(Default)]
struct Workers(Vec<Child>);

impl Workers {
    fn kill(&mut self) {
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
    async fn new(elastic: Elastic, settings: &[(&str, &str)]) -> Self {
        services::ensure_rabbitmq();
        let elastic = tokio::task::spawn_blocking(move || ElasticServer::start(elastic))
            .await
            .expect("the server starts");
        let mut functions = LocalConfig::project_defaults(None, models_dir());
        functions.functions.insert(
            "always-fails".to_owned(),
            FunctionSpec::new(Handler::InProcess(Arc::new(AlwaysFails))),
        );
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
            lambda,
            elastic,
            env,
            config,
            logs: tempfile::tempdir().expect("a temporary folder"),
            workers: Workers::default(),
        }
    }

    fn topology(&self) -> Topology {
        Topology::new(&self.config.queue)
    }

    /// Starts one more `lambdex worker`; its log goes to the test's folder.
    fn start_worker(&mut self) {
        let log = self
            .logs
            .path()
            .join(format!("worker-{}.log", fastrand::u32(..)));
        let log = std::fs::File::create(log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lambdex"))
            .arg("worker")
            .envs(&self.env)
            .env("RUST_LOG", "info,lambdex=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("lambdex worker starts");
        self.workers.0.push(child);
    }

    fn kill_workers(&mut self) {
        self.workers.kill();
    }

    /// Sends SIGTERM to every worker and waits for them to exit.
    fn terminate_workers(&mut self) -> Vec<std::process::ExitStatus> {
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
    fn worker_logs(&self) -> Vec<String> {
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
    fn logs(&self) -> String {
        self.worker_logs().concat()
    }

    /// Jobs for the astronaut, each its own URL and id.
    fn jobs(&self, images: &str, count: usize) -> Vec<Job> {
        (0..count)
            .map(|i| {
                let mut job = Job::new(format!("job-{i}"), format!("{images}/astronaut.png?n={i}"));
                job.metadata.insert("post_id".to_owned(), i.to_string());
                job.priority = u8::from(i % 5 == 0);
                job
            })
            .collect()
    }

    async fn publish(&self, jobs: Vec<Job>) {
        enqueue::publish(&self.config, jobs)
            .await
            .expect("the jobs are published");
    }

    async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = amqp::connect(RABBITMQ_URL, "lambdex worker test")
            .await
            .expect("RabbitMQ answers");
        let channel = amqp::confirmed_channel(&connection)
            .await
            .expect("a channel");
        self.topology().declare(&channel).await.expect("declared");
        (connection, channel)
    }

    /// Publishes raw bytes as a job (what a broken producer might send).
    async fn publish_raw(&self, payload: &[u8]) {
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

    /// Every document in the test's index.
    async fn documents(&self) -> Vec<PredictionDoc> {
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
    async fn await_documents(&self, count: usize) -> Vec<PredictionDoc> {
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
    async fn take_dead_letters(&self, count: usize) -> Vec<(FieldTable, Vec<u8>)> {
        let (connection, channel) = self.channel().await;
        let started = Instant::now();
        let mut letters = Vec::new();
        while letters.len() < count {
            let message = channel
                .basic_get(&self.topology().dead_queue, BasicGetOptions::default())
                .await
                .expect("basic.get");
            match message {
                Some(message) => {
                    message
                        .delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("acked");
                    let headers = message.delivery.properties.headers().clone();
                    letters.push((headers.unwrap_or_default(), message.delivery.data));
                }
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

    /// Messages waiting in `queue` (not counting those delivered).
    async fn ready_in(&self, queue: &str) -> u32 {
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

    /// Stops the workers and deletes the test's queues.
    async fn finish(mut self) {
        self.kill_workers();
        let (connection, channel) = self.channel().await;
        self.topology().delete(&channel).await.expect("deleted");
        let _ = connection.close(200, "done").await;
        self.lambda.shutdown().await;
    }
}

/// Serves the astronaut at `/astronaut.png` (any query); the base URL.
async fn image_server() -> String {
    let png = astronaut_png();
    let app = axum::Router::new()
        .route(
            "/astronaut.png",
            get(move || {
                let png = png.clone();
                async move { ([(header::CONTENT_TYPE, "image/png")], png) }
            }),
        )
        .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn header_text(headers: &FieldTable, key: &str) -> String {
    amqp::header_text(Some(headers), key).unwrap_or_else(|| panic!("no {key} in {headers:?}"))
}

fn assert_one_document_per_job(docs: &[PredictionDoc], jobs: usize) {
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

#[tokio::test(flavor = "multi_thread")]
async fn published_jobs_become_documents_and_poison_messages_are_dead_lettered() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(&images, 8)).await;
    world.publish_raw(b"this is not JSON").await;
    world
        .publish_raw(br#"{"schema_version": 99, "job_id": "x", "image_url": "http://a/b"}"#)
        .await;
    world
        .publish(vec![Job::new("gone", format!("{images}/missing.png"))])
        .await;

    let docs = world.await_documents(8).await;
    assert_one_document_per_job(&docs, 8);

    let letters = world.take_dead_letters(3).await;
    let mut reasons: Vec<String> = letters
        .iter()
        .map(|(headers, _)| header_text(headers, REASON_HEADER))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["fetch_status", "invalid_message", "invalid_message"]
    );
    for (headers, _) in &letters {
        assert!(!header_text(headers, ERROR_HEADER).is_empty());
        assert_eq!(amqp::header_number(Some(headers), ATTEMPTS_HEADER), Some(1));
    }
    // The index was made from the strict template.
    let mapping: serde_json::Value = reqwest::get(format!(
        "{}/{}/_mapping",
        world.elastic.url(),
        world.config.elasticsearch.index
    ))
    .await
    .expect("answers")
    .json()
    .await
    .expect("JSON");
    let index = &mapping[&world.config.elasticsearch.index];
    assert_eq!(index["mappings"]["dynamic"], "strict", "{mapping}");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_function_always_fails_is_retried_with_delays_then_dead_lettered() {
    let images = image_server().await;
    let mut world = World::new(
        Elastic::Noida,
        &[
            ("LAMBDEX__MODELS__AGE__FUNCTION", "always-fails"),
            ("LAMBDEX__RETRY__MAX_ATTEMPTS", "1"),
            ("LAMBDEX__QUEUE__REQUEUE_ATTEMPTS", "2"),
            ("LAMBDEX__QUEUE__REQUEUE_FIRST_DELAY", "1s"),
            ("LAMBDEX__QUEUE__REQUEUE_MULTIPLIER", "2"),
        ],
    )
    .await;
    world.start_worker();
    let started = Instant::now();
    world.publish(world.jobs(&images, 1)).await;
    let letters = world.take_dead_letters(1).await;
    let (headers, body) = &letters[0];
    // Two trips through the retry queues (1 s, then 2 s), then the dead letter.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(amqp::header_number(Some(headers), ATTEMPTS_HEADER), Some(3));
    assert_eq!(header_text(headers, REASON_HEADER), "model_failure");
    assert!(header_text(headers, ERROR_HEADER).contains("on purpose"));
    assert_eq!(
        Job::from_slice(body).expect("the job, as sent").job_id,
        "job-0"
    );
    assert!(world.documents().await.is_empty());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_batch_and_restarted_finishes_every_job_once() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[("LAMBDEX__QUEUE__PREFETCH", "4")]).await;
    world.start_worker();
    world.publish(world.jobs(&images, 24)).await;
    world.await_documents(3).await;
    world.kill_workers();
    let before_restart = world.documents().await.len();
    world.start_worker();
    let docs = world.await_documents(24).await;
    assert!(
        before_restart < 24,
        "the kill came too late to test anything"
    );
    assert_one_document_per_job(&docs, 24);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_jobs_and_returns_the_rest_to_the_queue() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[("LAMBDEX__QUEUE__PREFETCH", "4")]).await;
    world.start_worker();
    world.publish(world.jobs(&images, 24)).await;
    world.await_documents(2).await;
    let statuses = tokio::task::block_in_place(|| world.terminate_workers());
    assert!(
        statuses.iter().all(|status| status.success()),
        "{statuses:?}\n{}",
        world.logs()
    );
    assert!(world.logs().contains("stopped"), "{}", world.logs());

    // Every job is either stored or back in its queue: none held, none lost.
    let stored = world.documents().await.len();
    let topology = world.topology();
    let ready =
        world.ready_in(&topology.jobs_queue).await + world.ready_in(&topology.priority_queue).await;
    assert!(stored < 24, "the signal came too late to test anything");
    assert_eq!(
        stored + ready as usize,
        24,
        "{stored} stored, {ready} ready"
    );

    world.start_worker();
    let docs = world.await_documents(24).await;
    assert_one_document_per_job(&docs, 24);
    world.finish().await;
}

/// The broker's connections named `name` (the client's `connection_name`
/// property; RabbitMQ 3.10 has no `user_provided_name` column), by pid as
/// `close_connection` takes it (the table format's; the JSON's is not).
fn connections_named(name: &str) -> Vec<String> {
    let output = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl list_connections: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let property = format!("{{\"connection_name\",\"{name}\"}}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(pid, properties)| pid.starts_with('<') && properties.contains(&property))
        .map(|(pid, _)| pid.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_closed_by_the_broker_is_reopened_and_the_work_finishes() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(&images, 3)).await;
    world.await_documents(3).await;

    let name = format!("lambdex worker {}", world.config.queue.prefix);
    let pids = connections_named(&name);
    assert_eq!(pids.len(), 1, "the worker's connection, {name:?}");
    let closed = Command::new("rabbitmqctl")
        .args(["close_connection", &pids[0], "closed by the test"])
        .status()
        .expect("rabbitmqctl runs");
    assert!(closed.success());

    let mut more = world.jobs(&images, 6);
    more.drain(..3);
    world.publish(more).await;
    let docs = world.await_documents(6).await;
    assert_one_document_per_job(&docs, 6);
    // A new connection replaced the closed one.
    let reopened = connections_named(&name);
    assert_eq!(reopened.len(), 1);
    assert_ne!(reopened, pids);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_elasticsearch_is_down_nothing_is_acknowledged_and_the_backlog_drains_after() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(&images, 2)).await;
    world.await_documents(2).await;

    world.elastic.stop();
    let mut backlog = world.jobs(&images, 8);
    backlog.drain(..2);
    world.publish(backlog).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Held by the worker, unacknowledged: none ready, none lost, none dead.
    assert_eq!(world.ready_in(&world.topology().jobs_queue).await, 0);
    assert_eq!(world.ready_in(&world.topology().dead_queue).await, 0);

    let elastic = &mut world.elastic;
    tokio::task::block_in_place(|| elastic.restart());
    let docs = world.await_documents(8).await;
    assert_one_document_per_job(&docs, 8);
    assert!(world.logs().contains("bulk request failed; retrying"));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_competing_workers_store_every_job_exactly_once() {
    let images = image_server().await;
    let mut world = World::new(Elastic::Noida, &[("LAMBDEX__QUEUE__PREFETCH", "2")]).await;
    for _ in 0..3 {
        world.start_worker();
    }
    world.publish(world.jobs(&images, 30)).await;
    let docs = world.await_documents(30).await;
    assert_one_document_per_job(&docs, 30);
    // Each worker took part, and nothing was dead-lettered.
    let logs = world.worker_logs();
    assert_eq!(logs.len(), 3);
    for log in &logs {
        assert!(
            log.contains("stored tag="),
            "a worker stored nothing:\n{log}"
        );
    }
    assert_eq!(
        world.ready_in(&world.topology().dead_queue).await,
        0,
        "{}",
        world.logs()
    );
    world.finish().await;
}

/// A document as the pipeline makes it, for the sink's own tests.
fn document(job_id: &str, status: Status) -> PredictionDoc {
    let job = Job::new(job_id, "http://example.com/a.jpg");
    let mut doc = lambdex::aggregate::failed(
        &job,
        "not_found",
        "gone".to_owned(),
        false,
        lambdex::aggregate::Timings::default(),
    );
    doc.status = status;
    doc.failure = None;
    doc
}

async fn sink_stores_refuses_and_keeps_the_newer_document(kind: Elastic) {
    let server = tokio::task::spawn_blocking(move || ElasticServer::start(kind))
        .await
        .expect("the server starts");
    let mut config = Config::default().elasticsearch;
    config.url = server.url();
    config.index = format!("sink-{:08x}", fastrand::u32(..));
    config.flush_interval = Duration::from_millis(20);
    config.retry_max_delay = Duration::from_millis(200);
    let client = sink::client(&config).expect("a client");
    sink::install_template(&client, &config)
        .await
        .unwrap_or_else(|error| panic!("{kind:?}: {error}\n{}", server.log()));
    let (sink, task) = Sink::start(&config).expect("the sink starts");

    // Stored, in one bulk request.
    let mut newer = document("a", Status::Ok);
    let writes: Vec<_> = (0..5)
        .map(|i| sink.write(document(&format!("b{i}"), Status::NoFaces)))
        .collect();
    sink.write(newer.clone()).await.expect("stored");
    for write in futures::future::join_all(writes).await {
        write.expect("stored");
    }

    // An older result of the same job does not replace the newer one.
    let mut older = newer.clone();
    older.processed_at = newer.processed_at - chrono::Duration::seconds(5);
    older.status = Status::Partial;
    sink.write(older)
        .await
        .expect("answered as stored: a newer one is");
    let stored: serde_json::Value =
        reqwest::get(format!("{}/{}/_doc/a", server.url(), config.index))
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
    assert_eq!(stored["_source"]["status"], "ok", "{kind:?}: {stored}");
    // A newer one does.
    newer.processed_at = Utc::now() + chrono::Duration::seconds(1);
    newer.status = Status::NoFaces;
    sink.write(newer).await.expect("stored");
    let stored: serde_json::Value =
        reqwest::get(format!("{}/{}/_doc/a", server.url(), config.index))
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
    assert_eq!(
        stored["_source"]["status"], "no_faces",
        "{kind:?}: {stored}"
    );

    // A document the strict mapping refuses is answered with the reason.
    let mut refused = document("c", Status::Ok);
    refused
        .metadata
        .insert("nested.deeper".to_owned(), "x".to_owned());
    let mut bad_index = config.clone();
    bad_index.index = format!("{}-other", config.index);
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{}/{}", server.url(), bad_index.index))
        .json(&serde_json::json!({"mappings": {"dynamic": "strict", "properties": {"job_id": {"type": "keyword"}}}}))
        .send()
        .await
        .expect("answers");
    assert!(created.status().is_success(), "{kind:?}");
    let (other_sink, other_task) = Sink::start(&bad_index).expect("the sink starts");
    let error = other_sink
        .write(refused)
        .await
        .expect_err("the strict mapping refuses it");
    assert!(
        matches!(&error, SinkError::Rejected { status: 400, reason } if reason.contains("strict")),
        "{kind:?}: {error}"
    );
    drop((sink, other_sink));
    task.await.expect("the sink ends once its handles are gone");
    other_task.await.expect("the sink ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_stores_refuses_and_keeps_the_newer_document_on_noida_db() {
    sink_stores_refuses_and_keeps_the_newer_document(Elastic::Noida).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_stores_refuses_and_keeps_the_newer_document_on_osmem_server() {
    sink_stores_refuses_and_keeps_the_newer_document(Elastic::Osmem).await;
}
