//! `lambdex enqueue`: publishes jobs for the workers, each confirmed by the
//! broker, with a progress bar. The batch entry point.
//!
//! Input: image URLs as arguments, or one per line from a file (`-` for
//! stdin); a line starting with `{` is a whole [`Job`] as JSON, for
//! producers that set their own ids and metadata. A URL's job id is the
//! SHA-256 of the URL (first 32 hex digits), so enqueuing an image twice
//! refreshes one document instead of making two.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;

use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use lambdex_proto::Job;
use lapin::types::FieldTable;
use sha2::{Digest as _, Sha256};

use crate::amqp::{self, AmqpError};
use crate::config::Config;
use crate::topology::Topology;

#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// Image URLs to label.
    urls: Vec<String>,
    /// Read URLs (or JSON jobs), one per line, from this file; `-` is stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Priority of URL jobs: 0 is batch work; 1–9 go to the priority lane.
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Metadata for URL jobs, copied into their documents (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    metadata: Vec<(String, String)>,
    /// The settings file (as `lambdex worker`'s).
    #[arg(long, env = "LAMBDEX_CONFIG")]
    config: Option<PathBuf>,
}

fn parse_meta(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("nothing to enqueue: give URLs or --file")]
    Nothing,
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
}

/// The job id of a URL job.
pub fn job_id_of(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The jobs the arguments describe, validated, before anything is sent.
pub fn jobs_of(args: &EnqueueArgs) -> Result<Vec<Job>, EnqueueError> {
    let metadata: BTreeMap<String, String> = args.metadata.iter().cloned().collect();
    let url_job = |url: &str, line: usize| {
        let mut job = Job::new(job_id_of(url), url);
        job.priority = args.priority;
        job.metadata.clone_from(&metadata);
        job.validate()
            .map(|()| job)
            .map_err(|error| EnqueueError::BadLine {
                line,
                reason: error.to_string(),
            })
    };
    let mut jobs = Vec::new();
    for (i, url) in args.urls.iter().enumerate() {
        jobs.push(url_job(url, i + 1)?);
    }
    if let Some(file) = &args.file {
        let name = file.display().to_string();
        let reader: Box<dyn std::io::BufRead> = if name == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let opened = std::fs::File::open(file)
                .map_err(|error| EnqueueError::Read(name.clone(), error))?;
            Box::new(std::io::BufReader::new(opened))
        };
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|error| EnqueueError::Read(name.clone(), error))?;
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let job = if text.starts_with('{') {
                Job::from_slice(text.as_bytes()).map_err(|error| EnqueueError::BadLine {
                    line: i + 1,
                    reason: error.to_string(),
                })?
            } else {
                url_job(text, i + 1)?
            };
            jobs.push(job);
        }
    }
    if jobs.is_empty() {
        return Err(EnqueueError::Nothing);
    }
    Ok(jobs)
}

/// Publishes `jobs`, `queue.publish_window` awaiting confirmation at once.
pub async fn publish(config: &Config, jobs: Vec<Job>) -> Result<(), AmqpError> {
    let topology = Topology::new(&config.queue);
    let connection = amqp::connect(&config.queue.url, "lambdex enqueue").await?;
    let channel = amqp::confirmed_channel(&connection).await?;
    topology.declare(&channel).await?;

    let progress = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs confirmed ({per_sec}, {eta} left)")
            .expect("a valid template"),
    );
    let exchange = topology.jobs_exchange.as_str();
    let mut published = futures::stream::iter(jobs)
        .map(|job| {
            let channel = &channel;
            async move {
                let payload = serde_json::to_vec(&job).expect("a job serialises");
                amqp::publish(
                    channel,
                    exchange,
                    Topology::routing_key(job.priority),
                    &payload,
                    FieldTable::default(),
                )
                .await
                .map(|()| job.job_id)
            }
        })
        .buffer_unordered(config.queue.publish_window);
    while let Some(result) = published.next().await {
        result?;
        progress.inc(1);
    }
    progress.finish();
    drop(published);
    connection.close(200, "done").await?;
    Ok(())
}
