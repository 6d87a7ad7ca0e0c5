//! The dead-letter queue, read and replayed: `lambdex dlq`, and the admin
//! trigger's `/v1/dead-letters`.
//!
//! Every operation walks the queue once with `basic.get`, holding each
//! message unacknowledged, up to the count the queue had when it started
//! (dead letters arriving meanwhile wait for the next walk):
//! - reading (`list`, `show`, `export`) acknowledges nothing; closing the
//!   channel returns every message, in its order;
//! - `replay` publishes a matching message to the jobs exchange and
//!   acknowledges it only once the broker confirmed that publish, so a
//!   crash mid-replay loses nothing: at worst a job runs twice, and its
//!   document (id = job id) is written twice;
//! - `purge` acknowledges the matching messages, which deletes them.
//!
//! Messages that do not match are held to the end and returned, never
//! republished. Returning does not count against a quorum queue's
//! `delivery-limit` on RabbitMQ 4 (it counts failed deliveries only); on
//! 3.x, where a `delivery-limit` policy counts every return, leave the
//! dead-letter queue without one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lambdex_proto::{FailureClass, Job, JobLimits};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::QueueConfig;
use crate::queue::amqp::{self, AmqpError};
use crate::queue::headers::{
    ATTEMPTS_HEADER, ERROR_HEADER, FIRST_FAILURE_HEADER, HISTORY_HEADER, LAST_FAILURE_HEADER,
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, OUTAGE_SINCE_HEADER, OUTAGES_HEADER,
    REASON_HEADER, RETRY_QUEUE_HEADER,
};
use crate::queue::topology::{BATCH_KEY, PRIORITY_KEY, Topology};

/// When the message was last replayed (RFC 3339), on a replayed job.
pub const REPLAYED_AT_HEADER: &str = "x-lambdex-replayed-at";
/// The reason it had been dead-lettered for, on a replayed job.
pub const REPLAYED_REASON_HEADER: &str = "x-lambdex-replayed-reason";
/// How many times it has been replayed.
pub const REPLAYS_HEADER: &str = "x-lambdex-replays";

/// The failure headers a replay clears: the job starts again with no
/// attempts.
const FAILURE_HEADERS: [&str; 11] = [
    OUTAGES_HEADER,
    OUTAGE_SINCE_HEADER,
    RETRY_QUEUE_HEADER,
    ATTEMPTS_HEADER,
    REASON_HEADER,
    ERROR_HEADER,
    FIRST_FAILURE_HEADER,
    LAST_FAILURE_HEADER,
    HISTORY_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
];

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("no dead letter has the id {0:?}")]
    NotFound(String),
}

impl From<lapin::Error> for DlqError {
    fn from(error: lapin::Error) -> Self {
        Self::Amqp(AmqpError::Lapin(error))
    }
}

/// One dead letter, as `show` and `export` print it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// The job id; for a message that is not a job, `msg-` and the start
    /// of its payload's SHA-256.
    pub id: String,
    pub job_id: Option<String>,
    /// The failure class (`fetch_status`, `invalid_message`…), or
    /// `unknown` for a message without the header.
    pub reason: FailureClass,
    pub error: Option<String>,
    pub attempts: Option<i64>,
    pub first_failure: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    /// Earlier failures, oldest first, then the last.
    pub history: Vec<String>,
    pub original_routing_key: Option<String>,
    /// Every header, as text or number.
    pub headers: BTreeMap<String, serde_json::Value>,
    /// The job as JSON, or the payload as text when it is not JSON.
    pub payload: serde_json::Value,
}

/// A reason's dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReasonCount {
    #[schema(value_type = String, example = "fetch_status")]
    pub reason: FailureClass,
    pub count: u64,
    /// The earliest and latest last failure among them.
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// Which dead letters a replay or purge takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this failure class.
    pub reason: Option<FailureClass>,
    /// Only those whose last failure is at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: Option<u64>,
    /// Only among the first this many letters in the queue (those a dry
    /// run looked at: letters that arrived since are after them).
    pub first: Option<u64>,
}

impl Filter {
    /// This filter bounded to what `planned` (its dry run) counted: no
    /// more letters than it took, only among those it looked at. A purge
    /// confirmed after its count deletes what was counted, not letters
    /// that arrived meanwhile.
    pub fn as_counted(&self, planned: &Summary) -> Self {
        let taken = planned.taken_total();
        Self {
            limit: Some(self.limit.map_or(taken, |limit| limit.min(taken))),
            first: Some(
                self.first
                    .map_or(planned.examined, |first| first.min(planned.examined)),
            ),
            ..self.clone()
        }
    }

