//! `[face_crop]` and `[models.NAME]`: one function lambdex calls, its
//! limits and how its calls are batched.

use std::num::NonZeroU32;
use std::time::Duration;

use lambdex_proto::limits::SYNC_REQUEST_BYTES;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Crops per classify call by default: one call for most images, and well
/// under Lambda's 6 MB payload (a 96 px JPEG crop is a few KB).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Images per face-crop call by default. A call's images run one after
/// another, so it lasts about four images' time (`lambdex bench power`
/// prints it); in return the request fee, the SDK's work per call and the
/// function's fixed cost are shared four ways. At most
/// [`lambdex_proto::limits::MAX_IMAGES_PER_REQUEST`].
pub const DEFAULT_CROP_BATCH_SIZE: usize = 4;

/// How long an image waits for other images, and a model's crops for
/// crops of other images, to share a call by default (see
/// [`crate::pipeline::batcher`]): short beside a job's round trips, long enough for a
/// busy queue to fill batches.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The most request bytes a shared call packs (a piece larger than this
/// still goes, alone): Lambda's synchronous payload less room for the JSON
/// around the base64.
pub const BATCH_MAX_REQUEST_BYTES: usize = SYNC_REQUEST_BYTES - 64 * 1024;

/// The age net's input side: the chip the age model reads by default.
pub const DEFAULT_AGE_CHIP: u32 = 64;
/// The gender net's input side: the chip the gender model reads by default.
pub const DEFAULT_GENDER_CHIP: u32 = 32;

/// One function lambdex calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionConfig {
    /// `false` drops a model (e.g. one of the defaults).
    pub enabled: bool,
    /// The Lambda function's name or ARN.
    pub function: String,
    /// A version or alias (unset: `$LATEST`).
    pub qualifier: Option<String>,
    /// Called instead while this function's breaker is open, e.g. a build
    /// for a baseline CPU (`name` or `name:qualifier`).
    pub fallback: Option<String>,
    /// Invocations a second at most (unset: no rate limit).
    pub rate_per_second: Option<NonZeroU32>,
    /// Invocations in flight at most.
    pub concurrency: usize,
    /// Per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Crops per call for a classifier model; images per call for
    /// face_crop.
    pub batch_size: Option<usize>,
    /// How long an image (face_crop) or an image's crops (a model) wait for
    /// other images' to share a call; `0s` sends each alone.
    #[serde(with = "humantime_serde")]
    pub batch_window: Option<Duration>,
    /// For a classifier model: the side of the chip it reads, when the
    /// face-crop function cuts one of that size (dlib cuts each net's chip
    /// from the image at the net's own size); unset, or no such chip: the
    /// main crop, which the function resizes.
    pub chip_size: Option<u32>,
}

impl FunctionConfig {
    /// Checks the function's own settings; `path` names it in errors
    /// (`face_crop`, `models.age`).
    pub(super) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.function.trim().is_empty() {
            return Err(ConfigError::invalid(format!("{path}.function is empty")));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(format!(
                "{path}.concurrency must be at least 1"
            )));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(format!(
                "{path}.timeout must be more than 0"
            )));
        }
        if self.chip_size == Some(0) {
            return Err(ConfigError::invalid(format!(
                "{path}.chip_size must be at least 1"
            )));
        }
        if self.batch_size == Some(0) {
            return Err(ConfigError::invalid(format!(
                "{path}.batch_size must be at least 1"
            )));
        }
        Ok(())
    }

    pub fn named(function: &str) -> Self {
        Self {
            function: function.to_owned(),
            ..Self::default()
        }
    }

    /// Crops per call (a classifier model).
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// Images per call (face_crop).
    pub fn crop_batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_CROP_BATCH_SIZE)
    }

    /// How long an image, or a model's crops, wait to share a call.
    pub fn batch_window(&self) -> Duration {
        self.batch_window.unwrap_or(DEFAULT_BATCH_WINDOW)
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            function: String::new(),
            qualifier: None,
            fallback: None,
            chip_size: None,
            rate_per_second: None,
            concurrency: 1000,
            timeout: Duration::from_secs(30),
            batch_size: None,
            batch_window: None,
        }
    }
}
