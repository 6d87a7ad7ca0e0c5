//! `[breaker]`: the circuit breaker of each function.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The circuit breaker of each function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before one probe call may try again.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::invalid(
                "breaker.failure_threshold must be at least 1",
            ));
        }
        Ok(())
    }
}