    fn matches(&self, letter: &DeadLetter) -> bool {
        let reason = match &self.reason {
            Some(reason) => &letter.reason == reason,
            // A message that is not a job would only come back: replayed
            // when asked for by name.
            None => letter.reason != FailureClass::InvalidMessage,
        };
        let recent = match (self.since, letter.last_failure) {
            (Some(since), Some(last)) => last >= since,
            (Some(_), None) => false,
            (None, _) => true,
        };
        reason && recent
    }
}

/// What a replay or purge did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub dry_run: bool,
    /// Dead letters looked at.
    pub examined: u64,
    /// Replayed or purged (would be, in a dry run), by reason.
    pub taken: BTreeMap<String, u64>,
    /// Left in the dead-letter queue.
    pub kept: u64,
}

impl Summary {
    pub fn taken_total(&self) -> u64 {
        self.taken.values().sum()
    }
}

/// What to do with a matching dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Purge,
}

/// Parses `--since`: an RFC 3339 time, or a duration ago (`90m`, `2days`).
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text).map_err(|error| {
        format!(
            "{text:?} is neither an RFC 3339 time nor a duration such as 90m or 2days ({error})"
        )
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} reaches too far back"))
}

/// A walk over the queue: one connection, one confirmed channel.
struct Walk {
    connection: Connection,
    channel: Channel,
    queue: String,
    /// Messages left to take of those there were at the start.
    remaining: u32,
}

impl Walk {
    async fn start(config: &QueueConfig, name: &str) -> Result<(Self, Topology), DlqError> {
        let topology = Topology::new(config);
        let connection = amqp::connect(config, name).await?;
        let channel = amqp::confirmed_channel(&connection).await?;
        topology.declare(&channel).await?;
        let remaining = message_count(&channel, &topology.dead_queue).await?;
        let walk = Self {
            connection,
            channel,
            queue: topology.dead_queue.clone(),
            remaining,
        };
        Ok((walk, topology))
    }

    async fn next(&mut self) -> Result<Option<Delivery>, DlqError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let message = self
            .channel
            .basic_get(&self.queue, BasicGetOptions { no_ack: false })
            .await?;
        Ok(message.map(|message| message.delivery))
    }

    /// Closes the connection: every message not acknowledged goes back.
    async fn finish(self) -> Result<(), DlqError> {
        self.connection.close(200, "done").await?;
        Ok(())
    }
}

/// Messages ready in `queue`.
pub async fn message_count(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let queue = channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.message_count())
}

/// Calls `visit` with every dead letter, leaving all of them in the queue.
/// `on_start` hears how many there are.
pub async fn browse(
    config: &QueueConfig,
    on_start: impl FnOnce(u32),
    mut visit: impl FnMut(DeadLetter),
) -> Result<(), DlqError> {
    let (mut walk, _) = Walk::start(config, "lambdex dlq").await?;
    on_start(walk.remaining);
    let visited = async {
        while let Some(delivery) = walk.next().await? {
            visit(DeadLetter::of(&delivery));
        }
        Ok::<_, DlqError>(())
    }
    .await;
    let finished = walk.finish().await;
    visited.and(finished)
}

/// Dead letters by reason, most first.
pub async fn counts(config: &QueueConfig) -> Result<Vec<ReasonCount>, DlqError> {
    Ok(counts_and_latest(config, 0).await?.0)
}

/// Dead letters by reason, most first, and the `latest` last in the queue
/// (newest last), in one walk.
pub async fn counts_and_latest(
    config: &QueueConfig,
    latest: usize,
) -> Result<(Vec<ReasonCount>, Vec<DeadLetter>), DlqError> {
    let mut by_reason: BTreeMap<FailureClass, ReasonCount> = BTreeMap::new();
    let mut last = std::collections::VecDeque::with_capacity(latest);
    browse(
        config,
        |_| {},
        |letter| {
            if latest > 0 {
                if last.len() == latest {
                    last.pop_front();
                }
                last.push_back(letter.clone());
            }
            let entry = by_reason
                .entry(letter.reason.clone())
                .or_insert_with(|| ReasonCount {
                    reason: letter.reason.clone(),
                    count: 0,
                    oldest: None,
                    newest: None,
                });
            entry.count += 1;
            if let Some(time) = letter.last_failure {
                entry.oldest = Some(entry.oldest.map_or(time, |oldest| oldest.min(time)));
                entry.newest = Some(entry.newest.map_or(time, |newest| newest.max(time)));
            }
        },
    )
    .await?;
    let mut counts: Vec<ReasonCount> = by_reason.into_values().collect();
    counts.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.reason.as_str().cmp(b.reason.as_str()))
    });
    Ok((counts, last.into()))
}

