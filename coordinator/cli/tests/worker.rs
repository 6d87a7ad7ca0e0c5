//! `lambdex worker` as it runs in production: real RabbitMQ, an
//! Elasticsearch-API server (noida-db; the sink's own suite also runs on
//! osmem-server), the project's functions behind the local Lambda, images
//! from a local HTTP server. Each test has its own queue prefix and index,
//! so they run side by side on one broker.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use lambdex::config::{Config, ElasticsearchConfig};
use lambdex::queue::amqp;
use lambdex::queue::headers::{ATTEMPTS_HEADER, ERROR_HEADER, HISTORY_HEADER, REASON_HEADER};
use lambdex::sink::{self, Sink, SinkError};
use lambdex_proto::{Job, PredictionDoc, Status};
use lambdex_tests::proxy::{ElasticProxy, Mode as ProxyMode};
use lambdex_tests::services::{self, Elastic, ElasticServer};

use lambdex_tests::world::*;

/// The binary under test.
const LAMBDEX: &str = env!("CARGO_BIN_EXE_lambdex");

#[tokio::test(flavor = "multi_thread")]
async fn published_jobs_become_documents_and_poison_messages_are_dead_lettered() {
    let metrics = format!("127.0.0.1:{}", services::free_port());
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[("LAMBDEX__METRICS__LISTEN", &metrics)],
    )
    .await;
    world.start_worker();
    world.publish(world.jobs(8)).await;
    world.publish_raw(b"this is not JSON").await;
    world
        .publish_raw(br#"{"schema_version": 99, "job_id": "x", "image_url": "http://a/b"}"#)
        .await;
    world
        .publish(vec![Job::new("gone", world.images.url("missing.png"))])
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
    // The dead-lettered job's outcome is in the index under its id (the
    // messages that are not jobs have no id to keep it under).
    let failed: Vec<PredictionDoc> = world
        .all_documents()
        .await
        .into_iter()
        .filter(|doc| doc.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].job_id, "gone");
    let failure = failed[0].failure.as_ref().expect("its failure");
    assert_eq!(failure.class, "fetch_status");
    assert!(failure.reason.contains("404"), "{}", failure.reason);
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

    // The worker's own /metrics counts what it did: a delivery counts once
    // it is acknowledged, after the broker confirms its dead letter, which
    // is visible before that: on a loaded CI machine the confirms of a
    // quorum queue once lagged the letters by over 10 s.
    let expected = [
        r#"lambdex_jobs_total{outcome="stored"} 8"#,
        r#"lambdex_jobs_total{outcome="dead_lettered"} 3"#,
        r#"lambdex_invocations_total{function="face-crop"}"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .expect("the worker serves /metrics")
            .text()
            .await
            .expect("text");
        let missing = expected.iter().find(|line| !text.contains(*line));
        match missing {
            None => break,
            Some(line) if Instant::now() > deadline => {
                panic!("no {line} in\n{text}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_function_always_fails_is_retried_with_delays_then_dead_lettered() {
    let mut world = World::new(
        LAMBDEX,
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
    world.publish(world.jobs(1)).await;
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
    // One line per failure, oldest first.
    let history = amqp::header_texts(Some(headers), HISTORY_HEADER);
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history.iter().all(|line| line.contains("model_failure: ")),
        "{history:?}"
    );
    assert_eq!(
        Job::from_slice(body).expect("the job, as sent").job_id,
        "job-0"
    );
    assert!(world.documents().await.is_empty());
    world.finish().await;
}

/// One worker (prefetch 4) busy with `jobs` jobs, `stored` of them stored.
async fn worker_mid_batch(jobs: usize, stored: usize) -> World {
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[("LAMBDEX__QUEUE__PREFETCH", "4")],
    )
    .await;
    world.start_worker();
    world.publish(world.jobs(jobs)).await;
    world.await_documents(stored).await;
    world
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_batch_and_restarted_finishes_every_job_once() {
    let mut world = worker_mid_batch(24, 3).await;
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
    let mut world = worker_mid_batch(24, 2).await;
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
    let queues = [
        topology.jobs_queue.as_str(),
        topology.priority_queue.as_str(),
    ];
    let ready = world
        .settled_ready_in(&queues, 24usize.saturating_sub(stored))
        .await;
    assert!(stored < 24, "the signal came too late to test anything");
    assert_eq!(stored + ready, 24, "{stored} stored, {ready} ready");

    world.start_worker();
    let docs = world.await_documents(24).await;
    assert_one_document_per_job(&docs, 24);
    world.finish().await;
}

/// The broker's connections named `name` (the client's `connection_name`
/// property; RabbitMQ 3.10 has no `user_provided_name` column), by pid as
/// `close_connection` takes it (the table format's; the JSON's is not).
fn connections_named(name: &str) -> Vec<String> {
    let listed = services::rabbitmqctl(&["list_connections", "pid", "client_properties", "-q"]);
    let property = format!("{{\"connection_name\",\"{name}\"}}");
    listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(pid, properties)| pid.starts_with('<') && properties.contains(&property))
        .map(|(pid, _)| pid.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_closed_by_the_broker_is_reopened_and_the_work_finishes() {
    let mut world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(3)).await;
    world.await_documents(3).await;

    let name = format!("lambdex worker {}", world.config.queue.prefix);
    let pids = connections_named(&name);
    assert_eq!(pids.len(), 1, "the worker's connection, {name:?}");
    let closed = Command::new("rabbitmqctl")
        .args(["close_connection", &pids[0], "closed by the test"])
        .status()
        .expect("rabbitmqctl runs");
    assert!(closed.success());

    let mut more = world.jobs(6);
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
    let mut world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(2)).await;
    world.await_documents(2).await;

    world.elastic.stop();
    let mut backlog = world.jobs(8);
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
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[("LAMBDEX__QUEUE__PREFETCH", "2")],
    )
    .await;
    for _ in 0..3 {
        world.start_worker();
    }
    world.publish(world.jobs(30)).await;
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
    let mut doc = lambdex::pipeline::aggregate::failed(
        &job,
        lambdex_proto::Failure::new(lambdex_proto::FailureClass::FetchStatus, "gone", false),
        lambdex::pipeline::aggregate::Timings::default(),
    );
    doc.status = status;
    doc.failure = None;
    doc
}

/// A `kind` server, a sink configuration for a new index `prefix-…` on it
/// (quick flushes and retries) and the index template installed.
async fn sink_server(kind: Elastic, prefix: &str) -> (ElasticServer, ElasticsearchConfig) {
    let server = tokio::task::spawn_blocking(move || ElasticServer::start(kind))
        .await
        .expect("the server starts");
    let mut config = Config::default().elasticsearch;
    config.url = server.url().into();
    config.index = format!("{prefix}-{:08x}", fastrand::u32(..));
    config.flush_interval = Duration::from_millis(20);
    config.retry_max_delay = Duration::from_millis(200);
    let client = sink::client(&config).expect("a client");
    sink::install_template(&client, &config)
        .await
        .unwrap_or_else(|error| panic!("{kind:?}: {error}\n{}", server.log()));
    (server, config)
}

async fn sink_stores_refuses_and_keeps_the_newer_document(kind: Elastic) {
    let (server, config) = sink_server(kind, "sink").await;
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

/// Stores `count` documents whose metadata keys are all different, each
/// document its own keys: what producers' free-form metadata does to an
/// index over time.
async fn store_many_metadata_keys(sink: &Sink, count: usize) {
    let writes = (0..count).map(|i| {
        let mut doc = document(&format!("m{i}"), Status::NoFaces);
        for k in 0..20 {
            doc.metadata
                .insert(format!("key-{i}-{k}"), format!("value {k}"));
        }
        sink.write(doc)
    });
    for write in futures::future::join_all(writes).await {
        write.expect("a document with its own metadata keys is stored");
    }
}

async fn metadata_keys_cannot_grow_the_mapping(kind: Elastic) {
    let (server, config) = sink_server(kind, "meta").await;
    let (sink, task) = Sink::start(&config).expect("the sink starts");
    // 1,200 keys in all: past the 1,000 fields an index takes by default
    // were each key a field of its own.
    store_many_metadata_keys(&sink, 60).await;
    let mapping: serde_json::Value =
        reqwest::get(format!("{}/{}/_mapping", server.url(), config.index))
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
    let text = mapping.to_string();
    assert!(
        !text.contains("key-0-0"),
        "{kind:?}: a key became a field: {text}"
    );
    drop(sink);
    task.await.expect("the sink ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_keys_cannot_grow_the_mapping_on_noida_db() {
    metadata_keys_cannot_grow_the_mapping(Elastic::Noida).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_keys_cannot_grow_the_mapping_on_osmem_server() {
    metadata_keys_cannot_grow_the_mapping(Elastic::Osmem).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_refused_whole_is_split_until_only_its_culprit_is_rejected() {
    let server = tokio::task::spawn_blocking(|| ElasticServer::start(Elastic::Noida))
        .await
        .expect("the server starts");
    let proxy = ElasticProxy::start(&server.url()).await.expect("starts");
    let mut config = Config::default().elasticsearch;
    config.url = proxy.url().into();
    config.index = format!("split-{:08x}", fastrand::u32(..));
    // One bulk request for all eight.
    config.flush_interval = Duration::from_millis(300);
    config.retry_max_delay = Duration::from_millis(200);
    let (sink, task) = Sink::start(&config).expect("the sink starts");
    proxy.refuse_bulks_holding(Some("culprit"));
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let id = if i == 5 {
                "culprit".to_owned()
            } else {
                format!("innocent-{i}")
            };
            sink.write(document(&id, Status::NoFaces))
        })
        .collect();
    let results = futures::future::join_all(writes).await;
    for (i, result) in results.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(result, Err(SinkError::Rejected { status: 400, .. })),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "innocent-{i}: {result:?}");
        }
    }
    drop(sink);
    task.await.expect("the sink ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_block_the_sink_without_retrying_until_they_pass() {
    let server = tokio::task::spawn_blocking(|| ElasticServer::start(Elastic::Noida))
        .await
        .expect("the server starts");
    let proxy = ElasticProxy::start(&server.url()).await.expect("starts");
    let mut config = Config::default().elasticsearch;
    config.url = proxy.url().into();
    config.index = format!("auth-{:08x}", fastrand::u32(..));
    config.flush_interval = Duration::from_millis(20);
    let (sink, task) = Sink::start(&config).expect("the sink starts");
    proxy.set(ProxyMode::Unauthorized);
    let started = Instant::now();
    let error = sink
        .write(document("a", Status::Ok))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, SinkError::Unauthorized { status: 401, .. }),
        "{error}"
    );
    // Answered at once, not after a storm of retries.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(sink.blocked().is_some_and(|(why, _)| why.contains("401")));
    proxy.set(ProxyMode::Pass);
    sink.write(document("a", Status::Ok)).await.expect("stored");
    assert!(sink.blocked().is_none());
    drop(sink);
    task.await.expect("the sink ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_over_the_limits_is_dead_lettered_once_and_the_connection_stays_up() {
    let mut world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    world.start_worker();
    let huge = Job::new(
        "huge-url",
        world
            .images
            .url(&format!("astronaut.png?{}", "a".repeat(100 * 1024))),
    );
    world.publish(vec![huge]).await;
    world.publish(world.jobs(2)).await;
    world.await_documents(2).await;
    let letters = world.take_dead_letters(1).await;
    let (headers, _) = &letters[0];
    assert_eq!(header_text(headers, REASON_HEADER), "invalid_message");
    let error = header_text(headers, ERROR_HEADER);
    assert!(error.contains("jobs.max_"), "{error}");
    assert!(error.len() < 1024, "{} bytes", error.len());
    let logs = world.logs();
    assert!(!logs.contains("lost the connection"), "{logs}");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_delivered_too_often_is_dead_lettered_before_it_runs_again() {
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[("LAMBDEX__QUEUE__DELIVERY_LIMIT", "3")],
    )
    .await;
    world.start_worker();
    let (connection, channel) = world.channel().await;
    let job = serde_json::to_vec(&world.jobs(1)[0]).expect("a job serialises");
    let mut headers = lapin::types::FieldTable::default();
    // As a quorum queue counts the deliveries of a job that killed its
    // workers three times.
    amqp::set_number(&mut headers, "x-delivery-count", 3);
    amqp::publish(
        &channel,
        &world.topology().jobs_exchange,
        "batch",
        &job,
        headers,
    )
    .await
    .expect("published");
    let _ = connection.close(200, "done").await;
    let letters = world.take_dead_letters(1).await;
    assert_eq!(header_text(&letters[0].0, REASON_HEADER), "delivery_limit");
    assert!(world.documents().await.is_empty());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_priority_job_comes_back_on_the_priority_lane() {
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[
            ("LAMBDEX__MODELS__AGE__FUNCTION", "always-fails"),
            ("LAMBDEX__RETRY__MAX_ATTEMPTS", "1"),
            ("LAMBDEX__QUEUE__REQUEUE_FIRST_DELAY", "3s"),
        ],
    )
    .await;
    world.start_worker();
    let mut job = world.jobs(1).remove(0);
    job.priority = 3;
    world.publish(vec![job]).await;
    let topology = world.topology();
    let retry = &topology.retry_queues[0].0;
    assert_eq!(world.settled_ready_in(&[retry], 1).await, 1, "requeued");
    world.kill_workers();
    // Its trip over, it is back where it came from.
    let back = world.settled_ready_in(&[&topology.priority_queue], 1).await;
    assert_eq!(back, 1, "on the priority lane");
    assert_eq!(world.ready_in(&topology.jobs_queue).await, 0);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_whose_consumer_the_broker_cancels_is_consumed_again() {
    let mut world = World::new(LAMBDEX, Elastic::Noida, &[]).await;
    world.start_worker();
    world.publish(world.jobs(1)).await;
    world.await_documents(1).await;
    // An operator deleting the priority queue: the broker cancels the
    // worker's consumer of it.
    let topology = world.topology();
    tokio::task::block_in_place(|| {
        services::rabbitmqctl(&["delete_queue", &topology.priority_queue])
    });
    // The worker hears of it (before the queue is declared again: a queue
    // deleted and declared at once leaves RabbitMQ 3.10 no time to tell
    // its consumers).
    let started = Instant::now();
    while !world.logs().contains("the broker cancelled a consumer") {
        assert!(started.elapsed() < PATIENCE, "{}", world.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A priority job after it (publishing declares the queue again): the
    // worker must consume the lane anew to see it.
    let mut urgent = Job::new("urgent", world.images.url("astronaut.png?urgent"));
    urgent.priority = 5;
    urgent
        .metadata
        .insert("post_id".to_owned(), "urgent".to_owned());
    world.publish(vec![urgent]).await;
    let docs = world.await_documents(2).await;
    assert!(
        docs.iter().any(|doc| doc.job_id == "urgent"),
        "{}",
        world.logs()
    );
    assert!(
        world.logs().contains("cancelled a consumer"),
        "{}",
        world.logs()
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_elasticsearch_refuses_the_worker_it_pauses_reports_unready_and_loses_nothing() {
    let metrics = format!("127.0.0.1:{}", services::free_port());
    let mut world = World::new(
        LAMBDEX,
        Elastic::Noida,
        &[("LAMBDEX__METRICS__LISTEN", &metrics)],
    )
    .await;
    let proxy = ElasticProxy::start(&world.elastic.url())
        .await
        .expect("starts");
    world.env.insert(
        "LAMBDEX__ELASTICSEARCH__URL".to_owned(),
        proxy.url().to_owned(),
    );
    world.start_worker();
    world.publish(world.jobs(2)).await;
    world.await_documents(2).await;
    proxy.set(ProxyMode::Unauthorized);
    world.publish(world.jobs(6)).await;
    let readyz = format!("http://{metrics}/readyz");
    let started = Instant::now();
    loop {
        let answer = reqwest::get(&readyz).await.expect("answers");
        if answer.status() == 503 {
            let body = answer.text().await.expect("a body");
            assert!(body.contains("Elasticsearch refuses"), "{body}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{}", world.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(ProxyMode::Pass);
    let docs = world.await_documents(6).await;
    assert_one_document_per_job(&docs, 6);
    assert_eq!(world.ready_in(&world.topology().dead_queue).await, 0);
    let ready = reqwest::get(&readyz).await.expect("answers");
    assert_eq!(ready.status(), 200);
    world.finish().await;
}
