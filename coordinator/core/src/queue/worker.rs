//! `lambdex worker`: jobs from RabbitMQ through the pipeline into
//! Elasticsearch, at least once.
//!
//! Every delivery ends in exactly one of four ways, and is acknowledged
//! only after that end is confirmed:
//! - **stored**: the document is in Elasticsearch (the sink answered);
//! - **requeued**: the job failed in a way that may pass (a throttled or
//!   crashing function, a flaky download) and has trips left: it is
//!   published, confirmed, to the next retry queue, whose TTL sends it back
//!   on its own lane;
//! - **dead-lettered**: an invalid message, a job that failed for good, one
//!   out of trips or delivered too often: published, confirmed, to the
//!   dead-letter queue with headers saying why;
//! - **released**: the worker cannot settle it now (the sink is down, the
//!   job was cut short): nacked, so the broker hands it out again at once.
//!
//! A failure that is not the job's — a function whose breaker is open,
//! throttling that outlasts the retries, an index refusing the worker's
//! credentials — is an outage: the job is requeued without spending a trip
//! (for up to `queue.outage_patience`), and the worker stops taking jobs
//! until the outage may be over, then lets one job through as a probe.
//!
//! Anything else — the connection lost, the worker killed, shut down past
//! its deadline — leaves the delivery unacknowledged and the broker hands
//! it out again; the document id being the job id, a second run replaces
//! the first's document instead of adding one. The jobs of a lost
//! connection are cancelled: their deliveries are already on their way to
//! another consumer.
//!
//! Connection, channel or consumer loss: reconnect with backoff,
//! redeclare, re-apply the prefetch, consume again. Several workers are
//! competing consumers on the same queues.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt as _, Stream, StreamExt as _};
use lambdex_proto::{Failure, FailureClass, Job, PredictionDoc, Status};
use lapin::acker::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::aggregate::{self, Timings};
use crate::queue::amqp::{self, AmqpError};
use crate::queue::headers::{
    RETRY_QUEUE_HEADER, attempts_of, count_outage, delivery_count, failure_headers,
};
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
    /// Deliveries given back for the broker to hand out again.
    pub released: AtomicU64,
    /// Requeues for outages (no trip spent).
    pub outages: AtomicU64,
    /// Jobs whose task panicked (their deliveries given back).
    pub panicked: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerCounts {
    pub received: u64,
    pub stored: u64,
    pub requeued: u64,
    pub dead_lettered: u64,
    pub released: u64,
    pub outages: u64,
    pub panicked: u64,
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
            outages: get(&self.outages),
            panicked: get(&self.panicked),
        }
    }
}

/// Whether the worker is taking jobs, for `/readyz`.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    connected: AtomicBool,
    paused: Mutex<Option<String>>,
}

impl WorkerHealth {
    /// Ready, or why not: not connected to RabbitMQ, or paused for an
    /// outage.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err("not connected to RabbitMQ".to_owned());
        }
        match &*self.paused.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(format!("paused: {reason}")),
            None => Ok(()),
        }
    }

    fn set_paused(&self, reason: Option<String>) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = reason;
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
    config: Config,
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
    /// Cancelled when the session is lost: its jobs stop.
    lost: CancellationToken,
}

/// What the consumer stream yields: a delivery, or a lane that ended.
enum Incoming {
    Delivery(Box<Delivery>),
    Failed(lapin::Error),
    LaneEnded(&'static str),
}

#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    health: Arc<WorkerHealth>,
}

