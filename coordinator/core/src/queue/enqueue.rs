//! Publishing jobs for the workers, each confirmed by the broker: the
//! batch producer behind `lambdex enqueue`, and the admin trigger's
//! `POST /v1/jobs`.
//!
//! A URL's job id is the SHA-256 of the URL (first 32 hex digits), so
//! enqueuing an image twice refreshes one document instead of making two.

use futures::StreamExt as _;
use lambdex_proto::Job;
use lapin::Channel;
use lapin::types::FieldTable;
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::queue::amqp::{self, AmqpError};
use crate::queue::topology::Topology;

/// The job id of a URL job.
pub fn job_id_of(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Publishes `jobs` on a connection of its own (the topology declared),
/// `queue.publish_window` awaiting confirmation at once; calls
/// `on_confirmed` after each.
pub async fn publish(
    config: &Config,
    jobs: Vec<Job>,
    on_confirmed: impl FnMut(),
) -> Result<(), AmqpError> {
    let topology = Topology::new(&config.queue);
    let connection = amqp::connect(&config.queue, "lambdex enqueue").await?;
    let channel = amqp::confirmed_channel(&connection).await?;
    topology.declare(&channel).await?;
    publish_on(
        &channel,
        &topology,
        jobs,
        config.queue.publish_window,
        FieldTable::default(),
        on_confirmed,
    )
    .await?;
    connection.close(200, "done").await?;
    Ok(())
}

/// Publishes `jobs` on `channel` (confirmed), each on its priority's lane
/// with `headers`, up to `window` awaiting confirmation at once; calls
/// `on_confirmed` after each.
pub async fn publish_on(
    channel: &Channel,
    topology: &Topology,
    jobs: Vec<Job>,
    window: usize,
    headers: FieldTable,
    mut on_confirmed: impl FnMut(),
) -> Result<(), AmqpError> {
    let exchange = topology.jobs_exchange.as_str();
    let mut published = futures::stream::iter(jobs)
        .map(|job| {
            let headers = headers.clone();
            async move {
                let payload = serde_json::to_vec(&job).expect("a job serialises");
                amqp::publish(
                    channel,
                    exchange,
                    Topology::routing_key(job.priority),
                    &payload,
                    headers,
                )
                .await
            }
        })
        .buffer_unordered(window.max(1));
    while let Some(result) = published.next().await {
        result?;
        on_confirmed();
    }
    Ok(())
}
