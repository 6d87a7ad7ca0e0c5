//! `[admin]`: the HTTP trigger.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `lambdex admin`: the HTTP trigger for ad-hoc requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Who may call `/v1`: each a name (for logs and the rate limit), the
    /// SHA-256 of the token, in hex (`lambdex admin hash-token`), and what
    /// it may do. The server refuses to start without one.
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
    /// How long `/readyz`'s answer and `/metrics`' queue depths are reused:
    /// however often they are asked for, the broker, Elasticsearch and the
    /// function are asked at most once per this.
    #[serde(with = "humantime_serde")]
    pub readiness_cache: Duration,
    /// A request's head (line and headers) must arrive within this; an idle
    /// kept-alive connection is closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Every request but a prediction must be answered within this (body
    /// upload included); a prediction gets this plus `prediction_timeout`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections at most; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// Also append every audit line (who changed what) to this file, one
    /// JSON object per line (unset: the log alone carries them).
    pub audit_log: Option<PathBuf>,
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
            readiness_cache: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            audit_log: None,
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
    /// What the token may do; none unless listed. (Optional in the file
    /// only so that a token without it is refused with a clear reason.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<BTreeSet<Scope>>,
}

impl AdminToken {
    /// Whether the token may do `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|scopes| scopes.contains(&scope))
    }
}

/// What a token may do: each `/v1` route needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /v1/predictions`: label an image now (nothing kept).
    Predict,
    /// `POST /v1/predictions` with `store=true`: write (or overwrite) the
    /// document in Elasticsearch.
    Store,
    /// `POST /v1/jobs`: publish jobs on the priority lane.
    Submit,
    /// `GET /v1/jobs/{id}`, `GET /v1/dead-letters`: read documents, job
    /// states and dead-letter counts.
    Read,
    /// `POST /v1/dead-letters/replay`: replay dead letters (or count them).
    Replay,
}

impl Scope {
    pub const ALL: [Self; 5] = [
        Self::Predict,
        Self::Store,
        Self::Submit,
        Self::Read,
        Self::Replay,
    ];

    /// Every scope's name, for messages.
    pub fn names() -> String {
        let all: Vec<&str> = Self::ALL.iter().map(|scope| scope.as_str()).collect();
        all.join(", ")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Store => "store",
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Replay => "replay",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not a scope: pick from {}", Self::names()))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
            if token.scopes.is_none() {
                return Err(ConfigError::invalid(format!(
                    "admin.tokens {:?}: scopes is missing: list what the token may do, from {}",
                    token.name,
                    Scope::names()
                )));
            }
        }
        let mut names = BTreeSet::new();
        if let Some(twice) = self.tokens.iter().find(|token| !names.insert(&token.name)) {
            return Err(ConfigError::invalid(format!(
                "admin.tokens: two tokens are named {:?} (the name keys logs and the rate limit)",
                twice.name
            )));
        }
        if self.max_body_bytes == 0 || self.max_urls_per_request == 0 || self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "admin.max_body_bytes, admin.max_urls_per_request and admin.max_connections must be at least 1",
            ));
        }
        let timeouts = [
            ("prediction_timeout", self.prediction_timeout),
            ("readiness_timeout", self.readiness_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, timeout)| timeout.is_zero()) {
            return Err(ConfigError::invalid(format!(
                "admin.{name} must be above zero"
            )));
        }
        Ok(())
    }
}
