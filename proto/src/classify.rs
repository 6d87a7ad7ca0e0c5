//! A classifier function's request and response. One function binary serves
//! one model; the response says which, and each prediction says its task.

use serde::{Deserialize, Serialize};

use crate::{Base64Bytes, Crop, ModelInfo};

/// A batch of face crops (as the face-crop function returned them) to
/// classify in one model run. `D` holds the crops' bytes, as in
/// [`crate::FaceCropRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyRequest<D = Base64Bytes> {
    pub crops: Vec<Crop<D>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub model: ModelInfo,
    /// One per crop, in request order.
    pub predictions: Vec<Prediction>,
    pub timings: ClassifyTimings,
}

/// One crop's prediction, tagged with the task that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Prediction {
    Age(AgePrediction),
    Gender(GenderPrediction),
}

/// DEX-style age: the expected value over the model's age bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgePrediction {
    /// Σ pᵢ·ageᵢ over the bins.
    pub years: f32,
    /// The distribution's standard deviation: how sure the model is.
    pub std_dev: f32,
    /// The most probable bins, most probable first.
    pub top_bins: Vec<AgeBin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AgeBin {
    pub years: f32,
    pub probability: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenderPrediction {
    pub label: Gender,
    /// The softmax probability of `label`, in [0.5, 1].
    pub probability: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Female,
    Male,
}

impl std::fmt::Display for Gender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Female => "female",
            Self::Male => "male",
        })
    }
}

/// Where the function spent its time, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ClassifyTimings {
    pub decode_ms: f64,
    pub infer_ms: f64,
    pub total_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Base64Bytes, CropFormat};

    #[test]
    fn predictions_are_tagged_with_their_task_and_round_trip() {
        let response = ClassifyResponse {
            model: ModelInfo {
                id: "age-v1".into(),
                sha256: "cd".repeat(32),
            },
            predictions: vec![
                Prediction::Age(AgePrediction {
                    years: 33.2,
                    std_dev: 6.1,
                    top_bins: vec![AgeBin {
                        years: 31.0,
                        probability: 0.12,
                    }],
                }),
                Prediction::Gender(GenderPrediction {
                    label: Gender::Female,
                    probability: 0.87,
                }),
            ],
            timings: ClassifyTimings::default(),
        };
        let value = serde_json::to_value(&response).expect("serialises");
        assert_eq!(value["predictions"][0]["task"], "age");
        assert_eq!(value["predictions"][1]["label"], "female");
        let back: ClassifyResponse = serde_json::from_value(value).expect("deserialises");
        assert_eq!(back, response);
    }

    #[test]
    fn request_round_trips() {
        let request = ClassifyRequest {
            crops: vec![Crop {
                format: CropFormat::Png,
                width: 64,
                height: 64,
                data: Base64Bytes(vec![1, 2, 3]),
            }],
        };
        let json = serde_json::to_vec(&request).expect("serialises");
        let back: ClassifyRequest = serde_json::from_slice(&json).expect("deserialises");
        assert_eq!(back, request);
    }

    #[test]
    fn an_unknown_gender_label_is_refused() {
        let error = serde_json::from_str::<GenderPrediction>(r#"{"label":"x","probability":0.5}"#)
            .expect_err("refused");
        assert!(error.to_string().contains("unknown variant"), "{error}");
    }
}
