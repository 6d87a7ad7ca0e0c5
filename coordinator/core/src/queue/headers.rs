//! The headers a job carries once it has failed: on its way through the
//! retry queues and in the dead-letter queue. Named here once; the worker
//! writes them, the dead-letter walks and the replay read them.
//!
//! A message's headers travel in one AMQP frame, and a broker closes the
//! connection over a frame larger than its `frame_max` (128 KiB on
//! RabbitMQ by default) — every delivery in flight with it, the offending
//! one included, again and again. So what these headers carry is bounded:
//! each text is cut to [`MAX_TEXT_BYTES`], and the whole table, the
//! producer's own headers included, to [`MAX_HEADERS_BYTES`], the oldest
//! history and then the producer's headers dropped first.

use chrono::{DateTime, Utc};
use lambdex_proto::Failure;
use lambdex_proto::text::truncated;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

use crate::queue::amqp;

/// Failures so far (requeues + the last), on requeued and dead messages.
pub const ATTEMPTS_HEADER: &str = "x-lambdex-attempts";
/// Why a message was dead-lettered or requeued: its failure class
/// (`invalid_message`, `index_rejected`, `invalid_image`, `throttled`…).
pub const REASON_HEADER: &str = "x-lambdex-reason";
/// The last error, in words.
pub const ERROR_HEADER: &str = "x-lambdex-error";
pub const FIRST_FAILURE_HEADER: &str = "x-lambdex-first-failure";
pub const LAST_FAILURE_HEADER: &str = "x-lambdex-last-failure";
/// Earlier failures and the last, oldest first (`TIME CLASS: ERROR`), at
/// most [`HISTORY_LENGTH`] of them.
pub const HISTORY_HEADER: &str = "x-lambdex-history";
/// How many failures the history keeps: the most recent.
pub const HISTORY_LENGTH: usize = 10;
/// Where the message was first published: exchange and routing key.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-lambdex-original-exchange";
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-lambdex-original-routing-key";
/// Requeues for outages (a function down, the index refusing the worker),
/// which spend no attempt.
pub const OUTAGES_HEADER: &str = "x-lambdex-outages";
/// When the job first waited out an outage (RFC 3339).
pub const OUTAGE_SINCE_HEADER: &str = "x-lambdex-outage-since";
/// Which retry queue a requeued job is for: the retry exchange routes on
/// it. Not `x-…`: a headers exchange ignores binding arguments so named.
pub const RETRY_QUEUE_HEADER: &str = "lambdex-retry-queue";
/// RabbitMQ's count of a quorum queue message's earlier deliveries.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The longest text a header keeps (an error, a history entry); the rest
/// is cut, its length said.
pub const MAX_TEXT_BYTES: usize = 2048;
/// The most a message's headers may weigh, encoded: well inside RabbitMQ's
/// default `frame_max` of 128 KiB, with room for the other properties.
pub const MAX_HEADERS_BYTES: usize = 32 * 1024;

/// A delivery's count of failures so far, whatever a producer forged into
/// the header: never negative, never so large that one more overflows.
pub fn attempts_of(delivery: &Delivery) -> i64 {
    count(amqp::header_number(
        delivery.properties.headers().as_ref(),
        ATTEMPTS_HEADER,
    ))
}

/// A count read from a header a producer may have forged: none is 0, and
/// it is never negative nor so large that one more overflows.
fn count(header: Option<i64>) -> i64 {
    header.unwrap_or(0).clamp(0, i64::MAX - 1)
}

/// How many times the broker has delivered this message before (quorum
/// queues count; classic queues say nothing).
pub fn delivery_count(delivery: &Delivery) -> i64 {
    amqp::header_number(
        delivery.properties.headers().as_ref(),
        DELIVERY_COUNT_HEADER,
    )
    .unwrap_or(0)
    .max(0)
}

/// The delivery's headers, plus the failure's: attempts, times, the
/// original routing, its class and reason; within [`MAX_HEADERS_BYTES`].
pub fn failure_headers(delivery: &Delivery, attempts: i64, failure: &Failure) -> FieldTable {
    let previous = delivery.properties.headers().as_ref();
    let mut headers = previous.cloned().unwrap_or_default();
    let now = Utc::now().to_rfc3339();
    let (class, reason) = (
        failure.class.as_str(),
        truncated(&failure.reason, MAX_TEXT_BYTES),
    );
    amqp::set_number(&mut headers, ATTEMPTS_HEADER, attempts);
    if amqp::header_text(previous, FIRST_FAILURE_HEADER).is_none() {
        amqp::set_text(&mut headers, FIRST_FAILURE_HEADER, &now);
    }
    amqp::set_text(&mut headers, LAST_FAILURE_HEADER, &now);
    if amqp::header_text(previous, ORIGINAL_EXCHANGE_HEADER).is_none() {
        amqp::set_text(
            &mut headers,
            ORIGINAL_EXCHANGE_HEADER,
            &truncated(delivery.exchange.as_str(), MAX_TEXT_BYTES),
        );
        amqp::set_text(
            &mut headers,
            ORIGINAL_ROUTING_KEY_HEADER,
            &truncated(delivery.routing_key.as_str(), MAX_TEXT_BYTES),
        );
    }
    amqp::set_text(&mut headers, REASON_HEADER, class);
    amqp::set_text(&mut headers, ERROR_HEADER, &reason);
    let mut history: Vec<String> = amqp::header_texts(previous, HISTORY_HEADER)
        .iter()
        .map(|entry| truncated(entry, MAX_TEXT_BYTES))
        .collect();
    history.push(truncated(
        &format!("{now} {class}: {reason}"),
        MAX_TEXT_BYTES,
    ));
    let skip = history.len().saturating_sub(HISTORY_LENGTH);
    history.drain(..skip);
    fit(&mut headers, history);
    headers
}