impl Worker {
    pub fn new(config: Config, pipeline: Arc<Pipeline>, sink: Sink) -> Self {
        let shared = Arc::new(Shared {
            pipeline,
            sink,
            topology: Topology::new(&config.queue),
            stats: Arc::default(),
            config,
        });
        Self {
            shared,
            health: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Whether it is taking jobs (for `/readyz`).
    pub fn health(&self) -> Arc<WorkerHealth> {
        Arc::clone(&self.health)
    }

    fn queue(&self) -> &crate::config::QueueConfig {
        &self.shared.config.queue
    }

    /// Why the worker should not take jobs now, and when to look again or
    /// let one through as a probe.
    fn outage(&self) -> Option<(String, Instant)> {
        if let Some((function, until)) = self.shared.pipeline.unavailable() {
            return Some((
                format!("the function {function} is unavailable (its circuit breaker is open)"),
                until,
            ));
        }
        self.shared.sink.blocked().map(|(reason, since)| {
            (
                format!("Elasticsearch refuses the worker: {reason}"),
                since + self.queue().outage_check_interval,
            )
        })
    }

    /// Consumes until `shutdown` is cancelled, then lets in-flight jobs
    /// finish within `queue.shutdown_deadline` and closes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut jobs = JoinSet::new();
        // Every job in flight, of this session and of lost ones, holds a
        // permit: at most both lanes' prefetch at once.
        let in_flight = Arc::new(Semaphore::new(2 * usize::from(self.queue().prefetch)));
        let mut reconnects = self.queue().reconnect_delays();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut last_session: Option<Session> = None;
        let mut paused = false;
        'connect: while !shutdown.is_cancelled() {
            if let Some(lost) = last_session.take() {
                lost.lost.cancel();
                let _ = lost.connection.close(200, "reconnecting").await;
            }
            self.health.connected.store(false, Ordering::Relaxed);
            let mut session = match self.open().await {
                Ok(session) => session,
                Err(error) => {
                    let delay = reconnects
                        .next()
                        .unwrap_or(self.queue().reconnect_max_delay);
                    tracing::warn!(%error, ?delay, "cannot reach RabbitMQ; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break 'connect,
                        () = tokio::time::sleep(delay) => continue 'connect,
                    }
                }
            };
            reconnects = self.queue().reconnect_delays();
            let mut deliveries = match self.consume(&mut session).await {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    tracing::warn!(%error, "cannot consume; reconnecting");
                    last_session = Some(session);
                    continue 'connect;
                }
            };
            self.health.connected.store(true, Ordering::Relaxed);
            tracing::info!(queues = ?self.shared.topology.consumed_queues(), "consuming");
            let publisher = session.publisher.clone();
            let lost = session.lost.clone();
            last_session = Some(session);
            let mut permit: Option<OwnedSemaphorePermit> = None;
            loop {
                // While an outage lasts, no job is taken but one probe, once
                // nothing else is in flight and the outage may be over.
                let outage = self.outage();
                let probe_due = match &outage {
                    None => true,
                    Some((_, at)) => jobs.is_empty() && Instant::now() >= *at,
                };
                match (&outage, paused) {
                    (Some((reason, _)), false) => {
                        tracing::warn!(%reason, "pausing: no new jobs until the outage is over");
                        metrics::worker_paused(true);
                        self.health.set_paused(Some(reason.clone()));
                        paused = true;
                    }
                    (None, true) => {
                        tracing::info!("resuming: the outage is over");
                        metrics::worker_paused(false);
                        self.health.set_paused(None);
                        paused = false;
                    }
                    _ => {}
                }
                let wake = outage.as_ref().map_or_else(
                    || Instant::now() + PROGRESS_EVERY,
                    |(_, at)| (*at).min(Instant::now() + self.queue().outage_check_interval),
                );
                let take = probe_due && permit.is_some();
                tokio::select! {
                    () = shutdown.cancelled() => break 'connect,
                    Some(joined) = jobs.join_next(), if !jobs.is_empty() => {
                        if let Err(error) = joined
                            && error.is_panic()
                        {
                            // Caught in the task; a panic here is a bug of
                            // the catching itself.
                            tracing::error!(%error, "a job's task panicked");
                        }
                    }
                    _ = progress.tick() => {
                        tracing::info!(counts = ?self.shared.stats.counts(), in_flight = jobs.len(), paused, "progress");
                    }
                    () = tokio::time::sleep_until(wake), if outage.is_some() => {}
                    acquired = Arc::clone(&in_flight).acquire_owned(), if permit.is_none() => {
                        permit = Some(acquired.expect("the in-flight semaphore is never closed"));
                    }
                    incoming = deliveries.next(), if take => match incoming {
                        Some(Incoming::Delivery(delivery)) => {
                            self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
                            let held = permit.take().expect("taken only with a permit");
                            jobs.spawn(guarded(
                                Arc::clone(&self.shared),
                                publisher.clone(),
                                *delivery,
                                lost.clone(),
                                held,
                            ));
                        }
                        Some(Incoming::Failed(error)) => {
                            tracing::warn!(%error, "lost the connection to RabbitMQ; reconnecting");
                            continue 'connect;
                        }
                        Some(Incoming::LaneEnded(queue)) => {
                            tracing::warn!(queue, "the broker cancelled a consumer; reconnecting");
                            continue 'connect;
                        }
                        None => {
                            tracing::warn!("the consumers ended; reconnecting");
                            continue 'connect;
                        }
                    },
                }
            }
        }
        // Stop taking deliveries; what is prefetched but not started goes
        // back to the queue when the connection closes.
        tracing::info!(in_flight = jobs.len(), "shutting down");
        self.health.connected.store(false, Ordering::Relaxed);
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
        let drained = tokio::time::timeout(self.queue().shutdown_deadline, async {
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
        let name = format!("lambdex worker {}", self.queue().prefix);
        let connection = amqp::connect(self.queue(), &name).await?;
        let publisher = amqp::confirmed_channel(&connection).await?;
        self.shared.topology.declare(&publisher).await?;
        let consumer = connection.create_channel().await?;
        // Per consumer: each lane holds up to `prefetch` unacknowledged.
        consumer
            .basic_qos(self.queue().prefetch, BasicQosOptions::default())
            .await?;
        Ok(Session {
            connection,
            publisher,
            consumer,
            consumer_tags: Vec::new(),
            lost: CancellationToken::new(),
        })
    }

    /// Both lanes' deliveries as one stream, the priority lane polled
    /// first; a lane whose consumer ends (the broker cancelled it, its
    /// queue was deleted) says so instead of falling silent.
    async fn consume(
        &self,
        session: &mut Session,
    ) -> Result<impl Stream<Item = Incoming> + Unpin + use<>, AmqpError> {
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
        let priority_consumer = consume(priority.to_owned()).await?;
        let batch_consumer = consume(batch.to_owned()).await?;
        session.consumer_tags = vec![
            priority_consumer.tag().to_string(),
            batch_consumer.tag().to_string(),
        ];
        let lane = |consumer: lapin::Consumer, name: &'static str| {
            consumer
                .map(|delivery| match delivery {
                    Ok(delivery) => Incoming::Delivery(Box::new(delivery)),
                    Err(error) => Incoming::Failed(error),
                })
                .chain(futures::stream::once(std::future::ready(
                    Incoming::LaneEnded(name),
                )))
        };
        Ok(futures::stream::select_with_strategy(
            lane(priority_consumer, "priority"),
            lane(batch_consumer, "batch"),
            |_: &mut ()| futures::stream::PollNext::Left,
        ))
    }
}

