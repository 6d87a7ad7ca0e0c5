//! `[jobs]`: what a job may carry ([`lambdex_proto::JobLimits`]), checked
//! wherever a job comes in: the queue, the admin trigger, `lambdex
//! enqueue`.

use lambdex_proto::JobLimits;

use super::ConfigError;

pub(super) fn validate(limits: &JobLimits) -> Result<(), ConfigError> {
    let all = [
        ("max_message_bytes", limits.max_message_bytes),
        ("max_job_id_bytes", limits.max_job_id_bytes),
        ("max_url_bytes", limits.max_url_bytes),
        ("max_metadata_entries", limits.max_metadata_entries),
        ("max_metadata_key_bytes", limits.max_metadata_key_bytes),
        ("max_metadata_value_bytes", limits.max_metadata_value_bytes),
        ("max_metadata_bytes", limits.max_metadata_bytes),
    ];
    if let Some((name, _)) = all.iter().find(|(_, value)| *value == 0) {
        return Err(ConfigError::invalid(format!(
            "jobs.{name} must be at least 1"
        )));
    }
    // A URL over this much would not fit the failure headers a dead letter
    // carries (each header is cut to a few KiB).
    if limits.max_url_bytes > 16 * 1024 {
        return Err(ConfigError::invalid(
            "jobs.max_url_bytes must be at most 16384",
        ));
    }
    Ok(())
}
