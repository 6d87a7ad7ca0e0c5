//! A classifier Lambda function: serves the model `$LAMBDEX_MODEL` names
//! (`age` or `gender`), loaded once, at cold start.

/// The allocator `lambdex function` runs under, so that `lambdex bench
/// power` measures what Lambda runs (see the face-crop binary for what
/// glibc's malloc cost there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdex_functions::runtime::classify().await
}
