//! `lambdex predict`: every face of local images or URLs, labelled now,
//! through the same pipeline the worker runs — the functions in-process
//! behind an embedded local Lambda, or (`--remote`) the configured
//! endpoint's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt as _;
use lambdex::config::Credentials;
use lambdex::lambda::client;
use lambdex::pipeline::Pipeline;
use lambdex::pipeline::aggregate::{self, Timings};
use lambdex_functions::{FaceCropConfig, models};
use lambdex_local::{LocalConfig, LocalLambda};
use lambdex_proto::{Failure, FailureClass, Job, PredictionDoc, Status};

use super::{ConfigArgs, models_dir};
use crate::annotate;
use crate::input::Input;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files or http(s) URLs (JPEG, PNG, WebP, GIF).
    #[arg(required = true)]
    images: Vec<String>,
    /// Print one JSON document per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write each image with its faces boxed and labelled into this
    /// folder (made if missing): `NAME.annotated.jpg` for a JPEG, else
    /// `.png`.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    /// The folder holding blazeface/ and age-gender/ (default: see README).
    #[arg(long, env = models::MODELS_DIR_ENV)]
    models_dir: Option<PathBuf>,
    /// Images processed at once.
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,
    /// Call the functions at the configured endpoint (`[lambda]` or
    /// `LAMBDEX__LAMBDA__…`: a `lambdex local-lambda`, or AWS) instead of
    /// running them in-process.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args.config.load()?;
    let local = if args.remote {
        None
    } else {
        FaceCropConfig::from_env()?;
        Some(
            LocalLambda::start(
                LocalConfig::project_defaults(None, models_dir(args.models_dir)?),
                0,
            )
            .await
            .context("starting the in-process local Lambda")?,
        )
    };
    let pipeline = match &local {
        Some(lambda) => {
            // The embedded functions go by the project's names.
            config.face_crop.function = "face-crop".to_owned();
            for (name, model) in &mut config.models {
                model.function.clone_from(name);
                model.fallback = None;
            }
            config.lambda.endpoint_url = Some(lambda.endpoint_url());
            config.lambda.credentials = Credentials::Local;
            Pipeline::with_client(config, client::local(&lambda.endpoint_url()))?
        }
        None => Pipeline::new(config).await?,
    };
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make --annotate {}", dir.display()))?;
    }
    let keep = args.annotate.is_some();
    let input = Input::default();
    let results: Vec<(PredictionDoc, Option<Vec<u8>>)> = futures::stream::iter(&args.images)
        .map(|source| one_image(&pipeline, &input, source, keep))
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    if let Some(lambda) = local {
        lambda.shutdown().await;
    }
    let mut annotation_failed = false;
    if let Some(dir) = &args.annotate {
        let mut taken = BTreeSet::new();
        for ((doc, image), source) in results.iter().zip(&args.images) {
            let Some(image) = image else { continue };
            match annotate::write(dir, source, image, doc, &mut taken) {
                Ok(path) => eprintln!("lambdex: {source}: annotated in {}", path.display()),
                Err(error) => {
                    eprintln!("lambdex: {source}: {error}");
                    annotation_failed = true;
                }
            }
        }
    }
    let docs: Vec<PredictionDoc> = results.into_iter().map(|(doc, _)| doc).collect();

    if args.json {
        for doc in &docs {
            println!("{}", serde_json::to_string(doc)?);
        }
    } else {
        println!("{}", render::faces_table(&docs));
    }
    let mut failed = 0;
    for doc in &docs {
        if let Some(failure) = &doc.failure {
            eprintln!("lambdex: {}: {}", doc.image_url, failure.reason);
            failed += usize::from(doc.status == Status::Failed);
        }
    }
    Ok(if failed == 0 && !annotation_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `source`'s document, and its bytes when `keep` and they were read.
async fn one_image(
    pipeline: &Pipeline,
    input: &Input,
    source: &str,
    keep: bool,
) -> (PredictionDoc, Option<Vec<u8>>) {
    let job = Job::new(source, source);
    if Input::is_url(source) {
        return if keep {
            pipeline.process_keeping_image(&job).await
        } else {
            (pipeline.process(&job).await, None)
        };
    }
    match input.read_file(Path::new(source)).await {
        Ok(bytes) => {
            let kept = keep.then(|| bytes.clone());
            (pipeline.process_bytes(&job, bytes).await, kept)
        }
        Err(error) => (
            aggregate::failed(
                &job,
                Failure::new(FailureClass::ReadFailed, error.to_string(), false),
                Timings::default(),
            ),
            None,
        ),
    }
}
