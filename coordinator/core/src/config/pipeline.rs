//! `[pipeline]`: jobs as a whole.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Jobs as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Jobs processed at once; more wait their turn.
    pub max_jobs_in_flight: usize,
    /// When a model fails for good: `false` fails the job, `true` stores
    /// the other models' results with status `partial`.
    pub partial_results: bool,
    /// The most one job may take, download to document, once it has its
    /// slot, not counting its waits for memory: past it the job fails as
    /// retryable (`job_timeout`) and lets go of everything it holds.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// The most one job may wait for its share of `memory_budget`, all
    /// its waits together: past it the job fails as `job_timeout` too.
    /// With `job_timeout`, well under the broker's consumer timeout
    /// (30 min by default), which would take the delivery back.
    #[serde(with = "humantime_serde")]
    pub max_memory_wait: Duration,
    /// Bytes the jobs' images may hold together: downloads (and the
    /// request's copies of them) and images decoded to be scaled. A job
    /// waits for its share; one larger than the whole runs alone.
    pub memory_budget: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_jobs_in_flight: 1000,
            partial_results: false,
            job_timeout: Duration::from_secs(5 * 60),
            max_memory_wait: Duration::from_secs(15 * 60),
            memory_budget: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl PipelineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_jobs_in_flight == 0 {
            return Err(ConfigError::invalid(
                "pipeline.max_jobs_in_flight must be at least 1",
            ));
        }
        if self.job_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "pipeline.job_timeout must be more than 0",
            ));
        }
        if self.max_memory_wait.is_zero() {
            return Err(ConfigError::invalid(
                "pipeline.max_memory_wait must be more than 0",
            ));
        }
        if self.memory_budget < 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "pipeline.memory_budget must be at least 16 MiB",
            ));
        }
        Ok(())
    }
}
