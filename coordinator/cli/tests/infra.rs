//! What `infra/` deploys is what the code declares: the committed RabbitMQ
//! definitions import into a real broker, and the worker's own declaration
//! then finds the very same objects (a queue declared with other arguments
//! would fail with PRECONDITION_FAILED).

use std::process::Command;

use lambdex::config::QueueConfig;
use lambdex::queue::amqp;
use lambdex::queue::topology::{BATCH_KEY, PRIORITY_KEY, Topology};
use lambdex_tests::services::{self, RABBITMQ_URL, rabbitmqctl};
use lapin::types::FieldTable;
use serde_json::Value;

/// A vhost of its own, deleted when dropped.
struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_committed_definitions_import_and_match_what_the_worker_declares() {
    services::ensure_rabbitmq();
    let vhost = Vhost(format!("lambdex-test-{:08x}", fastrand::u32(..)));
    rabbitmqctl(&["add_vhost", &vhost.0]);
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);

    // The committed file, moved to the test's vhost.
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/rabbitmq/definitions.json"
    ))
    .expect("infra/rabbitmq/definitions.json");
    let mut definitions: Value = serde_json::from_str(&committed).expect("JSON");
    for kind in ["exchanges", "queues", "bindings"] {
        for object in definitions[kind].as_array_mut().expect("a list") {
            object["vhost"] = Value::from(vhost.0.clone());
        }
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("definitions.json");
    std::fs::write(&file, definitions.to_string()).expect("written");
    rabbitmqctl(&["import_definitions", file.to_str().expect("UTF-8")]);

    let topology = Topology::new(&QueueConfig::default());
    let listed: Vec<Value> = serde_json::from_str(&rabbitmqctl(&[
        "list_queues",
        "-p",
        &vhost.0,
        "name",
        "type",
        "--formatter",
        "json",
        "-q",
    ]))
    .expect("JSON");
    let mut names: Vec<&str> = listed
        .iter()
        .map(|queue| queue["name"].as_str().expect("a name"))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = [
        topology.jobs_queue.as_str(),
        topology.priority_queue.as_str(),
        topology.dead_queue.as_str(),
    ]
    .into_iter()
    .chain(topology.retry_queues.iter().map(|(name, _)| name.as_str()))
    .collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(
        listed.iter().all(|queue| queue["type"] == "quorum"),
        "{listed:?}"
    );

    // The worker's declaration finds the same objects, and the bindings
    // route both lanes.
    let url = RABBITMQ_URL.replace("%2f", &vhost.0);
    let queue = lambdex::config::QueueConfig {
        url: url.into(),
        ..lambdex::config::QueueConfig::default()
    };
    let connection = amqp::connect(&queue, "lambdex infra test")
        .await
        .expect("RabbitMQ answers");
    let channel = amqp::confirmed_channel(&connection)
        .await
        .expect("a channel");
    topology
        .declare(&channel)
        .await
        .expect("the worker declares what was imported without a conflict");
    for key in [BATCH_KEY, PRIORITY_KEY] {
        amqp::publish(
            &channel,
            &topology.jobs_exchange,
            key,
            b"{}",
            FieldTable::default(),
        )
        .await
        .expect("routed to a queue");
    }
    let _ = connection.close(200, "done").await;
}
