//! `[retry]`: retries of every remote call.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Retries of every remote call: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per function call, the first included.
    pub max_attempts: usize,
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// No wait between attempts ends past this much time since the first
    /// attempt: a retry that could not start by then is not waited for.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// The longest a server's `Retry-After` (a 429's, a throttled
    /// invocation's `retryAfterSeconds`) is honoured; a longer one is
    /// waited only this long, so a hostile or broken server cannot park a
    /// job.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// The retry budget: retries may add this fraction of a function's
    /// recent calls…
    pub budget_ratio: f32,
    /// …plus this many retries a second, whatever the traffic.
    pub budget_min_per_second: u32,
    /// The window the budget counts calls over.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "retry.max_attempts must be at least 1",
            ));
        }
        if self.min_delay > self.max_delay {
            return Err(ConfigError::invalid(
                "retry.min_delay is over retry.max_delay",
            ));
        }
        if !(0.0..=1000.0).contains(&self.budget_ratio) {
            return Err(ConfigError::invalid(
                "retry.budget_ratio must be between 0 and 1000",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window) {
            return Err(ConfigError::invalid(
                "retry.budget_window must be between 1s and 60s",
            ));
        }
        Ok(())
    }
}
