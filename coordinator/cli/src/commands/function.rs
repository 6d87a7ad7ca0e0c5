//! `lambdex function`: one function as a Lambda custom runtime, what
//! `lambdex local-lambda` starts for each instance (the same entry points
//! as the deployable binaries).

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Binary {
    FaceCrop,
    /// The model `$LAMBDEX_MODEL` names.
    Classify,
}

pub fn run(function: Binary) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let served = runtime.block_on(async {
        match function {
            Binary::FaceCrop => lambdex_functions::runtime::face_crop().await,
            Binary::Classify => lambdex_functions::runtime::classify().await,
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lambdex function: {error}");
            ExitCode::FAILURE
        }
    }
}
