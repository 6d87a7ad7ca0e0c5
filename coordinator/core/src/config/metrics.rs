//! `[metrics]`: the worker's own `/metrics`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `/metrics` of `lambdex worker` (the admin trigger serves its own on
/// `admin.listen`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the worker serves `/metrics` and `/healthz` (unset: not
    /// served; each worker on a host needs its own port).
    pub listen: Option<SocketAddr>,
}
