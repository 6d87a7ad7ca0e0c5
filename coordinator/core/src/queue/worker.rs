//! `lambdex worker`: jobs from RabbitMQ through the pipeline into
//! Elasticsearch, at least once.
//!
//! Every delivery ends in exactly one of three ways, and is acknowledged
//! only after that end is confirmed:
//! - **stored**: the document is in Elasticsearch (the sink answered);
//! - **requeued**: the job failed in a way that may pass (a throttled or
//!   crashing function, a flaky download) and has trips left: it is
//!   published, confirmed, to the next retry queue, whose TTL sends it back;
//! - **dead-lettered**: an invalid message, a job that failed for good, or
//!   one out of trips: published, confirmed, to the dead-letter queue with
//!   headers saying why.
//!
//! Anything else — the connection lost, the worker killed, shut down past
//! its deadline — leaves the delivery unacknowledged and the broker hands
//! it out again; the document id being the job id, a second run replaces
//! the first's document instead of adding one.
//!
//! Connection or channel loss: reconnect with backoff, redeclare, re-apply
//! the prefetch, consume again. Several workers are competing consumers on
//! the same queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use lambdex_proto::{Failure, FailureClass, Job, PredictionDoc, Status};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics;
use crate::pipeline::Pipeline;
use crate::queue::amqp::{self, AmqpError};
use crate::queue::headers::{ATTEMPTS_HEADER, failure_headers};
use crate::queue::topology::Topology;
use crate::sink::{Sink, SinkError};

/// How often the worker logs its counters.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the worker has done since it started.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub requeued: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Deliveries left unacknowledged for the broker to hand out again.
    pub released: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerCounts {
    pub received: u64,
    pub stored: u64,
    pub requeued: u64,
    pub dead_lettered: u64,
    pub released: u64,
}

