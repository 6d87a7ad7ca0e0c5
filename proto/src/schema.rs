//! Versioning of the messages that cross a deployment boundary (jobs on the
//! queue, stored documents), and the errors of parsing them.

use serde::{Deserialize, Deserializer, Serialize};

/// The one schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A schema version this build understands. Deserialising any other number
/// fails, so a message from a newer producer is refused with a clear reason
/// instead of being half understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaVersion(u32);

impl SchemaVersion {
    /// The version this build writes.
    pub const CURRENT: Self = Self(SCHEMA_VERSION);

    /// Accepts `version` if this build understands it.
    pub fn new(version: u32) -> Result<Self, ProtoError> {
        if version == SCHEMA_VERSION {
            Ok(Self(version))
        } else {
            Err(ProtoError::UnsupportedSchemaVersion {
                found: version,
                supported: SCHEMA_VERSION,
            })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for SchemaVersion {
    fn default() -> Self {
        Self::CURRENT
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u32::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("unsupported schema_version {found}: this build understands {supported}")]
    UnsupportedSchemaVersion { found: u32, supported: u32 },
    #[error("the message has no schema_version field")]
    MissingSchemaVersion,
    #[error("the message is not valid JSON for this type: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads a versioned message: the version first, so an unknown version is
/// reported as such rather than as whatever field it happened to break.
pub(crate) fn from_versioned_slice<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ProtoError> {
    #[derive(Deserialize)]
    struct Probe {
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes)?;
    SchemaVersion::new(
        probe
            .schema_version
            .ok_or(ProtoError::MissingSchemaVersion)?,
    )?;
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_version_fails_to_deserialise_with_both_numbers_in_the_message() {
        let error = serde_json::from_str::<SchemaVersion>("2").expect_err("refused");
        assert!(
            error.to_string().contains("unsupported schema_version 2"),
            "{error}"
        );
        assert!(error.to_string().contains("understands 1"), "{error}");
    }

    #[test]
    fn the_current_version_round_trips() {
        let json = serde_json::to_string(&SchemaVersion::CURRENT).expect("serialises");
        assert_eq!(json, "1");
        let back: SchemaVersion = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back.get(), SCHEMA_VERSION);
    }
}