/// How a delivery ends.
#[derive(Debug)]
enum Settlement {
    Stored,
    /// To the retry queue `queue` on `lane`, for a failure that may pass;
    /// an outage spends no trip.
    Requeue {
        queue: String,
        lane: &'static str,
        failure: Failure,
        outage: bool,
    },
    /// To the dead-letter queue.
    Dead(Failure),
    /// Nacked: the broker hands it out again.
    Release,
}

/// [`handle`] with what a job's task must always do: give its delivery
/// back if the job panics, stop when its session is lost, and hold its
/// in-flight permit to the end.
async fn guarded(
    shared: Arc<Shared>,
    publisher: Channel,
    delivery: Delivery,
    lost: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let acker = delivery.acker.clone();
    let tag = delivery.delivery_tag;
    let stats = Arc::clone(&shared.stats);
    let job = handle(shared, publisher, delivery);
    supervised(job, &acker, tag, &stats, &lost).await;
}

/// How a job's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Finished,
    /// Its connection was lost: another consumer has the delivery.
    Dropped,
    /// It panicked: logged, counted, its delivery given back.
    Panicked,
}

/// Runs `job` until it ends or its session is `lost`; a panic in it is
/// caught, logged and counted, and the delivery (`acker`) nacked.
async fn supervised(
    job: impl Future<Output = ()>,
    acker: &Acker,
    tag: u64,
    stats: &WorkerStats,
    lost: &CancellationToken,
) -> Ended {
    let job = AssertUnwindSafe(job).catch_unwind();
    tokio::select! {
        () = lost.cancelled() => {
            tracing::debug!(tag, "the connection was lost; the job is dropped");
            Ended::Dropped
        }
        outcome = job => match outcome {
            Ok(()) => Ended::Finished,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(tag, panic = %message, "a job panicked; its delivery goes back");
                stats.panicked.fetch_add(1, Ordering::Relaxed);
                metrics::jobs("panicked", 1);
                nack(acker, stats, tag).await;
                Ended::Panicked
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, publisher: Channel, delivery: Delivery) {
    let attempts = attempts_of(&delivery);
    let deliveries = delivery_count(&delivery);
    let limit = i64::from(shared.config.queue.delivery_limit);
    // The failed document of a job that fails, kept to record its outcome
    // if it is dead-lettered.
    let (settlement, failed_doc) = match Job::from_slice_within(&delivery.data, &shared.config.jobs)
    {
        Err(error) => (
            Settlement::Dead(Failure::new(
                FailureClass::InvalidMessage,
                error.to_string(),
                false,
            )),
            None,
        ),
        Ok(job) if deliveries >= limit => {
            let failure = Failure::new(
                FailureClass::DeliveryLimit,
                format!(
                    "delivered {} times without an end, queue.delivery_limit is {limit}",
                    deliveries + 1
                ),
                false,
            );
            let doc = aggregate::failed(&job, failure.clone(), Timings::default());
            (Settlement::Dead(failure), Some(doc))
        }
        Ok(job) => {
            let doc = shared.pipeline.process(&job).await;
            let lane = Topology::routing_key(job.priority);
            let failed_doc = (doc.status == Status::Failed).then(|| doc.clone());
            (
                settlement_of(&shared, doc, attempts, lane).await,
                failed_doc,
            )
        }
    };
    let tag = delivery.delivery_tag;
    let settled = match &settlement {
        Settlement::Stored => Ok(()),
        Settlement::Release => {
            nack(&delivery.acker, &shared.stats, tag).await;
            return;
        }
        Settlement::Requeue {
            queue,
            lane,
            failure,
            outage,
        } => {
            // An outage is not the job's failure: its attempts stay.
            let spent = if *outage { attempts } else { attempts + 1 };
            let mut headers = failure_headers(&delivery, spent, failure);
            if *outage {
                let since = count_outage(&mut headers, &delivery);
                let patience = shared.config.queue.outage_patience;
                if Utc::now()
                    .signed_duration_since(since)
                    .to_std()
                    .unwrap_or_default()
                    > patience
                {
                    let reason = format!(
                        "{} (still unavailable after queue.outage_patience, {patience:?})",
                        failure.reason
                    );
                    let given_up = Failure::new(failure.class.clone(), reason, true);
                    let dead =
                        dead_letter(&shared, &publisher, &delivery, failed_doc, spent, &given_up);
                    if let Some(published) = dead.await {
                        settle(&shared, &delivery, published, Counted::Dead).await;
                    }
                    return;
                }
            }
            amqp::set_text(&mut headers, RETRY_QUEUE_HEADER, queue);
            publish_within(
                &shared,
                &publisher,
                &shared.topology.retry_exchange,
                lane,
                &delivery.data,
                headers,
            )
            .await
        }
        Settlement::Dead(failure) => {
            let spent = attempts.saturating_add(1);
            match dead_letter(&shared, &publisher, &delivery, failed_doc, spent, failure).await {
                Some(published) => published,
                None => return,
            }
        }
    };
    let counted = match settlement {
        Settlement::Stored => Counted::Stored,
        Settlement::Requeue { outage: true, .. } => Counted::Outage,
        Settlement::Requeue { .. } => Counted::Requeued,
        Settlement::Dead(_) => Counted::Dead,
        Settlement::Release => unreachable!("returned above"),
    };
    settle(&shared, &delivery, settled, counted).await;
}

/// Dead-letters a delivery after `attempts` failures: stores the job's
/// failed document first (when it has one), then publishes the letter.
/// `None` when the document could not be stored and the delivery was
/// given back instead.
async fn dead_letter(
    shared: &Shared,
    publisher: &Channel,
    delivery: &Delivery,
    failed_doc: Option<PredictionDoc>,
    attempts: i64,
    failure: &Failure,
) -> Option<Result<(), AmqpError>> {
    if let Some(doc) = failed_doc
        && !record_failure(shared, doc, failure).await
    {
        nack(&delivery.acker, &shared.stats, delivery.delivery_tag).await;
        return None;
    }
    let headers = failure_headers(delivery, attempts, failure);
    let dead = &shared.topology.dead_queue;
    Some(publish_within(shared, publisher, "", dead, &delivery.data, headers).await)
}

/// Publishes a job's requeue or dead letter (`amqp::publish`), waiting for
/// the broker's confirm at most `queue.confirm_timeout`.
async fn publish_within(
    shared: &Shared,
    publisher: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    headers: FieldTable,
) -> Result<(), AmqpError> {
    let limit = shared.config.queue.confirm_timeout;
    let published = amqp::publish(publisher, exchange, routing_key, payload, headers);
    tokio::time::timeout(limit, published)
        .await
        .unwrap_or_else(|_| {
            Err(AmqpError::ConfirmTimeout(
                format!("{exchange}/{routing_key}"),
                limit,
            ))
        })
}

/// What a settled delivery counts as.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Stored,
    Requeued,
    Outage,
    Dead,
}

/// Acknowledges the delivery once its end is confirmed (`settled`), and
/// counts it; gives it back when the end could not be published.
async fn settle(
    shared: &Shared,
    delivery: &Delivery,
    settled: Result<(), AmqpError>,
    counted: Counted,
) {
    let tag = delivery.delivery_tag;
    if let Err(error) = settled {
        tracing::warn!(%error, tag, "cannot publish the job's requeue or dead letter; it goes back");
        nack(&delivery.acker, &shared.stats, tag).await;
        return;
    }
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died with the delivery; the broker redelivers it.
        tracing::warn!(%error, tag, "cannot acknowledge; the job will be redelivered");
        count_released(&shared.stats);
        return;
    }
    let stats = &shared.stats;
    let (counter, name) = match counted {
        Counted::Stored => {
            tracing::debug!(tag, "stored");
            (&stats.stored, "stored")
        }
        Counted::Requeued => (&stats.requeued, "requeued"),
        Counted::Outage => (&stats.outages, "outage"),
        Counted::Dead => (&stats.dead_lettered, "dead_lettered"),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    metrics::jobs(name, 1);
}

/// Gives a delivery back to the broker now (nack with requeue); if even
/// that fails, its channel is gone and the broker has it back anyway.
async fn nack(acker: &Acker, stats: &WorkerStats, tag: u64) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = acker.nack(requeue).await {
        tracing::debug!(%error, tag, "cannot nack; the channel is gone, and the delivery with it");
    }
    count_released(stats);
}

