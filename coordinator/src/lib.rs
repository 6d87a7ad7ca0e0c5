//! lambdex's coordinator: it takes a job, downloads its image, calls the
//! face-crop function, fans the crops out to one classifier function per
//! model, and joins the answers into one document per image.
//!
//! The modules, in the order a job passes through them:
//!
//! - [`config`]: every setting, from a TOML file and `LAMBDEX__…` variables.
//! - [`pipeline`]: one job through the whole path, using
//! - [`fetch`]: the download, behind the [`ssrf`] guard;
//! - [`prepare`]: the header checked, the image scaled to fit the request;
//! - [`caller`]: each function called with its limits, [`retry`] policy,
//!   [`breaker`] and fallback, one [`invoke`] per attempt over the client
//!   from [`lambda_client`];
//! - [`face_crop`]: the image's faces, its call shared with other jobs'
//!   images;
//! - [`fanout`]: every model over the crops, in batches, all at once;
//!   [`batcher`] lets images, and crops, of several jobs share a call;
//! - [`aggregate`]: the answers joined into a [`lambdex_proto::PredictionDoc`],
//!   with the [`billing`] of its invocations.
//!
//! Around it, the queue worker: [`worker`] consumes jobs from RabbitMQ
//! (over [`amqp`], on the queues [`topology`] declares), runs the pipeline,
//! and writes each document through the Elasticsearch [`sink`];
//! [`enqueue`] publishes jobs; [`dlq`] reads and replays the dead letters
//! ([`dlq_cli`]: `lambdex dlq`).
//!
//! [`admin`] is the HTTP trigger for ad-hoc requests; [`metrics`] the
//! Prometheus metrics it and the worker serve.
//!
//! - [`input`]: images named on the command line; [`render`]: documents
//!   printed for people.
//!
//! [`bench`] measures the models and functions, [`bench_pipeline`] the
//! coordinator itself (on a core of its own with [`affinity`]), [`bench_worker`] the queue path end to end, and
//! [`power`] what a prediction costs at each memory size; each names the
//! [`host`] it ran on.

pub mod admin;
pub mod affinity;
pub mod aggregate;
pub mod amqp;
pub mod batcher;
pub mod bench;
pub mod bench_pipeline;
pub mod bench_worker;
pub mod billing;
pub mod breaker;
pub mod caller;
pub mod config;
pub mod dlq;
pub mod dlq_cli;
pub mod enqueue;
pub mod face_crop;
pub mod fanout;
pub mod fetch;
pub mod host;
pub mod input;
pub mod invoke;
pub mod lambda_client;
pub mod metrics;
pub mod pipeline;
pub mod power;
pub mod prepare;
pub mod render;
pub mod retry;
pub mod sink;
pub mod ssrf;
pub mod topology;
pub mod worker;
