//! `[fetch]`: downloading images.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Downloading images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// For the whole download, body included, per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Larger bodies are abandoned as soon as the cap is passed.
    pub max_bytes: u64,
    pub max_redirects: usize,
    /// Networks the SSRF guard lets through although they are private,
    /// loopback… (e.g. `127.0.0.0/8` for a local image server). Empty by
    /// default: only public addresses are fetched.
    pub allow: Vec<IpNet>,
    /// Attempts per download (transient errors, 5xx and 429 only).
    pub max_attempts: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_bytes: 50 * 1024 * 1024,
            max_redirects: 5,
            allow: Vec::new(),
            max_attempts: 3,
        }
    }
}

impl FetchConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "fetch.max_attempts must be at least 1",
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "fetch.timeout and fetch.connect_timeout must be more than 0",
            ));
        }
        Ok(())
    }
}