fn count_released(stats: &WorkerStats) {
    stats.released.fetch_add(1, Ordering::Relaxed);
    metrics::jobs("released", 1);
}

/// Whether a failure is an outage rather than the job's own: the function
/// was refused or down, not the job's image.
fn is_outage(failure: &Failure, functions_down: bool) -> bool {
    match failure.class {
        FailureClass::CircuitOpen | FailureClass::Throttled => true,
        // Any transient failure of a call while a function is down.
        FailureClass::InvokeFailed
        | FailureClass::InvokeTimeout
        | FailureClass::LambdaServiceError
        | FailureClass::JobTimeout
        | FailureClass::ModelFailure
        | FailureClass::Internal
        | FailureClass::Other(_) => functions_down && failure.retryable,
        _ => false,
    }
}

/// Stores a job's failed document (with `failure`, the reason it is
/// dead-lettered) before its dead letter is published, so its outcome can
/// be looked up by id; a later success replaces it (see
/// [`crate::sink::version_of`]). False when the sink cannot store it now:
/// the job goes back, as a result that cannot be stored does. A document
/// refused for good is logged and the job dead-lettered all the same: the
/// dead letter is the record that counts.
async fn record_failure(shared: &Shared, mut doc: PredictionDoc, failure: &Failure) -> bool {
    doc.status = Status::Failed;
    doc.failure = Some(failure.clone());
    let job_id = doc.job_id.clone();
    match shared.sink.write(doc).await {
        Ok(()) => true,
        Err(SinkError::Rejected { status, reason }) => {
            tracing::warn!(%job_id, status, %reason, "the failed document was refused; the job is dead-lettered all the same");
            true
        }
        Err(error) => {
            tracing::warn!(%error, %job_id, "the failed document was not stored; the job goes back");
            false
        }
    }
}

