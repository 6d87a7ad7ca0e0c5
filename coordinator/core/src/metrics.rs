//! Prometheus metrics, shared by the worker and the admin trigger: the
//! [`metrics`] facade records them where things happen, and
//! [`Metrics::render`] prints them in Prometheus' text format for
//! `/metrics`.
//!
//! Every name is here, so the set stays one list:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `lambdex_invocations_total` | function | Lambda invocations (attempts, retries and fallbacks included) |
//! | `lambdex_invocation_errors_total` | function, class | failed invocations by error class |
//! | `lambdex_throttles_total` | function | invocations refused with 429 |
//! | `lambdex_retries_total` | function | retries |
//! | `lambdex_breaker_open` | function | 1 while the function's breaker is open |
//! | `lambdex_invocation_duration_seconds` | function | invocation latency, histogram |
//! | `lambdex_billed_milliseconds_total` | function | billed duration from `REPORT` lines |
//! | `lambdex_estimated_cost_usd` | | the jobs' estimated Lambda cost since start (only grows) |
//! | `lambdex_predictions_total` | status | documents made, by status |
//! | `lambdex_jobs_total` | outcome | the worker's deliveries: stored, requeued, outage (requeued for an outage, no trip spent), dead_lettered, released, panicked |
//! | `lambdex_worker_paused` | | 1 while the worker takes no jobs for an outage |
//! | `lambdex_queue_messages` | queue | messages ready, read when scraped |

use std::sync::OnceLock;
use std::time::Duration;

use lambdex_proto::FailureClass;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const INVOCATIONS: &str = "lambdex_invocations_total";
const INVOCATION_ERRORS: &str = "lambdex_invocation_errors_total";
const THROTTLES: &str = "lambdex_throttles_total";
const RETRIES: &str = "lambdex_retries_total";
const BREAKER_OPEN: &str = "lambdex_breaker_open";
const INVOCATION_DURATION: &str = "lambdex_invocation_duration_seconds";
const BILLED_MS: &str = "lambdex_billed_milliseconds_total";
const COST: &str = "lambdex_estimated_cost_usd";
const PREDICTIONS: &str = "lambdex_predictions_total";
const JOBS: &str = "lambdex_jobs_total";
const QUEUE_MESSAGES: &str = "lambdex_queue_messages";
const WORKER_PAUSED: &str = "lambdex_worker_paused";

/// Invocation latency buckets, in seconds: warm calls of a few ms up to
/// Lambda's longest synchronous timeouts.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histograms are folded (the exporter's upkeep).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static INSTALLED: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    /// The process-wide recorder. Before this is called, recording does
    /// nothing (the facade's default), so a command without `/metrics`
    /// pays nothing.
    pub fn install() -> Self {
        INSTALLED
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full(INVOCATION_DURATION.to_owned()),
                        &DURATION_BUCKETS,
                    )
                    .expect("the buckets are not empty")
                    .build_recorder();
                let handle = recorder.handle();
                // Another recorder only if a test installed one first.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                Self { handle }
            })
            .clone()
    }

    /// Everything recorded, in Prometheus' text format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        INVOCATIONS,
        "Lambda invocations, retries and fallbacks included."
    );
    describe_counter!(
        INVOCATION_ERRORS,
        "Failed Lambda invocations by error class."
    );
    describe_counter!(THROTTLES, "Invocations Lambda refused with 429.");
    describe_counter!(RETRIES, "Invocations retried.");
    describe_gauge!(
        BREAKER_OPEN,
        "1 while the function's circuit breaker is open."
    );
    describe_histogram!(
        INVOCATION_DURATION,
        Unit::Seconds,
        "Lambda invocation latency as the coordinator sees it."
    );
    describe_counter!(
        BILLED_MS,
        "Billed duration from the functions' REPORT lines."
    );
    describe_gauge!(
        COST,
        "Estimated Lambda cost of the jobs since start, at the configured prices."
    );
    describe_counter!(PREDICTIONS, "Documents made, by status.");
    describe_counter!(JOBS, "Queue deliveries by how they ended.");
    describe_gauge!(QUEUE_MESSAGES, "Messages ready in the queue, when scraped.");
    describe_gauge!(
        WORKER_PAUSED,
        "1 while the worker takes no jobs for an outage (a function down, Elasticsearch refusing it)."
    );
}

/// One invocation ended: `error` is its class when it failed.
pub fn invocation(function: &str, elapsed: Duration, error: Option<&FailureClass>) {
    let function = function.to_owned();
    metrics::counter!(INVOCATIONS, "function" => function.clone()).increment(1);
    metrics::histogram!(INVOCATION_DURATION, "function" => function.clone())
        .record(elapsed.as_secs_f64());
    if let Some(class) = error {
        if *class == FailureClass::Throttled {
            metrics::counter!(THROTTLES, "function" => function.clone()).increment(1);
        }
        metrics::counter!(INVOCATION_ERRORS, "function" => function, "class" => class.to_string())
            .increment(1);
    }
}

pub fn retry(function: &str) {
    metrics::counter!(RETRIES, "function" => function.to_owned()).increment(1);
}

pub fn breaker(function: &str, open: bool) {
    metrics::gauge!(BREAKER_OPEN, "function" => function.to_owned()).set(f64::from(u8::from(open)));
}

pub fn billed(function: &str, billed_ms: u64) {
    metrics::counter!(BILLED_MS, "function" => function.to_owned()).increment(billed_ms);
}

/// A document was made.
pub fn prediction(status: &str, cost_usd: Option<f64>) {
    metrics::counter!(PREDICTIONS, "status" => status.to_owned()).increment(1);
    if let Some(cost) = cost_usd {
        // The facade's counters are integers: a fraction of a cent adds
        // to a gauge that only grows.
        metrics::gauge!(COST).increment(cost);
    }
}

/// Deliveries ended (`stored`, `requeued`, `outage`, `dead_lettered`,
/// `released`, `panicked`).
pub fn jobs(outcome: &'static str, count: u64) {
    metrics::counter!(JOBS, "outcome" => outcome).increment(count);
}

/// The worker stopped, or went back to, taking jobs.
pub fn worker_paused(paused: bool) {
    metrics::gauge!(WORKER_PAUSED).set(f64::from(u8::from(paused)));
}

pub fn queue_messages(queue: &str, ready: u32) {
    metrics::gauge!(QUEUE_MESSAGES, "queue" => queue.to_owned()).set(f64::from(ready));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_render_in_the_text_format() {
        let metrics = Metrics::install();
        invocation("unit-test-fn", Duration::from_millis(30), None);
        invocation(
            "unit-test-fn",
            Duration::from_millis(70),
            Some(&FailureClass::Throttled),
        );
        billed("unit-test-fn", 125);
        let text = metrics.render();
        assert!(
            text.contains(r#"lambdex_invocations_total{function="unit-test-fn"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"lambdex_throttles_total{function="unit-test-fn"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"lambdex_invocation_duration_seconds_bucket{function="unit-test-fn",le="0.05"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"lambdex_billed_milliseconds_total{function="unit-test-fn"} 125"#),
            "{text}"
        );
        assert!(text.contains("# HELP lambdex_invocations_total"), "{text}");
    }
}
