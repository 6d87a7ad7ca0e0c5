//! A job: one image to label, as producers publish it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::{ProtoError, SchemaVersion, from_versioned_slice};
use crate::text::{has_user_info, quoted, redacted_url};

/// The highest priority a job may carry (AMQP priorities 0–9; 0 is batch work).
pub const MAX_PRIORITY: u8 = 9;

/// One image to label.
///
/// ```json
/// {"schema_version": 1, "job_id": "post-81723-img-0",
///  "image_url": "https://cdn.example.com/p/81723/0.jpg",
///  "metadata": {"owner_id": "4411", "post_id": "81723"},
///  "priority": 0, "submitted_at": "2026-11-28T09:00:00Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub schema_version: SchemaVersion,
    /// Unique per image; also the stored document's id, so reprocessing a
    /// job overwrites its document instead of adding another.
    pub job_id: String,
    /// Where to fetch the image: an `http` or `https` URL.
    pub image_url: String,
    /// Free-form producer data (owner, post ids…), copied into the document.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// 0 (batch, the default) to [`MAX_PRIORITY`] (most urgent).
    #[serde(default)]
    pub priority: u8,
    pub submitted_at: DateTime<Utc>,
}

/// What a job may carry. Bounded because a job's fields travel on: its
/// URL into error texts and dead-letter headers (which must fit the
/// broker's frame), its metadata into the stored document (which the
/// index must take). The `jobs` settings of the coordinator hold these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobLimits {
    /// The whole message, before it is parsed.
    pub max_message_bytes: usize,
    pub max_job_id_bytes: usize,
    pub max_url_bytes: usize,
    pub max_metadata_entries: usize,
    pub max_metadata_key_bytes: usize,
    pub max_metadata_value_bytes: usize,
    /// Every key and value together.
    pub max_metadata_bytes: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_job_id_bytes: 512,
            max_url_bytes: 4096,
            max_metadata_entries: 64,
            max_metadata_key_bytes: 128,
            max_metadata_value_bytes: 2048,
            max_metadata_bytes: 16 * 1024,
        }
    }
}

/// A job that parsed but cannot be processed as it stands. Each error
/// names the limit it is over (a `jobs` setting).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("job_id is empty")]
    EmptyJobId,
    #[error("image_url {} is not an http(s) URL", quoted(&redacted_url(.0)))]
    NotHttpUrl(String),
    #[error(
        "image_url carries user information (user:password@host): credentials are never sent with a download, and a URL holding them is refused rather than echoed or stored; serve the image without them"
    )]
    CredentialsInUrl,
    #[error("priority {0} is above the maximum of {MAX_PRIORITY}")]
    PriorityTooHigh(u8),
    #[error("the message is {bytes} bytes, over jobs.max_message_bytes ({max})")]
    MessageTooLarge { bytes: usize, max: usize },
    #[error("{field} is {bytes} bytes, over jobs.{setting} ({max})")]
    TooLong {
        field: String,
        bytes: usize,
        setting: &'static str,
        max: usize,
    },
    #[error("metadata has {entries} entries, over jobs.max_metadata_entries ({max})")]
    TooManyMetadataEntries { entries: usize, max: usize },
    #[error(
        "metadata key {} is not a name: letters, digits, `_` and `-` only, not starting with `_`",
        quoted(.0)
    )]
    BadMetadataKey(String),
}

impl Job {
    /// A new job stamped with the current schema version and time.
    pub fn new(job_id: impl Into<String>, image_url: impl Into<String>) -> Self {
        Self {
            schema_version: SchemaVersion::CURRENT,
            job_id: job_id.into(),
            image_url: image_url.into(),
            metadata: BTreeMap::new(),
            priority: 0,
            submitted_at: Utc::now(),
        }
    }