/// The dead letter with this id (job id, or `msg-…`).
pub async fn find(config: &QueueConfig, id: &str) -> Result<DeadLetter, DlqError> {
    let mut found = None;
    browse(
        config,
        |_| {},
        |letter| {
            if found.is_none() && letter.id == id {
                found = Some(letter);
            }
        },
    )
    .await?;
    found.ok_or_else(|| DlqError::NotFound(id.to_owned()))
}

/// Replays or purges the dead letters `filter` takes; `on_start` hears
/// how many there are to look at, `on_step` is called after each.
pub async fn take(
    config: &QueueConfig,
    action: Action,
    filter: &Filter,
    dry_run: bool,
    on_start: impl FnOnce(u32),
    on_step: impl FnMut(&Summary),
) -> Result<Summary, DlqError> {
    let (mut walk, topology) = Walk::start(config, "lambdex dlq").await?;
    if let Some(first) = filter.first {
        walk.remaining = walk.remaining.min(u32::try_from(first).unwrap_or(u32::MAX));
    }
    on_start(walk.remaining);
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let walked = walk_taking(&mut walk, &topology, action, filter, &mut summary, on_step).await;
    // Whatever happened, what is held goes back.
    let finished = walk.finish().await;
    walked.and(finished).map(|()| summary)
}

async fn walk_taking(
    walk: &mut Walk,
    topology: &Topology,
    action: Action,
    filter: &Filter,
    summary: &mut Summary,
    mut on_step: impl FnMut(&Summary),
) -> Result<(), DlqError> {
    let dry_run = summary.dry_run;
    while let Some(delivery) = walk.next().await? {
        summary.examined += 1;
        let letter = DeadLetter::of(&delivery);
        let under_limit = filter
            .limit
            .is_none_or(|limit| summary.taken_total() < limit);
        if !(under_limit && filter.matches(&letter)) {
            summary.kept += 1;
            on_step(summary);
            continue;
        }
        if !dry_run {
            if action == Action::Replay {
                let (routing_key, headers) = replayed(&delivery, &letter);
                amqp::publish(
                    &walk.channel,
                    &topology.jobs_exchange,
                    routing_key,
                    &delivery.data,
                    headers,
                )
                .await?;
            }
            // Only now: the replayed job is safe with the broker.
            delivery.ack(BasicAckOptions::default()).await?;
        }
        *summary.taken.entry(letter.reason.to_string()).or_default() += 1;
        on_step(summary);
    }
    Ok(())
}

