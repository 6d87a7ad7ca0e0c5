//! `[metrics]`: the worker's own `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `/metrics` of `lambdex worker` (the admin trigger serves its own on
/// `admin.listen`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the worker serves `/metrics` and `/healthz` (unset: not
    /// served; each worker on a host needs its own port).
    pub listen: Option<SocketAddr>,
    /// A request's head must arrive within this; idle connections close
    /// after it too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open connections at most (a scraper and a probe need a few).
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        if self.header_read_timeout.is_zero() || self.max_connections == 0 {
            return Err(super::ConfigError::invalid(
                "metrics.header_read_timeout and metrics.max_connections must be above zero",
            ));
        }
        Ok(())
    }
}