    /// Parses a job as it arrives on the queue, within the default
    /// [`JobLimits`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, JobParseError> {
        Self::from_slice_within(bytes, &JobLimits::default())
    }

    /// Parses a job as it arrives on the queue: its size first, then its
    /// schema version, then its fields.
    pub fn from_slice_within(bytes: &[u8], limits: &JobLimits) -> Result<Self, JobParseError> {
        if bytes.len() > limits.max_message_bytes {
            return Err(JobError::MessageTooLarge {
                bytes: bytes.len(),
                max: limits.max_message_bytes,
            }
            .into());
        }
        let job: Self = from_versioned_slice(bytes)?;
        job.validate_within(limits)?;
        Ok(job)
    }

    /// Checks what the types alone cannot, within the default limits.
    pub fn validate(&self) -> Result<(), JobError> {
        self.validate_within(&JobLimits::default())
    }

    /// Checks what the types alone cannot.
    pub fn validate_within(&self, limits: &JobLimits) -> Result<(), JobError> {
        let too_long = |field: &str, bytes: usize, setting, max| {
            (bytes > max).then(|| JobError::TooLong {
                field: field.to_owned(),
                bytes,
                setting,
                max,
            })
        };
        if self.job_id.trim().is_empty() {
            return Err(JobError::EmptyJobId);
        }
        if let Some(error) = too_long(
            "job_id",
            self.job_id.len(),
            "max_job_id_bytes",
            limits.max_job_id_bytes,
        ) {
            return Err(error);
        }
        if let Some(error) = too_long(
            "image_url",
            self.image_url.len(),
            "max_url_bytes",
            limits.max_url_bytes,
        ) {
            return Err(error);
        }
        let scheme = self.image_url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        {
            return Err(JobError::NotHttpUrl(self.image_url.clone()));
        }
        if has_user_info(&self.image_url) {
            return Err(JobError::CredentialsInUrl);
        }
        if self.priority > MAX_PRIORITY {
            return Err(JobError::PriorityTooHigh(self.priority));
        }
        self.validate_metadata(limits)
    }

    fn validate_metadata(&self, limits: &JobLimits) -> Result<(), JobError> {
        if self.metadata.len() > limits.max_metadata_entries {
            return Err(JobError::TooManyMetadataEntries {
                entries: self.metadata.len(),
                max: limits.max_metadata_entries,
            });
        }
        let mut total = 0;
        for (key, value) in &self.metadata {
            if key.len() > limits.max_metadata_key_bytes {
                return Err(JobError::TooLong {
                    field: format!("metadata key {}", quoted(key)),
                    bytes: key.len(),
                    setting: "max_metadata_key_bytes",
                    max: limits.max_metadata_key_bytes,
                });
            }
            // Keys become field names in the index: no dots (`a` and
            // `a.b` would clash), nothing Elasticsearch reserves.
            let is_name = !key.is_empty()
                && !key.starts_with('_')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !is_name {
                return Err(JobError::BadMetadataKey(key.clone()));
            }
            if value.len() > limits.max_metadata_value_bytes {
                return Err(JobError::TooLong {
                    field: format!("metadata[{key}]"),
                    bytes: value.len(),
                    setting: "max_metadata_value_bytes",
                    max: limits.max_metadata_value_bytes,
                });
            }
            total += key.len() + value.len();
        }
        if total > limits.max_metadata_bytes {
            return Err(JobError::TooLong {
                field: "metadata".to_owned(),
                bytes: total,
                setting: "max_metadata_bytes",
                max: limits.max_metadata_bytes,
            });
        }
        Ok(())
    }
}

