//! The face-crop Lambda function. Loads both detectors once, at cold start.

/// The allocator `lambdex function` runs under, so that `lambdex bench
/// power` measures what Lambda runs. glibc's malloc hands the top of its
/// heap, where the networks' megabyte-sized tensors live, back to the
/// kernel and takes it again several times a photo (`brk`), faulting every
/// page in anew (BENCHMARKS.md has what that cost).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdex_functions::runtime::face_crop().await
}
