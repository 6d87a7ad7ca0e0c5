//! `[elasticsearch]`: where the documents go.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, CredentialUrl, Secret};

/// Elasticsearch: where the documents go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The cluster's URL (one node or a load balancer in front of it;
    /// never shown with a password it carries).
    pub url: CredentialUrl,
    /// The index (or write alias) documents go to; the index template
    /// lambdex installs matches this name.
    pub index: String,
    /// Install the index template at start (needs the `manage_index_templates`
    /// privilege; turn off when the template is deployed from `infra/`).
    pub install_template: bool,
    /// Basic authentication, when set (best from `LAMBDEX__ELASTICSEARCH__PASSWORD`).
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// An encoded API key (the `encoded` value Elasticsearch returns),
    /// instead of a user and password.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Timeout of one request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A bulk request is sent when it holds this many documents…
    pub bulk_max_docs: usize,
    /// …or this many bytes of documents…
    pub bulk_max_bytes: usize,
    /// …or when its first document has waited this long. Short: a worker
    /// holds only `queue.prefetch` jobs, so every millisecond a document
    /// waits here is taken from its throughput.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Bulk requests in flight at once (a cluster indexes them in
    /// parallel; more than a few per worker only queues on its side).
    pub bulk_concurrency: usize,
    /// Backoff between attempts at a bulk request or at the documents it
    /// could not take yet (429, 5xx, the cluster down); it is retried until
    /// it succeeds: no job is acknowledged before its document is stored.
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".into(),
            index: "lambdex-docs".to_owned(),
            install_template: true,
            username: None,
            password: None,
            api_key: None,
            request_timeout: Duration::from_secs(30),
            bulk_max_docs: 500,
            bulk_max_bytes: 5 * 1024 * 1024,
            flush_interval: Duration::from_millis(50),
            bulk_concurrency: 4,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

impl ElasticsearchConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.index.trim().is_empty() {
            return Err(ConfigError::invalid(
                "elasticsearch.index must not be empty",
            ));
        }
        if self.retry_min_delay > self.retry_max_delay {
            return Err(ConfigError::invalid(
                "elasticsearch.retry_min_delay is over elasticsearch.retry_max_delay",
            ));
        }
        if self.bulk_max_docs == 0 || self.bulk_max_bytes == 0 || self.bulk_concurrency == 0 {
            return Err(ConfigError::invalid(
                "elasticsearch.bulk_max_docs, bulk_max_bytes and bulk_concurrency must be at least 1",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::invalid(
                "elasticsearch.password is set without elasticsearch.username",
            ));
        }
        Ok(())
    }
}
