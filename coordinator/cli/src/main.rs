//! The `lambdex` command: parses the command line, sets up logging and the
//! runtime, and hands over to the command's module in [`commands`].

mod annotate;
mod commands;
mod input;
mod render;

use std::process::ExitCode;

use clap::Parser as _;

use commands::{Cli, Command};

/// A thread-caching allocator: the coordinator allocates and frees many
/// small buffers per job on several threads (BENCHMARKS.md has what glibc's
/// malloc cost it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad settings or arguments: exit code 64 (EX_USAGE), before any work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// `sysexits.h`'s EX_USAGE.
const EXIT_USAGE: u8 = 64;

/// Enough for an account's worth of busy in-process instances (tokio's
/// default is 512).
const MAX_BLOCKING_THREADS: usize = 4096;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Function { function } = cli.command {
        // lambda_runtime sets up its own logging, as it does on Lambda.
        return commands::function::run(function);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lambdex::function=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // In-process functions run one blocking thread per busy instance.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lambdex: {error:#}");
            if error.is::<UsageError>() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        // Duplicate flags, bad defaults, conflicting names: clap's own checks.
        Cli::command().debug_assert();
    }
}
