//! The RabbitMQ topology: its exchanges, queues and bindings, derived from
//! `[queue]`, declared (idempotently) by every worker and by `lambdex
//! enqueue` at start, and exported as RabbitMQ definitions
//! (`lambdex definitions rabbitmq`; the default is committed as
//! `infra/rabbitmq/definitions.json`, and a test keeps the two identical).
//!
//! ```text
//! producers ──► exchange P.jobs ──"batch"───► queue P.jobs ─────────┐
//!                               ──"priority"► queue P.jobs.priority ┤ workers
//!   ┌── TTL expires: dead-lettered to P.jobs, on the job's own lane ◄┤ (retryable failure:
//!   └── queue P.retry.1 (10 s), P.retry.2 (60 s), P.retry.3 (6 min) ◄┘  trip n → exchange
//!                                                                       P.retry, which routes
//!                                          queue P.dead ◄──── invalid,  on the header naming
//!                                                             failed    P.retry.n)
//! ```
//!
//! A requeued job is published to the headers exchange `P.retry` with its
//! lane (`batch` or `priority`) as its routing key and the retry queue it
//! is for in a header; the retry queues have no dead-letter routing key, so
//! when a job's TTL expires it goes back to `P.jobs` with the routing key
//! it was published with: ad-hoc jobs come back on the priority lane.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use serde_json::{Value, json};

use crate::config::QueueConfig;
use crate::queue::headers::RETRY_QUEUE_HEADER;

/// The routing key of batch jobs.
pub const BATCH_KEY: &str = "batch";
/// The routing key of ad-hoc jobs (priority above 0): their own lane, so
/// they never wait behind the batch backlog.
pub const PRIORITY_KEY: &str = "priority";

/// Every name the worker and producers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The direct exchange producers publish jobs to.
    pub jobs_exchange: String,
    /// The headers exchange requeued jobs are published to.
    pub retry_exchange: String,
    pub jobs_queue: String,
    pub priority_queue: String,
    /// Retry queues in trip order, with their delay.
    pub retry_queues: Vec<(String, Duration)>,
    pub dead_queue: String,
    quorum: bool,
}

/// One queue as declared.
struct QueueSpec<'a> {
    name: &'a str,
    arguments: Vec<(&'static str, Value)>,
}

impl Topology {
    pub fn new(config: &QueueConfig) -> Self {
        let prefix = &config.prefix;
        Self {
            jobs_exchange: format!("{prefix}.jobs"),
            retry_exchange: format!("{prefix}.retry"),
            jobs_queue: format!("{prefix}.jobs"),
            priority_queue: format!("{prefix}.jobs.priority"),
            retry_queues: config
                .requeue_delays()
                .into_iter()
                .enumerate()
                .map(|(trip, delay)| (format!("{prefix}.retry.{}", trip + 1), delay))
                .collect(),
            dead_queue: format!("{prefix}.dead"),
            quorum: config.quorum,
        }
    }

