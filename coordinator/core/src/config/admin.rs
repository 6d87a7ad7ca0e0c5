//! `[admin]`: the HTTP trigger.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `lambdex admin`: the HTTP trigger for ad-hoc requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Who may call `/v1`: each a name (for logs and the rate limit) and
    /// the SHA-256 of the token, in hex (`lambdex admin hash-token`). The
    /// server refuses to start without one.
    pub tokens: Vec<AdminToken>,
    /// Requests per second per token…
    pub rate_per_token: NonZeroU32,
    /// …with bursts of up to this many.
    pub burst_per_token: NonZeroU32,
    /// Largest request body: an uploaded image, or a list of jobs.
    pub max_body_bytes: usize,
    /// Most URLs one `POST /v1/jobs` takes.
    pub max_urls_per_request: usize,
    /// How long `POST /v1/predictions` waits for the pipeline before 504.
    #[serde(with = "humantime_serde")]
    pub prediction_timeout: Duration,
    /// How long each `/readyz` check may take.
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            rate_per_token: NonZeroU32::new(10).expect("not zero"),
            burst_per_token: NonZeroU32::new(20).expect("not zero"),
            max_body_bytes: 20 * 1024 * 1024,
            max_urls_per_request: 1000,
            prediction_timeout: Duration::from_secs(60),
            readiness_timeout: Duration::from_secs(5),
        }
    }
}

/// One admin token, stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

impl AdminConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for token in &self.tokens {
            if token.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "admin.tokens: a token has an empty name",
                ));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(format!(
                    "admin.tokens {:?}: sha256 must be 64 hex digits (`lambdex admin hash-token`)",
                    token.name
                )));
            }
        }
        if self.max_body_bytes == 0 || self.max_urls_per_request == 0 {
            return Err(ConfigError::invalid(
                "admin.max_body_bytes and admin.max_urls_per_request must be at least 1",
            ));
        }
        Ok(())
    }
}
