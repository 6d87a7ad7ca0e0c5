//! A classifier Lambda function: serves the model `$LAMBDEX_MODEL` names
//! (`age` or `gender`), loaded once, at cold start.

/// The allocator `lambdex function` runs under, so that `lambdex bench
/// power` measures what Lambda runs. glibc's malloc hands the top of its
/// heap, where the networks' megabyte-sized tensors live, back to the
/// kernel and takes it again about seven times a photo (`brk`), faulting
/// every page in anew: face-crop took 12.3 ms on the astronaut with it,
/// 10.2 ms with mimalloc, in a one-off timing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambdex_lambdas::runtime::classify().await
}