    /// The routing key of a job of `priority`.
    pub fn routing_key(priority: u8) -> &'static str {
        if priority > 0 {
            PRIORITY_KEY
        } else {
            BATCH_KEY
        }
    }

    /// The queues workers consume, the priority lane first.
    pub fn consumed_queues(&self) -> [&str; 2] {
        [&self.priority_queue, &self.jobs_queue]
    }

    fn queue_type(&self) -> (&'static str, Value) {
        (
            "x-queue-type",
            json!(if self.quorum { "quorum" } else { "classic" }),
        )
    }

    fn queues(&self) -> Vec<QueueSpec<'_>> {
        let mut queues = vec![
            QueueSpec {
                name: &self.jobs_queue,
                arguments: vec![self.queue_type()],
            },
            QueueSpec {
                name: &self.priority_queue,
                arguments: vec![self.queue_type()],
            },
        ];
        for (name, delay) in &self.retry_queues {
            let mut arguments = vec![
                self.queue_type(),
                (
                    "x-message-ttl",
                    json!(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                ),
                // No routing key: an expired job keeps the lane it was
                // published with.
                ("x-dead-letter-exchange", json!(self.jobs_exchange)),
            ];
            if self.quorum {
                // Quorum queues dead-letter at most once unless told
                // otherwise; a job must not vanish between the two queues.
                arguments.push(("x-dead-letter-strategy", json!("at-least-once")));
                arguments.push(("x-overflow", json!("reject-publish")));
            }
            queues.push(QueueSpec { name, arguments });
        }
        queues.push(QueueSpec {
            name: &self.dead_queue,
            arguments: vec![self.queue_type()],
        });
        queues
    }

    fn bindings(&self) -> [(&str, &'static str); 2] {
        [
            (self.jobs_queue.as_str(), BATCH_KEY),
            (self.priority_queue.as_str(), PRIORITY_KEY),
        ]
    }

    /// Each retry queue's binding to the retry exchange: the header that
    /// names it.
    fn retry_bindings(&self) -> Vec<(&str, Vec<(&'static str, Value)>)> {
        self.retry_queues
            .iter()
            .map(|(queue, _)| {
                (
                    queue.as_str(),
                    vec![
                        ("x-match", json!("all")),
                        (RETRY_QUEUE_HEADER, json!(queue)),
                    ],
                )
            })
            .collect()
    }

    /// Declares everything on `channel`; declaring what exists with the
    /// same settings changes nothing.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                &self.jobs_exchange,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                &self.retry_exchange,
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        for queue in self.queues() {
            channel
                .queue_declare(
                    queue.name,
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    field_table(&queue.arguments),
                )
                .await?;
        }
        for (queue, key) in self.bindings() {
            channel
                .queue_bind(
                    queue,
                    &self.jobs_exchange,
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for (queue, arguments) in self.retry_bindings() {
            channel
                .queue_bind(
                    queue,
                    &self.retry_exchange,
                    "",
                    QueueBindOptions::default(),
                    field_table(&arguments),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes the exchange and every queue, messages and all (what a
    /// test or a benchmark declared for itself).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.name, QueueDeleteOptions::default())
                .await?;
        }
        channel
            .exchange_delete(&self.retry_exchange, ExchangeDeleteOptions::default())
            .await?;
        channel
            .exchange_delete(&self.jobs_exchange, ExchangeDeleteOptions::default())
            .await
    }

    /// The topology as RabbitMQ definitions (`rabbitmqctl
    /// import_definitions`, or the management plugin's `load_definitions`).
    pub fn definitions(&self) -> Value {
        let vhost = "/";
        let mut bindings: Vec<Value> = self
            .bindings()
            .iter()
            .map(|(queue, key)| {
                json!({
                    "source": self.jobs_exchange, "vhost": vhost, "destination": queue,
                    "destination_type": "queue", "routing_key": key, "arguments": {}
                })
            })
            .collect();
        bindings.extend(self.retry_bindings().iter().map(|(queue, arguments)| json!({
            "source": self.retry_exchange, "vhost": vhost, "destination": queue,
            "destination_type": "queue", "routing_key": "",
            "arguments": arguments.iter().map(|(key, value)| ((*key).to_owned(), value.clone())).collect::<serde_json::Map<_, _>>(),
        })));
        json!({
            "exchanges": [{
                "name": self.jobs_exchange, "vhost": vhost, "type": "direct",
                "durable": true, "auto_delete": false, "internal": false, "arguments": {}
            }, {
                "name": self.retry_exchange, "vhost": vhost, "type": "headers",
                "durable": true, "auto_delete": false, "internal": false, "arguments": {}
            }],
            "queues": self.queues().iter().map(|queue| json!({
                "name": queue.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": queue.arguments.iter().map(|(key, value)| ((*key).to_owned(), value.clone())).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "bindings": bindings,
        })
    }
}

fn field_table(arguments: &[(&'static str, Value)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            Value::String(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            Value::Number(number) => AMQPValue::LongLongInt(number.as_i64().unwrap_or(i64::MAX)),
            Value::Bool(flag) => AMQPValue::Boolean(*flag),
            other => AMQPValue::LongString(LongString::from(other.to_string())),
        };
        table.insert(ShortString::from(*key), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_definitions_are_the_defaults() {
        let committed: Value =
            serde_json::from_str(include_str!("../../../../infra/rabbitmq/definitions.json"))
                .expect("infra/rabbitmq/definitions.json is JSON");
        assert_eq!(
            committed,
            Topology::new(&QueueConfig::default()).definitions(),
            "regenerate it with `lambdex definitions rabbitmq > infra/rabbitmq/definitions.json`"
        );
    }

    #[test]
    fn retry_queues_grow_their_delay_and_lead_back_to_the_jobs() {
        let topology = Topology::new(&QueueConfig::default());
        let delays: Vec<u64> = topology
            .retry_queues
            .iter()
            .map(|(_, delay)| delay.as_secs())
            .collect();
        assert_eq!(delays, [10, 60, 360]);
        let definitions = topology.definitions();
        let retry = &definitions["queues"][2];
        assert_eq!(retry["name"], "lambdex.retry.1");
        assert_eq!(retry["arguments"]["x-message-ttl"], 10_000);
        assert_eq!(retry["arguments"]["x-dead-letter-exchange"], "lambdex.jobs");
        // The lane a job expires back to is the one it was requeued on.
        assert!(
            retry["arguments"]
                .get("x-dead-letter-routing-key")
                .is_none()
        );
        let binding = &definitions["bindings"][2];
        assert_eq!(binding["source"], "lambdex.retry");
        assert_eq!(binding["destination"], "lambdex.retry.1");
        assert_eq!(binding["arguments"][RETRY_QUEUE_HEADER], "lambdex.retry.1");
        assert_eq!(Topology::routing_key(0), BATCH_KEY);
        assert_eq!(Topology::routing_key(3), PRIORITY_KEY);
    }
}
