//! A job's deadline: `pipeline.job_timeout` of its own time, the time it
//! waits for memory (the other jobs' time) not counted, and at most
//! `pipeline.max_memory_wait` of that. A burst of large images then waits
//! its turn instead of timing out in the queue it forms; every wait still
//! ends.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PipelineConfig;
use crate::pipeline::budget::{JobMemory, Waited};

/// Why a job was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Late {
    #[error("the job took longer than pipeline.job_timeout ({0:?})")]
    JobTimeout(Duration),
    #[error("the job waited longer than pipeline.max_memory_wait ({0:?}) for memory")]
    MemoryWait(Duration),
}

/// `work`'s output, unless it runs past its deadline.
pub async fn within<T>(
    limits: &PipelineConfig,
    memory: &JobMemory,
    work: impl Future<Output = T>,
) -> Result<T, Late> {
    let started = Instant::now();
    tokio::pin!(work);
    loop {
        // Enabled before the wait is read: a change in between still wakes.
        let changed = memory.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let Waited { total, waiting } = memory.waited();
        // All of it used up ends the job: a zero left would wake at once
        // and read the same total again (time stands still in between).
        let wait_left = limits.max_memory_wait.saturating_sub(total);
        if wait_left.is_zero() {
            return Err(Late::MemoryWait(limits.max_memory_wait));
        }
        // While it waits, only the wait's own limit runs.
        let deadline = if waiting {
            Instant::now() + wait_left
        } else {
            started + limits.job_timeout + total
        };
        tokio::select! {
            output = &mut work => return Ok(output),
            () = &mut changed => {}
            () = tokio::time::sleep_until(deadline) => {
                if !waiting {
                    return Err(Late::JobTimeout(limits.job_timeout));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::budget::MemoryBudget;

    fn limits(job_timeout: u64, max_memory_wait: u64) -> PipelineConfig {
        PipelineConfig {
            job_timeout: Duration::from_secs(job_timeout),
            max_memory_wait: Duration::from_secs(max_memory_wait),
            ..PipelineConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_past_its_own_time_is_stopped() {
        let budget = MemoryBudget::new(1 << 20);
        let memory = JobMemory::new(&budget);
        let work = tokio::time::sleep(Duration::from_secs(11));
        let late = within(&limits(10, 60), &memory, work).await;
        assert_eq!(late, Err(Late::JobTimeout(Duration::from_secs(10))));
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_a_job_waits_for_memory_is_not_its_own() {
        let budget = MemoryBudget::new(1024);
        let held = budget.reserve(1024).await;
        let memory = JobMemory::new(&budget);
        let work = async {
            // 8 s of its own, 30 s waiting for another job's memory, 8 s
            // more: 16 s of its own within a 10 s timeout would not do.
            tokio::time::sleep(Duration::from_secs(8)).await;
            let _mine = memory.reserve(1024).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        };
        let release = async {
            tokio::time::sleep(Duration::from_secs(38)).await;
            drop(held);
        };
        let limits = limits(10, 60);
        let (done, ()) = tokio::join!(within(&limits, &memory, work), release);
        assert_eq!(done, Ok("done"));
        assert!(memory.waited().total >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_waiting_for_memory_past_its_limit_is_stopped() {
        let budget = MemoryBudget::new(1024);
        let _held = budget.reserve(1024).await;
        let memory = JobMemory::new(&budget);
        let work = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            memory.reserve(1024).await;
        };
        let started = Instant::now();
        let late = within(&limits(10, 60), &memory, work).await;
        assert_eq!(late, Err(Late::MemoryWait(Duration::from_secs(60))));
        assert_eq!(started.elapsed().as_secs(), 62);
        assert!(!memory.waited().waiting, "the dropped wait ended");
    }
}
