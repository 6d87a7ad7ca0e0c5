//! A job: one image to label, as producers publish it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::{ProtoError, SchemaVersion, from_versioned_slice};

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

/// A job that parsed but cannot be processed as it stands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("job_id is empty")]
    EmptyJobId,
    #[error("image_url {0:?} is not an http(s) URL")]
    NotHttpUrl(String),
    #[error("priority {0} is above the maximum of {MAX_PRIORITY}")]
    PriorityTooHigh(u8),
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

    /// Parses a job as it arrives on the queue, checking its schema version
    /// first and its fields after.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, JobParseError> {
        let job: Self = from_versioned_slice(bytes)?;
        job.validate()?;
        Ok(job)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), JobError> {
        if self.job_id.trim().is_empty() {
            return Err(JobError::EmptyJobId);
        }
        let scheme = self.image_url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        {
            return Err(JobError::NotHttpUrl(self.image_url.clone()));
        }
        if self.priority > MAX_PRIORITY {
            return Err(JobError::PriorityTooHigh(self.priority));
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
}
