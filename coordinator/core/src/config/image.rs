//! `[image]`: what is sent to the face-crop function.

use lambdex_proto::limits::SYNC_REQUEST_RAW_BYTES;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// What is sent to the face-crop function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Images whose width × height is over this are refused before any
    /// pixel is decoded (decompression bombs).
    pub max_pixels: u64,
    /// Larger images are scaled down and re-encoded as JPEG so that the
    /// request, in base64, fits Lambda's 6 MB synchronous payload.
    pub max_request_bytes: usize,
    /// The re-encoded JPEG's quality.
    pub jpeg_quality: u8,
    /// Scaling down never goes below this long side, so faces stay large
    /// enough to detect; an image that still does not fit is refused.
    pub min_long_side: u32,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_pixels: lambdex_functions::decode::DEFAULT_MAX_PIXELS,
            max_request_bytes: 4_500_000,
            jpeg_quality: 90,
            min_long_side: 1024,
        }
    }
}

impl ImageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(ConfigError::invalid(
                "image.jpeg_quality must be between 1 and 100",
            ));
        }
        if self.max_request_bytes > SYNC_REQUEST_RAW_BYTES {
            return Err(ConfigError::invalid(format!(
                "image.max_request_bytes is over what fits Lambda's synchronous payload in base64 ({SYNC_REQUEST_RAW_BYTES} bytes)"
            )));
        }
        Ok(())
    }
}
