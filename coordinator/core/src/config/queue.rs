//! `[queue]`: RabbitMQ.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, CredentialUrl};

/// RabbitMQ: where the jobs come from, and what the worker does with a
/// job that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The broker (`amqp://` or `amqps://`, user and password included;
    /// never shown with its password).
    pub url: CredentialUrl,
    /// How long opening a connection (TCP, TLS, AMQP handshake) may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a worker waits for the broker to confirm a job's requeue or
    /// dead letter before it gives the job back (which may then publish its
    /// letter twice): a confirm that never comes must not hold the delivery
    /// and its prefetch slot for ever.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// Prefix of every exchange and queue name (see [`crate::queue::topology`]).
    pub prefix: String,
    /// Quorum queues for the jobs and the dead letters (replicated,
    /// poison-message safe); `false` declares classic durable queues, for a
    /// broker without quorum queues.
    pub quorum: bool,
    /// Deliveries a worker holds unacknowledged per lane (basic.qos): its
    /// jobs in flight, and the bound on its memory.
    pub prefetch: u16,
    /// Trips a job whose failure may pass makes through the retry queues
    /// before it is dead-lettered.
    pub requeue_attempts: u32,
    /// The delay before the first trip…
    #[serde(with = "humantime_serde")]
    pub requeue_first_delay: Duration,
    /// …multiplied by this for each later one.
    pub requeue_multiplier: u32,
    /// Reconnection backoff after the connection or a channel is lost.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish; the
    /// rest are left unacknowledged, so the broker hands them to another
    /// worker.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// Publishes `lambdex enqueue` keeps awaiting confirmation at once.
    pub publish_window: usize,
    /// A job delivered this many times (RabbitMQ's `x-delivery-count`, on
    /// quorum queues) is dead-lettered as `delivery_limit` before it runs
    /// again: one that takes its worker down with it stops coming back.
    pub delivery_limit: u32,
    /// How long a job may wait out an outage — a function whose breaker is
    /// open, persistent throttling, an index that refuses the worker's
    /// credentials — requeued without spending its trips, before it is
    /// dead-lettered after all.
    #[serde(with = "humantime_serde")]
    pub outage_patience: Duration,
    /// While paused for an outage, the longest the worker waits between
    /// looks at whether it is over.
    #[serde(with = "humantime_serde")]
    pub outage_check_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            prefix: "lambdex".to_owned(),
            quorum: true,
            prefetch: 64,
            requeue_attempts: 3,
            requeue_first_delay: Duration::from_secs(10),
            requeue_multiplier: 6,
            reconnect_min_delay: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(30),
            publish_window: 1000,
            delivery_limit: 10,
            outage_patience: Duration::from_secs(24 * 60 * 60),
            outage_check_interval: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.prefetch == 0 || self.publish_window == 0 {
            return Err(ConfigError::invalid(
                "queue.prefetch and queue.publish_window must be at least 1",
            ));
        }
        if self.prefix.trim().is_empty() {
            return Err(ConfigError::invalid("queue.prefix must not be empty"));
        }
        if self.requeue_attempts > 0 && self.requeue_first_delay.is_zero() {
            return Err(ConfigError::invalid(
                "queue.requeue_first_delay must be more than 0",
            ));
        }
        if self.connect_timeout.is_zero() || self.confirm_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "queue.connect_timeout and queue.confirm_timeout must be more than 0",
            ));
        }
        if self.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "queue.delivery_limit must be at least 1",
            ));
        }
        if self.outage_check_interval.is_zero() {
            return Err(ConfigError::invalid(
                "queue.outage_check_interval must be more than 0",
            ));
        }
        if self.reconnect_min_delay > self.reconnect_max_delay {
            return Err(ConfigError::invalid(
                "queue.reconnect_min_delay is over queue.reconnect_max_delay",
            ));
        }
        Ok(())
    }

    /// Delays between attempts at reaching a service that is down.
    pub fn reconnect_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.reconnect_min_delay)
            .with_max_delay(self.reconnect_max_delay)
            .without_max_times()
            .with_jitter()
            .build()
    }

    /// The delay of each trip through the retry queues, in order.
    pub fn requeue_delays(&self) -> Vec<Duration> {
        (0..self.requeue_attempts)
            .map(|trip| {
                self.requeue_first_delay
                    .saturating_mul(self.requeue_multiplier.saturating_pow(trip))
            })
            .collect()
    }
}
