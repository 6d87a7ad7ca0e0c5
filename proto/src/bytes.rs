//! Binary data carried in JSON as standard base64 (with padding), the way the
//! Lambda Invoke API carries any bytes in a JSON payload: decoded
//! ([`Base64Bytes`], for the functions, which read the bytes), or kept as
//! the JSON string ([`Base64Text`], for the coordinator, which only passes
//! them on).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

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

/// Base64 data never decoded: the JSON string (quotes included) as it
/// arrived, or as [`Self::encode`] wrote it, written out again as it is.
///
/// The coordinator carries every crop from the face-crop function's answer
/// to the classifiers' requests. Decoding each crop, encoding it again and
/// escaping the result cost it about a tenth of its CPU per job in
/// `lambdex bench pipeline`; passing the text through costs a copy. Clones share the text (crops go to every
/// model). Reading one checks it is base64 (alphabet, length, padding)
/// without decoding it, so a bad crop fails its own image's answer, not a
/// classifier batch shared with other images.
///
/// Only for JSON: it serialises through `serde_json`'s raw values.
#[derive(Clone)]
pub struct Base64Text(Arc<RawValue>);

impl Base64Text {
    /// `bytes` in base64, as a JSON string.
    pub fn encode(bytes: &[u8]) -> Self {
        let mut json = String::with_capacity(bytes.len().div_ceil(3) * 4 + 2);
        json.push('"');
        STANDARD.encode_string(bytes, &mut json);
        json.push('"');
        let raw = RawValue::from_string(json).expect("base64 in quotes is a JSON string");
        Self(Arc::from(raw))
    }

    /// The base64 text, without its quotes.
    pub fn as_str(&self) -> &str {
        let json = self.0.get();
        &json[1..json.len() - 1]
    }

    /// The bytes, decoded.
    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(self.as_str())
    }
}

impl std::fmt::Debug for Base64Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Base64Text({} characters)", self.as_str().len())
    }
}

impl PartialEq for Base64Text {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Base64Text {}

impl Serialize for Base64Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Base64Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw
            .get()
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'));
        if !text.is_some_and(|text| is_base64(text.as_bytes())) {
            return Err(serde::de::Error::custom(
                "invalid base64: expected a base64 string",
            ));
        }
        Ok(Self(Arc::from(raw)))
    }
}

/// Whether `text` is padded standard base64: whole groups of four from the
/// alphabet, with at most two `=` at the end. (A JSON escape fails it: `\`
/// is not in the alphabet.) Every byte is tested without a branch, so the
/// check vectorises.
fn is_base64(text: &[u8]) -> bool {
    let body = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    text.len().is_multiple_of(4)
        && body.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_alphanumeric() | (b == b'+') | (b == b'/'))
        })
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
    fn text_passes_through_json_unchanged_and_agrees_with_bytes() {
        let bytes = Base64Bytes(vec![0, 1, 2, 250, 251, 252, 253]);
        let text = Base64Text::encode(&bytes.0);
        assert_eq!(text.as_str(), "AAEC+vv8/Q==");
        assert_eq!(text.as_str().len(), bytes.encoded_len());
        assert_eq!(text.decode().expect("decodes"), bytes.0);
        let json = serde_json::to_string(&text).expect("serialises");
        assert_eq!(json, serde_json::to_string(&bytes).expect("serialises"));
        let back: Base64Text = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, text);
        let decoded: Base64Bytes = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(decoded, bytes);
    }

    #[test]
    fn text_refuses_what_is_not_base64() {
        for json in [
            "12",
            "null",
            r#"{"a":1}"#,
            r#""AAEC\n+vv8""#,
            r#""AAE""#,
            r#""AA=C""#,
            r#""A===""#,
            r#""AA-_""#,
        ] {
            let error = serde_json::from_str::<Base64Text>(json).expect_err(json);
            assert!(
                error.to_string().contains("invalid base64"),
                "{json}: {error}"
            );
        }
        let empty: Base64Text = serde_json::from_str(r#""""#).expect("an empty string");
        assert_eq!(empty.decode().expect("decodes"), Vec::<u8>::new());
    }

    #[test]
    fn rejects_text_that_is_not_base64() {
        let error = serde_json::from_str::<Base64Bytes>("\"not base64!\"").expect_err("refused");
        assert!(error.to_string().contains("invalid base64"), "{error}");
    }
}