/// The outage bookkeeping on a requeued job: one more outage, and since
/// when it has been waiting them out.
pub fn count_outage(headers: &mut FieldTable, delivery: &Delivery) -> DateTime<Utc> {
    let previous = delivery.properties.headers().as_ref();
    let outages = count(amqp::header_number(previous, OUTAGES_HEADER));
    amqp::set_number(headers, OUTAGES_HEADER, outages + 1);
    let since = amqp::header_text(previous, OUTAGE_SINCE_HEADER)
        .and_then(|since| DateTime::parse_from_rfc3339(&since).ok())
        .map_or_else(Utc::now, |since| since.with_timezone(&Utc));
    amqp::set_text(headers, OUTAGE_SINCE_HEADER, &since.to_rfc3339());
    since
}

/// Puts `history` in `headers`, then trims them to [`MAX_HEADERS_BYTES`]:
/// the oldest history first, then headers that are not lambdex's own.
fn fit(headers: &mut FieldTable, mut history: Vec<String>) {
    loop {
        amqp::set_texts(headers, HISTORY_HEADER, &history);
        if encoded_len(headers) <= MAX_HEADERS_BYTES || history.len() <= 1 {
            break;
        }
        history.remove(0);
    }
    if encoded_len(headers) <= MAX_HEADERS_BYTES {
        return;
    }
    let foreign: Vec<String> = headers
        .inner()
        .keys()
        .map(|key| key.to_string())
        .filter(|key| !key.starts_with("x-lambdex-"))
        .collect();
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !foreign.contains(&key.to_string()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    *headers = kept;
}

/// The bytes `headers` take in an AMQP frame (a close upper bound).
pub fn encoded_len(headers: &FieldTable) -> usize {
    4 + headers
        .inner()
        .iter()
        .map(|(key, value)| 1 + key.as_str().len() + value_len(value))
        .sum::<usize>()
}

fn value_len(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::LongString(text) => 4 + text.as_bytes().len(),
        AMQPValue::ShortString(text) => 1 + text.as_str().len(),
        AMQPValue::FieldArray(values) => 4 + values.as_slice().iter().map(value_len).sum::<usize>(),
        AMQPValue::FieldTable(table) => encoded_len(table),
        AMQPValue::ByteArray(bytes) => 4 + bytes.as_slice().len(),
        // Numbers, booleans, timestamps, decimals: at most 8 bytes.
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use lambdex_proto::FailureClass;
    use lapin::types::{LongString, ShortString};

    use super::*;

    #[test]
    fn headers_are_trimmed_to_fit_a_frame_oldest_history_then_foreign_first() {
        let mut headers = FieldTable::default();
        amqp::set_text(&mut headers, REASON_HEADER, "throttled");
        // A producer's header near a frame's size.
        headers.insert(
            ShortString::from("x-producer-notes"),
            AMQPValue::LongString(LongString::from("n".repeat(100 * 1024))),
        );
        let history: Vec<String> = (0..HISTORY_LENGTH)
            .map(|i| format!("{i} {}", "h".repeat(MAX_TEXT_BYTES)))
            .collect();
        fit(&mut headers, history);
        assert!(encoded_len(&headers) <= MAX_HEADERS_BYTES);
        // Ours are kept, the most recent history first of all.
        assert_eq!(
            amqp::header_text(Some(&headers), REASON_HEADER).as_deref(),
            Some("throttled")
        );
        let kept = amqp::header_texts(Some(&headers), HISTORY_HEADER);
        assert!(kept.last().is_some_and(|entry| entry.starts_with('9')));
        assert!(amqp::header_text(Some(&headers), "x-producer-notes").is_none());
    }

    #[test]
    fn a_forged_count_is_never_negative_and_one_more_never_overflows() {
        assert_eq!(count(None), 0);
        assert_eq!(count(Some(-5)), 0);
        assert_eq!(count(Some(3)), 3);
        let forged = count(Some(i64::MAX));
        assert_eq!(forged.checked_add(1), Some(i64::MAX));
    }

    #[test]
    fn a_failure_over_any_size_gives_headers_within_the_frame() {
        let failure = Failure::new(FailureClass::FetchStatus, "x".repeat(200_000), true);
        let reason = truncated(&failure.reason, MAX_TEXT_BYTES);
        assert!(reason.len() < MAX_TEXT_BYTES + 32);
        let mut headers = FieldTable::default();
        amqp::set_text(&mut headers, ERROR_HEADER, &reason);
        assert!(encoded_len(&headers) < MAX_HEADERS_BYTES);
    }
}
