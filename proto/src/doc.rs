//! The document lambdex stores per image: what Elasticsearch indexes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::{ProtoError, SchemaVersion, from_versioned_slice};
use crate::{BBox, Failure, Gender, ImageSize};

/// Every face of one image with its age and gender, and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictionDoc {
    pub schema_version: SchemaVersion,
    pub job_id: String,
    pub image_url: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The original image's size, which the boxes are in. Absent when the
    /// image could not be decoded.
    #[serde(default)]
    pub image: Option<ImageSize>,
    /// Sent pixels per original pixel when the image had to be scaled down
    /// to fit the face-crop request; absent when sent as downloaded.
    #[serde(default)]
    pub image_scale: Option<f64>,
    #[serde(default)]
    pub faces: Vec<FaceDoc>,
    #[serde(default)]
    pub models: Vec<ModelUsed>,
    #[serde(default)]
    pub timings: Vec<StageTiming>,
    /// What the job's function calls were billed, and cost.
    #[serde(default)]
    pub billing: Option<Billing>,
    pub status: Status,
    /// Set when `status` is `failed` or `partial`.
    #[serde(default)]
    pub failure: Option<Failure>,
    pub processed_at: DateTime<Utc>,
}

impl PredictionDoc {
    /// Parses a stored document, checking its schema version first.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        from_versioned_slice(bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At least one face, every face classified.
    Ok,
    /// The image decoded and no face was found.
    NoFaces,
    /// Faces found, but a model failed (see `failure`): its fields are
    /// absent. Only when the coordinator is set to keep partial results.
    Partial,
    /// See `failure`.
    Failed,
}

impl Status {
    /// The name documents give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoFaces => "no_faces",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaceDoc {
    pub bbox: BBox,
    pub score: f32,
    #[serde(default)]
    pub age: Option<AgeDoc>,
    #[serde(default)]
    pub gender: Option<GenderDoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgeDoc {
    pub years: f32,
    pub std_dev: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenderDoc {
    pub label: Gender,
    pub probability: f32,
}

/// A model that contributed to the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelUsed {
    pub role: ModelRole,
    pub id: String,
    pub sha256: String,
    /// The Lambda version that ran it; absent when run in-process.
    #[serde(default)]
    pub function_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    Detector,
    Age,
    Gender,
}

/// The Lambda bill of one job, from the functions' `REPORT` lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Billing {
    pub functions: Vec<FunctionBilling>,
    pub requests: u32,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    /// At the coordinator's configured prices.
    pub estimated_cost_usd: f64,
}

/// One function's share of a job's bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionBilling {
    pub function: String,
    /// Invocations that ran, failed ones included.
    pub requests: u32,
    pub billed_ms: u64,
    pub memory_mb: u32,
    pub gb_seconds: f64,
}

/// Wall-clock time of one stage of the job, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageTiming {
    /// `fetch`, `crop`, `age`, `gender`, `total`…
    pub stage: String,
    pub ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SCHEMA_VERSION;

    fn example() -> PredictionDoc {
        PredictionDoc {
            schema_version: SchemaVersion::CURRENT,
            job_id: "j-1".into(),
            image_url: "https://example.com/a.jpg".into(),
            metadata: BTreeMap::from([("post_id".into(), "9".into())]),
            image: Some(ImageSize {
                width: 640,
                height: 480,
            }),
            image_scale: None,
            faces: vec![FaceDoc {
                bbox: BBox {
                    x: 1.0,
                    y: 2.0,
                    width: 30.0,
                    height: 31.0,
                },
                score: 0.9,
                age: Some(AgeDoc {
                    years: 31.5,
                    std_dev: 5.0,
                }),
                gender: Some(GenderDoc {
                    label: Gender::Male,
                    probability: 0.75,
                }),
            }],
            models: vec![ModelUsed {
                role: ModelRole::Age,
                id: "age-v1".into(),
                sha256: "ef".repeat(32),
                function_version: Some("3".into()),
            }],
            timings: vec![StageTiming {
                stage: "total".into(),
                ms: 12.5,
            }],
            billing: None,
            status: Status::Ok,
            failure: None,
            processed_at: "2026-11-28T10:00:00Z".parse().expect("a time"),
        }
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let doc = example();
        let mut value = serde_json::to_value(&doc).expect("serialises");
        assert_eq!(value["status"], "ok");
        assert_eq!(value["schema_version"], SCHEMA_VERSION);
        value["faces"][0]["emotion"] = "calm".into();
        let json = serde_json::to_vec(&value).expect("serialises");
        assert_eq!(PredictionDoc::from_slice(&json).expect("parses"), doc);
    }

    #[test]
    fn an_unknown_schema_version_is_a_clear_error() {
        let mut value = serde_json::to_value(example()).expect("serialises");
        value["schema_version"] = 99.into();
        let json = serde_json::to_vec(&value).expect("serialises");
        let error = PredictionDoc::from_slice(&json).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "unsupported schema_version 99: this build understands 1"
        );
    }

    #[test]
    fn a_failed_document_carries_its_reason() {
        let mut doc = example();
        doc.status = Status::Failed;
        doc.faces.clear();
        doc.failure = Some(Failure::new(
            crate::FailureClass::InvalidImage,
            "not an image",
            false,
        ));
        let value = serde_json::to_value(&doc).expect("serialises");
        assert_eq!(value["status"], "failed");
        assert_eq!(value["failure"]["class"], "invalid_image");
    }
}