/// Why a queued message is not a job this build can process.
#[derive(Debug, thiserror::Error)]
pub enum JobParseError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("invalid job: {0}")]
    Invalid(#[from] JobError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Job {
        let mut job = Job::new("post-81723-img-0", "https://cdn.example.com/p/81723/0.jpg");
        job.metadata.insert("owner_id".into(), "4411".into());
        job.priority = 3;
        job
    }

    #[test]
    fn round_trips_through_json() {
        let job = example();
        let json = serde_json::to_vec(&job).expect("serialises");
        assert_eq!(Job::from_slice(&json).expect("parses"), job);
    }

    #[test]
    fn the_documented_example_parses() {
        let json = br#"{"schema_version": 1, "job_id": "post-81723-img-0",
            "image_url": "https://cdn.example.com/p/81723/0.jpg",
            "metadata": {"owner_id": "4411", "post_id": "81723"},
            "priority": 0, "submitted_at": "2026-11-28T09:00:00Z"}"#;
        let job = Job::from_slice(json).expect("parses");
        assert_eq!(job.metadata["post_id"], "81723");
        assert_eq!(job.submitted_at.to_rfc3339(), "2026-11-28T09:00:00+00:00");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut value = serde_json::to_value(example()).expect("serialises");
        value["added_by_a_newer_producer"] = serde_json::json!({"nested": [1, 2]});
        let json = serde_json::to_vec(&value).expect("serialises");
        assert_eq!(
            Job::from_slice(&json).expect("parses"),
            example_with_time(&value)
        );
    }

    fn example_with_time(value: &serde_json::Value) -> Job {
        let mut job = example();
        job.submitted_at = serde_json::from_value(value["submitted_at"].clone()).expect("a time");
        job
    }

    #[test]
    fn an_unknown_schema_version_is_a_clear_error() {
        let mut value = serde_json::to_value(example()).expect("serialises");
        value["schema_version"] = 2.into();
        let json = serde_json::to_vec(&value).expect("serialises");
        let error = Job::from_slice(&json).expect_err("refused");
        assert!(
            matches!(
                error,
                JobParseError::Proto(ProtoError::UnsupportedSchemaVersion { found: 2, .. })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_missing_schema_version_is_a_clear_error() {
        let mut value = serde_json::to_value(example()).expect("serialises");
        value
            .as_object_mut()
            .expect("an object")
            .remove("schema_version");
        let json = serde_json::to_vec(&value).expect("serialises");
        let error = Job::from_slice(&json).expect_err("refused");
        assert!(
            matches!(
                error,
                JobParseError::Proto(ProtoError::MissingSchemaVersion)
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_showing_them() {
        for url in [
            "http://bob:PASSWORD@host/photo.png",
            "https://PASSWORD@host/photo.png",
            "http:PASSWORD:x@host/photo.png",
            "ftp://bob:PASSWORD@host/photo.png",
        ] {
            let mut job = example();
            job.image_url = url.to_owned();
            let error = job.validate().expect_err("credentials");
            let text = error.to_string();
            assert!(!text.contains("PASSWORD"), "{text}");
            assert!(
                text.contains("user information") || text.contains("REDACTED"),
                "{text}"
            );
        }
        let mut job = example();
        job.image_url = "https://host/photo.png?owner=bob@example.com".to_owned();
        assert!(job.validate().is_ok());
    }

    #[test]
    fn invalid_fields_are_refused_with_the_reason() {
        let mut job = example();
        job.image_url = "file:///etc/passwd".into();
        assert_eq!(
            job.validate(),
            Err(JobError::NotHttpUrl("file:///etc/passwd".into()))
        );
        let mut job = example();
        job.job_id = " ".into();
        assert_eq!(job.validate(), Err(JobError::EmptyJobId));
        let mut job = example();
        job.priority = 10;
        assert_eq!(job.validate(), Err(JobError::PriorityTooHigh(10)));
    }

    #[test]
    fn a_job_over_a_limit_is_refused_naming_the_limit_without_quoting_it_whole() {
        let limits = JobLimits::default();
        let mut job = example();
        job.image_url = format!("https://example.com/{}", "a".repeat(100_000));
        let error = job.validate_within(&limits).expect_err("too long");
        let text = error.to_string();
        assert!(text.contains("jobs.max_url_bytes (4096)"), "{text}");
        assert!(text.len() < 200, "{text}");

        let mut job = example();
        job.image_url = format!("ftp://{}", "b".repeat(3000));
        let text = job
            .validate_within(&limits)
            .expect_err("not http")
            .to_string();
        assert!(text.len() < 300 && text.contains("bytes)"), "{text}");

        let mut job = example();
        for i in 0..65 {
            job.metadata.insert(format!("k{i}"), "v".into());
        }
        assert!(matches!(
            job.validate_within(&limits),
            Err(JobError::TooManyMetadataEntries { entries: 66, .. })
        ));

        for key in ["a.b", "_id", "", "key with space"] {
            let mut job = example();
            job.metadata.insert(key.into(), "v".into());
            assert!(
                matches!(
                    job.validate_within(&limits),
                    Err(JobError::BadMetadataKey(_))
                ),
                "{key:?}"
            );
        }

        let mut job = example();
        job.metadata.insert("big".into(), "x".repeat(3000));
        let text = job
            .validate_within(&limits)
            .expect_err("too big")
            .to_string();
        assert!(text.contains("jobs.max_metadata_value_bytes"), "{text}");

        let message = vec![b' '; limits.max_message_bytes + 1];
        let error = Job::from_slice(&message).expect_err("too large");
        assert!(
            error.to_string().contains("jobs.max_message_bytes"),
            "{error}"
        );
    }
}
