//! `[pipeline]`: jobs as a whole.

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
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_jobs_in_flight: 1000,
            partial_results: false,
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
        Ok(())
    }
}