/// Where a replayed job goes and its headers: failures cleared, the
/// replay marked.
fn replayed(delivery: &Delivery, letter: &DeadLetter) -> (&'static str, FieldTable) {
    let routing_key = match letter.original_routing_key.as_deref() {
        Some(PRIORITY_KEY) => PRIORITY_KEY,
        Some(BATCH_KEY) => BATCH_KEY,
        _ => serde_json::from_value::<Job>(letter.payload.clone())
            .map_or(BATCH_KEY, |job| Topology::routing_key(job.priority)),
    };
    let previous = delivery.properties.headers().as_ref();
    let replays = amqp::header_number(previous, REPLAYS_HEADER).unwrap_or(0) + 1;
    let mut headers = FieldTable::default();
    if let Some(previous) = previous {
        for (key, value) in previous.inner() {
            if !FAILURE_HEADERS.contains(&key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    amqp::set_text(&mut headers, REPLAYED_AT_HEADER, &Utc::now().to_rfc3339());
    amqp::set_text(&mut headers, REPLAYED_REASON_HEADER, letter.reason.as_str());
    amqp::set_number(&mut headers, REPLAYS_HEADER, replays);
    (routing_key, headers)
}

/// A message's id in the dead-letter tools: its job id, or for a message
/// that is not a job, `msg-` and the start of its SHA-256.
pub fn letter_id(body: &[u8]) -> String {
    match Job::from_slice_within(
        body,
        &JobLimits {
            max_message_bytes: usize::MAX,
            ..JobLimits::default()
        },
    ) {
        Ok(job) => job.job_id,
        Err(_) => {
            let digest = Sha256::digest(body);
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("msg-{hex}")
        }
    }
}

impl DeadLetter {
    fn of(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().as_ref();
        let text = |key| amqp::header_text(headers, key);
        let time = |key| {
            text(key)
                .and_then(|time| DateTime::parse_from_rfc3339(&time).ok())
                .map(|time| time.with_timezone(&Utc))
        };
        let job = Job::from_slice(&delivery.data).ok();
        let payload = serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
        });
        let id = letter_id(&delivery.data);
        Self {
            id,
            job_id: job.map(|job| job.job_id),
            reason: FailureClass::from(text(REASON_HEADER).as_deref().unwrap_or("unknown")),
            error: text(ERROR_HEADER),
            attempts: amqp::header_number(headers, ATTEMPTS_HEADER),
            first_failure: time(FIRST_FAILURE_HEADER),
            last_failure: time(LAST_FAILURE_HEADER),
            history: amqp::header_texts(headers, HISTORY_HEADER),
            original_routing_key: text(ORIGINAL_ROUTING_KEY_HEADER),
            headers: headers
                .map(|headers| {
                    headers
                        .inner()
                        .iter()
                        .map(|(key, value)| (key.to_string(), json_of(value)))
                        .collect()
                })
                .unwrap_or_default(),
            payload,
        }
    }
}

/// A header value as JSON.
fn json_of(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::LongString(text) => Value::from(text.to_string()),
        AMQPValue::ShortString(text) => Value::from(text.to_string()),
        AMQPValue::Boolean(flag) => Value::from(*flag),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::FieldArray(values) => {
            Value::Array(values.as_slice().iter().map(json_of).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(key, value)| (key.to_string(), json_of(value)))
                .collect(),
        ),
        other => Value::from(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, last_failure: Option<&str>) -> DeadLetter {
        DeadLetter {
            id: "job".to_owned(),
            job_id: Some("job".to_owned()),
            reason: FailureClass::from(reason),
            error: None,
            attempts: Some(1),
            first_failure: None,
            last_failure: last_failure.map(|time| time.parse().expect("a time")),
            history: Vec::new(),
            original_routing_key: None,
            headers: BTreeMap::new(),
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_filter_takes_its_reason_and_time_and_never_invalid_messages_unasked() {
        let old = letter("fetch_status", Some("2026-11-01T00:00:00Z"));
        let new = letter("model_failure", Some("2026-11-20T00:00:00Z"));
        let invalid = letter("invalid_message", Some("2026-11-20T00:00:00Z"));
        let all = Filter::default();
        assert!(all.matches(&old) && all.matches(&new) && !all.matches(&invalid));
        let by_reason = Filter {
            reason: Some(FailureClass::FetchStatus),
            ..Filter::default()
        };
        assert!(by_reason.matches(&old) && !by_reason.matches(&new));
        let invalid_asked = Filter {
            reason: Some(FailureClass::InvalidMessage),
            ..Filter::default()
        };
        assert!(invalid_asked.matches(&invalid));
        let since = Filter {
            since: Some("2026-11-10T00:00:00Z".parse().expect("a time")),
            ..Filter::default()
        };
        assert!(!since.matches(&old) && since.matches(&new));
        assert!(!since.matches(&letter("fetch_status", None)));
    }

    #[test]
    fn a_confirmed_purge_is_bounded_by_what_its_dry_run_counted() {
        let planned = Summary {
            dry_run: true,
            examined: 7,
            taken: BTreeMap::from([("fetch_status".to_owned(), 3)]),
            kept: 4,
        };
        let asked = Filter {
            reason: Some(FailureClass::FetchStatus),
            ..Filter::default()
        };
        let counted = asked.as_counted(&planned);
        assert_eq!(counted.reason, asked.reason);
        assert_eq!((counted.limit, counted.first), (Some(3), Some(7)));
        // A tighter bound asked for stays.
        let tight = Filter {
            limit: Some(2),
            first: Some(5),
            ..asked
        };
        let counted = tight.as_counted(&planned);
        assert_eq!((counted.limit, counted.first), (Some(2), Some(5)));
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(
            parse_since("2026-11-20T10:00:00+01:00").expect("a time"),
            "2026-11-20T09:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("a time")
        );
        let ago = Utc::now() - parse_since("90m").expect("a duration");
        assert!((89..=91).contains(&ago.num_minutes()), "{ago}");
        let error = parse_since("yesterday-ish").expect_err("neither");
        assert!(error.contains("RFC 3339"), "{error}");
    }
}
