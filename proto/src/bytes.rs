//! Binary data carried in JSON as standard base64 (with padding), the way the
//! Lambda Invoke API carries any bytes in a JSON payload.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that serialise as a base64 string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl Base64Bytes {
    /// The number of characters this value takes once encoded.
    pub fn encoded_len(&self) -> usize {
        self.0.len().div_ceil(3) * 4
    }
}

impl std::fmt::Debug for Base64Bytes {
    // Image bytes in a log line help nobody: show the size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for Base64Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|error| serde::de::Error::custom(format!("invalid base64: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_as_a_base64_string() {
        let bytes = Base64Bytes(vec![0, 1, 2, 250, 251, 252, 253]);
        let json = serde_json::to_string(&bytes).expect("serialises");
        assert_eq!(json, "\"AAEC+vv8/Q==\"");
        assert_eq!(bytes.encoded_len(), json.len() - 2);
        let back: Base64Bytes = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, bytes);
    }

    #[test]
    fn rejects_text_that_is_not_base64() {
        let error = serde_json::from_str::<Base64Bytes>("\"not base64!\"").expect_err("refused");
        assert!(error.to_string().contains("invalid base64"), "{error}");
    }
}
