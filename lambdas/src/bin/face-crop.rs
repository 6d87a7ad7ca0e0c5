//! The face-crop Lambda function. Loads both detectors once, at cold start.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdex_lambdas::runtime::face_crop().await
}
