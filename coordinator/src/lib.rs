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
//! - [`fanout`]: every model over the crops, in batches, all at once;
//! - [`aggregate`]: the answers joined into a [`lambdex_proto::PredictionDoc`],
//!   with the [`billing`] of its invocations.
//! - [`input`]: images named on the command line; [`render`]: documents
//!   printed for people.
//!
//! [`bench`] measures the models and functions, [`bench_pipeline`] the
//! coordinator itself.

pub mod aggregate;
pub mod bench;
pub mod bench_pipeline;
pub mod billing;
pub mod breaker;
pub mod caller;
pub mod config;
pub mod fanout;
pub mod fetch;
pub mod input;
pub mod invoke;
pub mod lambda_client;
pub mod pipeline;
pub mod prepare;
pub mod render;
pub mod retry;
pub mod ssrf;
