//! The contract between lambdex's coordinator and its functions, and the
//! document lambdex stores.
//!
//! A job's data passes through these types in this order:
//!
//! - [`job`]: a [`Job`] is what producers publish: an image URL and metadata.
//! - [`crop`]: the coordinator sends the downloaded image to the face-crop
//!   function as a [`FaceCropRequest`] and gets back one aligned crop per face
//!   (or several images of different jobs in one [`FaceCropBatchRequest`]).
//! - [`classify`]: each classifier function gets a batch of crops as a
//!   [`ClassifyRequest`] and answers one [`Prediction`] per crop.
//! - [`doc`]: the coordinator joins the answers into one [`PredictionDoc`]
//!   per image, the document written to Elasticsearch.
//!
//! [`error_type`] names the handled errors a function reports, and whether a
//! retry can help; [`failure`] the classes a job's failure falls in.
//! [`limits`] holds the payload limits both sides of a call respect, and
//! [`report`] the `REPORT` line every invocation's log ends with; [`text`]
//! keeps outside text to a size in errors and headers.
//! [`schema`] holds the version check shared by the messages that cross a
//! deployment boundary, and [`bytes`] the base64 wrappers used for image data.
//!
//! Every message ignores fields it does not know, so a newer producer can add
//! fields without breaking an older consumer; a `schema_version` this build
//! does not know is refused with [`ProtoError::UnsupportedSchemaVersion`].

pub mod bytes;
pub mod classify;
pub mod crop;
pub mod doc;
pub mod error_type;
pub mod failure;
pub mod job;
pub mod limits;
pub mod report;
pub mod schema;
pub mod text;

pub use bytes::{Base64Bytes, Base64Text};
pub use classify::{
    AgeBin, AgePrediction, ClassifyRequest, ClassifyResponse, ClassifyTimings, Gender,
    GenderPrediction, Prediction,
};
pub use crop::{
    BBox, Crop, CropFormat, CropTimings, CroppedFace, FaceCropBatchRequest, FaceCropBatchResponse,
    FaceCropRequest, FaceCropResponse, ImageFailure, ImageResult, ImageSize, Keypoints, Point,
};
pub use doc::{
    AgeDoc, Billing, FaceDoc, FunctionBilling, GenderDoc, ModelRole, ModelUsed, PredictionDoc,
    StageTiming, Status,
};
pub use error_type::ErrorType;
pub use failure::{Failure, FailureClass};
pub use job::{Job, JobError, JobLimits, JobParseError, MAX_PRIORITY};
pub use report::Report;
pub use schema::{ProtoError, SCHEMA_VERSION, SchemaVersion};

/// Identifies a model file: a stable name and the sha256 of the exact bytes
/// that served the request, so a stored result can be traced to its weights.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// A stable model name, e.g. `blazeface-front-128+back-256` or `age-v1`.
    pub id: String,
    /// Lower-case hex sha256 of the weights file; for a model made of several
    /// files, the sha256 of their hex digests, one per line, in id order.
    pub sha256: String,
}
