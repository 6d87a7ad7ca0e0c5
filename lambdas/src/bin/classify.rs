//! A classifier Lambda function: serves the model `$LAMBDEX_MODEL` names
//! (`age` or `gender`), loaded once, at cold start.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdex_lambdas::runtime::classify().await
}
