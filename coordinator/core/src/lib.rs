//! lambdex's coordinator: it takes a job, downloads its image, calls the
//! face-crop function, fans the crops out to one classifier function per
//! model, and joins the answers into one document per image.
//!
//! One folder per stage a job passes through, in order:
//!
//! - [`config`]: every setting, one file per section, each validating
//!   itself; from a TOML file and `LAMBDEX__…` variables.
//! - [`queue`]: where batch jobs come from and where failed ones go —
//!   the RabbitMQ [`queue::topology`], the [`queue::worker`] that consumes
//!   jobs and settles each delivery, [`queue::enqueue`] and the dead-letter
//!   walks of [`queue::dlq`].
//! - [`pipeline`]: one job through the flow — [`pipeline::fetch`] behind
//!   the [`pipeline::ssrf`] guard, [`pipeline::prepare`], the
//!   [`pipeline::crop`] stage, [`pipeline::fanout`] to the classifiers
//!   (calls shared across jobs by [`pipeline::batcher`]), and
//!   [`pipeline::aggregate`] with the [`pipeline::billing`] of the calls.
//! - [`lambda`]: calling a function the way production must — the SDK
//!   [`lambda::client`], the [`lambda::caller`] (limits, retries, breaker,
//!   fallback), one [`lambda::invoke`] per attempt, the [`lambda::breaker`].
//! - [`sink`]: the documents into Elasticsearch, in bulk, idempotently.
//!
//! Around them: [`admin`], the HTTP trigger for ad-hoc requests; [`retry`],
//! the backoff policy every remote call shares; [`metrics`], the Prometheus
//! metrics the worker and the admin trigger serve.
//!
//! The `lambdex` command (`coordinator/cli`) wires these together; the
//! benches (`coordinator/bench`) live outside this crate, so the worker
//! links none of their dependencies.

pub mod admin;
pub mod config;
pub mod lambda;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod sink;
