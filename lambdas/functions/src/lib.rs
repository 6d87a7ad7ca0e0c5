//! lambdex's functions, what ships to AWS Lambda: the face-crop function
//! and the classifier functions, as a library of plain handlers plus thin
//! `lambda_runtime` binaries (`face-crop`, and `classify`, which serves the
//! model `$LAMBDEX_MODEL` names). Nothing here knows the local Lambda or
//! the benches: they depend on this crate, never the other way.
//!
//! An image passes through these modules in order:
//!
//! - [`decode`]: untrusted bytes → an upright RGB picture, within a pixel cap.
//! - [`detect`]: BlazeFace (front 128 and back 256, plus tiles for large
//!   images) finds faces and their six keypoints; [`nms`] merges overlaps.
//! - [`landmarks`]: dlib's five-point model places each face's eye corners and
//!   nose; [`chip`] cuts the chips from them exactly as dlib does.
//! - [`face_crop`]: the face-crop function, putting the three together.
//! - [`classify`]: the age and gender nets read batches of chips, after
//!   [`resize`] fits them to the net's input.
//! - [`handler`]: the functions' entry points; [`error`] their error answers.
//!
//! [`onnx`] loads weights into tract with the fixes these files need, and
//! [`kernels`] swaps in our own kernels for the BlazeFace layers tract runs
//! slowly; [`models`] finds the weights on disk. [`runtime`] serves the
//! handlers through the Lambda Runtime API.

pub mod chip;
pub mod classify;
pub mod decode;
pub mod detect;
pub mod error;
pub mod face_crop;
pub mod handler;
pub mod kernels;
pub mod landmarks;
pub mod models;
pub mod nms;
pub mod onnx;
pub mod resize;
pub mod runtime;

pub use classify::{Classifier, Task};
pub use error::FunctionError;
pub use face_crop::{FaceCropConfig, FaceCropper};

/// Names the model a `classify` binary serves: `age` or `gender`.
pub const MODEL_ENV: &str = "LAMBDEX_MODEL";