/// Stored, requeued, dead or released, for a processed job's document.
async fn settlement_of(
    shared: &Shared,
    doc: PredictionDoc,
    attempts: i64,
    lane: &'static str,
) -> Settlement {
    if doc.status == Status::Failed {
        let failure = doc.failure.unwrap_or_else(|| {
            Failure::new(FailureClass::Internal, "failed without a reason", false)
        });
        let outage = is_outage(&failure, shared.pipeline.unavailable().is_some());
        let trip = if outage {
            0
        } else {
            usize::try_from(attempts).unwrap_or(usize::MAX)
        };
        return match shared.topology.retry_queues.get(trip) {
            Some((queue, delay)) if failure.retryable => {
                tracing::info!(job_id = %doc.job_id, class = %failure.class, ?delay, outage, "requeued");
                Settlement::Requeue {
                    queue: queue.clone(),
                    lane,
                    failure,
                    outage,
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
            tracing::warn!(%error, "the document was not stored; the job goes back");
            Settlement::Release
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_is_counted_and_its_delivery_given_back() {
        let stats = WorkerStats::default();
        let lost = CancellationToken::new();
        let acker = Acker::mock();
        let ended = supervised(async { panic!("a bug in a job") }, &acker, 7, &stats, &lost).await;
        assert_eq!(ended, Ended::Panicked);
        let counts = stats.counts();
        assert_eq!((counts.panicked, counts.released), (1, 1));
    }

    #[tokio::test]
    async fn a_job_whose_connection_is_lost_stops() {
        let stats = WorkerStats::default();
        let lost = CancellationToken::new();
        lost.cancel();
        let ended = supervised(std::future::pending(), &Acker::mock(), 7, &stats, &lost).await;
        assert_eq!(ended, Ended::Dropped);
        let finished = supervised(
            async {},
            &Acker::mock(),
            8,
            &stats,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(finished, Ended::Finished);
    }

    #[test]
    fn outages_are_refusals_or_any_transient_failure_while_a_function_is_down() {
        let failure = |class, retryable| Failure::new(class, "r", retryable);
        assert!(is_outage(&failure(FailureClass::CircuitOpen, true), false));
        assert!(is_outage(&failure(FailureClass::Throttled, true), false));
        assert!(!is_outage(
            &failure(FailureClass::InvokeFailed, true),
            false
        ));
        assert!(is_outage(&failure(FailureClass::InvokeFailed, true), true));
        let crashed = FailureClass::Other("runtime_exit_error".to_owned());
        assert!(is_outage(&failure(crashed, true), true));
        // The job's own: never an outage.
        assert!(!is_outage(&failure(FailureClass::FetchStatus, true), true));
        assert!(!is_outage(
            &failure(FailureClass::InvalidImage, false),
            true
        ));
        assert!(!is_outage(
            &failure(FailureClass::ModelFailure, false),
            true
        ));
    }
}
