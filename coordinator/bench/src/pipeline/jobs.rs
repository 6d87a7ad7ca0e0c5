//! Running jobs through the pipeline, each its own task as in the worker,
//! and what the run took: each stage's mean time, and the rate while the
//! pipeline was full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use lambdex::pipeline::Pipeline;
use lambdex_proto::{Job, Status};

/// What a run of jobs took.
pub struct Run {
    /// Each stage's mean time in milliseconds over the jobs, by stage name.
    pub stages: BTreeMap<String, f64>,
    /// When each job ended, earliest first.
    pub ends: Vec<Instant>,
}

impl Run {
    /// Jobs a second while `concurrency` jobs were in flight: from the end
    /// of the first `concurrency` jobs to the last end before fewer were
    /// left to start, so neither the start nor the tail counts. `None` when
    /// the run is too short to have such a stretch.
    pub fn steady_rate(&self, concurrency: usize) -> Option<f64> {
        let (first, last) = (concurrency, self.ends.len().checked_sub(concurrency)?);
        if last <= first {
            return None;
        }
        let seconds = (self.ends[last - 1] - self.ends[first - 1]).as_secs_f64();
        (seconds > 0.0).then(|| (last - first) as f64 / seconds)
    }
}

/// Runs `jobs` jobs, `concurrency` at a time.
pub async fn run_jobs(
    pipeline: &Arc<Pipeline>,
    url: &str,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let mut done = futures::stream::iter(0..jobs)
        .map(|i| {
            let pipeline = Arc::clone(pipeline);
            let job = Job::new(format!("bench-{i}"), url);
            tokio::spawn(async move { (pipeline.process(&job).await, Instant::now()) })
        })
        .buffer_unordered(concurrency);
    // Each document is read as it comes and dropped, so the peak memory
    // is the pipeline's, not a pile of finished documents.
    let mut stages = BTreeMap::<String, f64>::new();
    let mut ends = Vec::with_capacity(jobs);
    let (mut failed, mut first_failure) = (0, None);
    while let Some(next) = done.next().await {
        let (doc, end) = next.context("a job's task panicked")?;
        ends.push(end);
        if doc.status != Status::Ok {
            failed += 1;
            first_failure.get_or_insert(doc.failure);
            continue;
        }
        for timing in doc.timings {
            *stages.entry(timing.stage).or_default() += timing.ms;
        }
    }
    if let Some(failure) = first_failure {
        bail!("{failed} of {jobs} jobs did not succeed; the first: {failure:?}");
    }
    for total in stages.values_mut() {
        *total /= jobs.max(1) as f64;
    }
    ends.sort_unstable();
    Ok(Run { stages, ends })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(ends_ms: &[u64]) -> Run {
        let start = Instant::now();
        Run {
            stages: BTreeMap::new(),
            ends: ends_ms
                .iter()
                .map(|ms| start + Duration::from_millis(*ms))
                .collect(),
        }
    }

    #[test]
    fn the_steady_rate_leaves_out_the_first_and_the_last_jobs_in_flight() {
        // Two in flight: a slow start, a job a millisecond, a slow tail.
        let run = run(&[50, 60, 61, 62, 63, 64, 65, 66, 200, 300]);
        // From the 2nd end (60 ms) to the 8th (66 ms): 6 jobs in 6 ms.
        let rate = run.steady_rate(2).expect("a steady stretch");
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(run.steady_rate(5), None, "no more than 2 C jobs");
    }
}
