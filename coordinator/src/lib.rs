//! lambdex's coordinator: it takes an image, calls the face-crop function,
//! fans the crops out to one classifier function per model, and joins the
//! answers into one document per image.
//!
//! The modules, in the order an image passes through them:
//!
//! - [`input`]: the image bytes, from a file or an http(s) URL.
//! - [`predict`]: one image through the whole path, calling
//! - [`functions`]: the face-crop and classifier functions, behind one
//!   interface, called over the Lambda Invoke API with the client from
//!   [`lambda_client`], and
//! - [`fanout`]: every model over the crops, in batches, all at once;
//! - [`aggregate`]: the answers joined into a [`lambdex_proto::PredictionDoc`].
//! - [`render`]: documents printed for people.
//!
//! [`bench`] measures each stage and each function's cold start.

pub mod aggregate;
pub mod bench;
pub mod fanout;
pub mod functions;
pub mod input;
pub mod lambda_client;
pub mod predict;
pub mod render;
