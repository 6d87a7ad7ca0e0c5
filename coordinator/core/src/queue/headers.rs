//! The headers a job carries once it has failed: on its way through the
//! retry queues and in the dead-letter queue. Named here once; the worker
//! writes them, the dead-letter walks and the replay read them.

use chrono::Utc;
use lambdex_proto::Failure;
use lapin::message::Delivery;
use lapin::types::FieldTable;

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

/// The delivery's headers, plus the failure's: attempts, times, the
/// original routing, its class and reason.
pub fn failure_headers(delivery: &Delivery, attempts: i64, failure: &Failure) -> FieldTable {
    let (class, reason) = (failure.class.as_str(), failure.reason.as_str());
    let previous = delivery.properties.headers().as_ref();
    let mut headers = previous.cloned().unwrap_or_default();
    let now = Utc::now().to_rfc3339();
    amqp::set_number(&mut headers, ATTEMPTS_HEADER, attempts);
    if amqp::header_text(previous, FIRST_FAILURE_HEADER).is_none() {
        amqp::set_text(&mut headers, FIRST_FAILURE_HEADER, &now);
    }
    amqp::set_text(&mut headers, LAST_FAILURE_HEADER, &now);
    if amqp::header_text(previous, ORIGINAL_EXCHANGE_HEADER).is_none() {
        amqp::set_text(
            &mut headers,
            ORIGINAL_EXCHANGE_HEADER,
            delivery.exchange.as_str(),
        );
        amqp::set_text(
            &mut headers,
            ORIGINAL_ROUTING_KEY_HEADER,
            delivery.routing_key.as_str(),
        );
    }
    amqp::set_text(&mut headers, REASON_HEADER, class);
    amqp::set_text(&mut headers, ERROR_HEADER, reason);
    let mut history = amqp::header_texts(previous, HISTORY_HEADER);
    history.push(format!("{now} {class}: {reason}"));
    let skip = history.len().saturating_sub(HISTORY_LENGTH);
    amqp::set_texts(&mut headers, HISTORY_HEADER, &history[skip..]);
    headers
}
