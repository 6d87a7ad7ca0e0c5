//! `[cost]`: prices for the estimated cost of a job.

use serde::{Deserialize, Serialize};

/// Prices for the estimated cost of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostConfig {
    /// USD per GB-second of billed duration (AWS x86 list price, first tier).
    pub usd_per_gb_second: f64,
    /// USD per million requests.
    pub usd_per_million_requests: f64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            usd_per_gb_second: 0.000_016_666_7,
            usd_per_million_requests: 0.20,
        }
    }
}