impl WorkerStats {
    pub fn counts(&self) -> WorkerCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerCounts {
            received: get(&self.received),
            stored: get(&self.stored),
            requeued: get(&self.requeued),
            dead_lettered: get(&self.dead_lettered),
            released: get(&self.released),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What one job's delivery needs, shared by all of them.
#[derive(Debug)]
struct Shared {
    pipeline: Arc<Pipeline>,
    sink: Sink,
    topology: Topology,
    stats: Arc<WorkerStats>,
}

/// One connection's channels.
#[derive(Debug)]
struct Session {
    connection: Connection,
    /// Publishes (requeues and dead letters), confirmed.
    publisher: Channel,
    consumer: Channel,
    /// The lanes' consumer tags, to cancel them at shutdown.
    consumer_tags: Vec<String>,
}

#[derive(Debug)]
pub struct Worker {
    config: Config,
    shared: Arc<Shared>,
}

impl Worker {
    pub fn new(config: Config, pipeline: Arc<Pipeline>, sink: Sink) -> Self {
        let shared = Arc::new(Shared {
            pipeline,
            sink,
            topology: Topology::new(&config.queue),
            stats: Arc::default(),
        });
        Self { config, shared }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Consumes until `shutdown` is cancelled, then lets in-flight jobs
    /// finish within `queue.shutdown_deadline` and closes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut jobs = JoinSet::new();
        let mut reconnects = self.config.queue.reconnect_delays();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut last_session = None;
        'connect: while !shutdown.is_cancelled() {
            let mut session = match self.open().await {
                Ok(session) => session,
                Err(error) => {
                    let delay = reconnects
                        .next()
                        .unwrap_or(self.config.queue.reconnect_max_delay);
                    tracing::warn!(%error, ?delay, "cannot reach RabbitMQ; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break 'connect,
                        () = tokio::time::sleep(delay) => continue 'connect,
                    }
                }
            };
            reconnects = self.config.queue.reconnect_delays();
            let mut deliveries = match self.consume(&mut session).await {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    tracing::warn!(%error, "cannot consume; reconnecting");
                    continue 'connect;
                }
            };
            tracing::info!(queues = ?self.shared.topology.consumed_queues(), "consuming");
            let publisher = session.publisher.clone();
            last_session = Some(session);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break 'connect,
                    Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                    _ = progress.tick() => {
                        tracing::info!(counts = ?self.shared.stats.counts(), in_flight = jobs.len(), "progress");
                    }
                    delivery = deliveries.next() => match delivery {
                        Some(Ok(delivery)) => {
                            self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
                            jobs.spawn(handle(Arc::clone(&self.shared), publisher.clone(), delivery));
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "lost the connection to RabbitMQ; reconnecting");
                            continue 'connect;
                        }
                        None => {
                            tracing::warn!("the consumer was cancelled; reconnecting");
                            continue 'connect;
                        }
                    },
                }
            }
        }
        // Stop taking deliveries; what is prefetched but not started goes
        // back to the queue when the connection closes.
        tracing::info!(in_flight = jobs.len(), "shutting down");
        if let Some(session) = &last_session {
            for tag in &session.consumer_tags {
                let cancelled = session
                    .consumer
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await;
                if let Err(error) = cancelled {
                    tracing::debug!(%error, tag, "cannot cancel the consumer");
                }
            }
        }
        let drained = tokio::time::timeout(self.config.queue.shutdown_deadline, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let left = jobs.len() as u64;
            tracing::warn!(
                left,
                "shutdown deadline passed; leaving the rest unacknowledged"
            );
            self.shared
                .stats
                .released
                .fetch_add(left, Ordering::Relaxed);
            metrics::jobs("released", left);
            jobs.shutdown().await;
        }
        if let Some(session) = last_session {
            let _ = session
                .connection
                .close(200, "lambdex worker shutting down")
                .await;
        }
        tracing::info!(counts = ?self.shared.stats.counts(), "stopped");
        Ok(())
    }

    async fn open(&self) -> Result<Session, AmqpError> {
        // Named after the queues, for the broker's connection list.
        let name = format!("lambdex worker {}", self.config.queue.prefix);
        let connection = amqp::connect(&self.config.queue.url, &name).await?;
        let publisher = amqp::confirmed_channel(&connection).await?;
        self.shared.topology.declare(&publisher).await?;
        let consumer = connection.create_channel().await?;
        // Per consumer: each lane holds up to `prefetch` unacknowledged.
        consumer
            .basic_qos(self.config.queue.prefetch, BasicQosOptions::default())
            .await?;
        Ok(Session {
            connection,
            publisher,
            consumer,
            consumer_tags: Vec::new(),
        })
    }

    /// Both lanes' deliveries as one stream, the priority lane polled first.
    async fn consume(
        &self,
        session: &mut Session,
    ) -> Result<impl futures::Stream<Item = Result<Delivery, lapin::Error>> + use<>, AmqpError>
    {
        let [priority, batch] = self.shared.topology.consumed_queues();
        let consume = |queue: String| {
            let channel = session.consumer.clone();
            async move {
                channel
                    .basic_consume(
                        &queue,
                        "",
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
        };
        let priority = consume(priority.to_owned()).await?;
        let batch = consume(batch.to_owned()).await?;
        session.consumer_tags = vec![priority.tag().to_string(), batch.tag().to_string()];
        Ok(futures::stream::select_with_strategy(
            priority,
            batch,
            |_: &mut ()| futures::stream::PollNext::Left,
        ))
    }
}

/// How a delivery ends.
#[derive(Debug)]
enum Settlement {
    Stored,
    /// To the retry queue `queue`, for a failure that may pass.
    Requeue {
        queue: String,
        failure: Failure,
    },
    /// To the dead-letter queue.
    Dead(Failure),
    /// Leave it unacknowledged: the broker hands it out again.
    Release,
}

async fn handle(shared: Arc<Shared>, publisher: Channel, delivery: Delivery) {
    let attempts =
        amqp::header_number(delivery.properties.headers().as_ref(), ATTEMPTS_HEADER).unwrap_or(0);
    let settlement = match Job::from_slice(&delivery.data) {
        Err(error) => Settlement::Dead(Failure::new(
            FailureClass::InvalidMessage,
            error.to_string(),
            false,
        )),
        Ok(job) => {
            let doc = shared.pipeline.process(&job).await;
            settlement_of(&shared, doc, attempts).await
        }
    };
    let tag = delivery.delivery_tag;
    let settled = match &settlement {
        Settlement::Stored => Ok(()),
        Settlement::Release => {
            release(&shared);
            return;
        }
        Settlement::Requeue { queue, failure } => {
            let headers = failure_headers(&delivery, attempts + 1, failure);
            amqp::publish(&publisher, "", queue, &delivery.data, headers).await
        }
        Settlement::Dead(failure) => {
            let headers = failure_headers(&delivery, attempts + 1, failure);
            amqp::publish(
                &publisher,
                "",
                &shared.topology.dead_queue,
                &delivery.data,
                headers,
            )
            .await
        }
    };
    if let Err(error) = settled {
        // Not acknowledged: the broker hands the job out again.
        tracing::warn!(%error, tag, "cannot publish the job's requeue or dead letter");
        release(&shared);
        return;
    }
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died with the delivery; the broker redelivers it.
        tracing::warn!(%error, tag, "cannot acknowledge; the job will be redelivered");
        release(&shared);
        return;
    }
    let (counter, name) = match settlement {
        Settlement::Stored => {
            tracing::debug!(tag, "stored");
            (&shared.stats.stored, "stored")
        }
        Settlement::Requeue { .. } => (&shared.stats.requeued, "requeued"),
        Settlement::Dead(_) => (&shared.stats.dead_lettered, "dead_lettered"),
        Settlement::Release => unreachable!("returned above"),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::jobs(name, 1);
}

/// Counts a delivery left for the broker to hand out again.
fn release(shared: &Shared) {
    shared.stats.released.fetch_add(1, Ordering::Relaxed);
    metrics::jobs("released", 1);
}

/// Stored, requeued or dead, for a processed job's document.
async fn settlement_of(shared: &Shared, doc: PredictionDoc, attempts: i64) -> Settlement {
    if doc.status == Status::Failed {
        let failure = doc.failure.unwrap_or_else(|| {
            Failure::new(FailureClass::Internal, "failed without a reason", false)
        });
        let trip = usize::try_from(attempts).unwrap_or(usize::MAX);
        return match shared.topology.retry_queues.get(trip) {
            Some((queue, delay)) if failure.retryable => {
                tracing::info!(job_id = %doc.job_id, class = %failure.class, ?delay, "requeued");
                Settlement::Requeue {
                    queue: queue.clone(),
                    failure,
                }
            }
            _ => Settlement::Dead(failure),
        };
    }
    match shared.sink.write(doc).await {
        Ok(()) => Settlement::Stored,
        Err(SinkError::Rejected { status, reason }) => Settlement::Dead(Failure::new(
            FailureClass::IndexRejected,
            format!("{status}: {reason}"),
            false,
        )),
        Err(error) => {
            tracing::warn!(%error, "the document was not stored");
            Settlement::Release
        }
    }
}
