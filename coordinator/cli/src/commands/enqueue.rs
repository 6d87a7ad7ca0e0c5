//! `lambdex enqueue`: publishes jobs for the workers, each confirmed by the
//! broker, with a progress bar. The batch entry point.
//!
//! Input: image URLs as arguments, or one per line from a file (`-` for
//! stdin); a line starting with `{` is a whole [`Job`] as JSON, for
//! producers that set their own ids and metadata.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use lambdex::config::Config;
use lambdex::queue::enqueue::{job_id_of, publish};
use lambdex_proto::{Job, JobLimits};

use super::ConfigArgs;
use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    jobs: EnqueueArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

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
}

fn parse_meta(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// `at` is "argument N" or "FILE line N".
    #[error("{at}: {reason}")]
    BadJob { at: String, reason: String },
    #[error("nothing to enqueue: give URLs or --file")]
    Nothing,
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
}

/// The jobs the arguments describe, validated within `limits`, before
/// anything is sent.
pub fn jobs_of(args: &EnqueueArgs, limits: &JobLimits) -> Result<Vec<Job>, EnqueueError> {
    let metadata: BTreeMap<String, String> = args.metadata.iter().cloned().collect();
    let url_job = |url: &str, at: String| {
        let mut job = Job::new(job_id_of(url), url);
        job.priority = args.priority;
        job.metadata.clone_from(&metadata);
        job.validate_within(limits)
            .map(|()| job)
            .map_err(|error| EnqueueError::BadJob {
                at,
                reason: error.to_string(),
            })
    };
    let mut jobs = Vec::new();
    for (i, url) in args.urls.iter().enumerate() {
        jobs.push(url_job(url, format!("argument {}", i + 1))?);
    }
    if let Some(file) = &args.file {
        let stdin = file.as_os_str() == "-";
        let name = if stdin {
            "stdin".to_owned()
        } else {
            file.display().to_string()
        };
        let reader: Box<dyn std::io::BufRead> = if stdin {
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
                Job::from_slice_within(text.as_bytes(), limits).map_err(|error| {
                    EnqueueError::BadJob {
                        at: format!("{name} line {}", i + 1),
                        reason: error.to_string(),
                    }
                })?
            } else {
                url_job(text, format!("{name} line {}", i + 1))?
            };
            jobs.push(job);
        }
    }
    if jobs.is_empty() {
        return Err(EnqueueError::Nothing);
    }
    Ok(jobs)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config: Config = args.config.load()?;
    let jobs = jobs_of(&args.jobs, &config.jobs).map_err(|error| UsageError(error.to_string()))?;
    let progress = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs confirmed ({per_sec}, {eta} left)")
            .expect("a valid template"),
    );
    publish(&config, jobs, || progress.inc(1)).await?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(urls: &[&str], file: Option<PathBuf>) -> EnqueueArgs {
        EnqueueArgs {
            urls: urls.iter().map(|url| (*url).to_owned()).collect(),
            file,
            priority: 3,
            metadata: vec![("owner_id".to_owned(), "4411".to_owned())],
        }
    }

    fn jobs_of_default(args: &EnqueueArgs) -> Result<Vec<Job>, EnqueueError> {
        jobs_of(args, &JobLimits::default())
    }

    #[test]
    fn urls_and_lines_become_jobs_with_stable_ids() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("jobs.txt");
        let own = r#"{"schema_version": 1, "job_id": "mine", "image_url": "https://a.example/2.jpg", "submitted_at": "2026-11-28T09:00:00Z"}"#;
        std::fs::write(
            &file,
            format!("# a comment\n\nhttps://a.example/1.jpg\n{own}\n"),
        )
        .expect("written");
        let jobs = jobs_of_default(&args(&["https://a.example/0.jpg"], Some(file))).expect("valid");
        let ids: Vec<&str> = jobs.iter().map(|job| job.job_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                job_id_of("https://a.example/0.jpg").as_str(),
                job_id_of("https://a.example/1.jpg").as_str(),
                "mine"
            ]
        );
        assert_eq!(ids[0].len(), 32);
        assert_ne!(ids[0], ids[1]);
        // URL jobs take the flags; a JSON job keeps its own fields.
        assert_eq!(jobs[0].priority, 3);
        assert_eq!(jobs[1].metadata["owner_id"], "4411");
        assert_eq!(jobs[2].priority, 0);
        assert!(jobs[2].metadata.is_empty());
    }

    #[test]
    fn a_bad_url_or_line_is_named_and_nothing_is_an_error() {
        let error = jobs_of_default(&args(
            &["https://a.example/0.jpg", "file:///etc/passwd"],
            None,
        ))
        .expect_err("not http");
        assert!(error.to_string().starts_with("argument 2: "), "{error}");
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("jobs.txt");
        std::fs::write(&file, "https://a.example/1.jpg\n{\"job_id\": 1}\n").expect("written");
        let error = jobs_of_default(&args(&[], Some(file))).expect_err("not a job");
        assert!(error.to_string().contains("jobs.txt line 2: "), "{error}");
        assert!(matches!(
            jobs_of_default(&args(&[], None)),
            Err(EnqueueError::Nothing)
        ));
    }
}
