//! The coordinator's pipeline end to end: real photos and hostile inputs
//! served by a local HTTP server, the project's functions (and broken
//! ones) behind the local Lambda, called through `aws-sdk-lambda`.

use std::path::PathBuf;
use std::time::Duration;

use lambdex::config::{Config, Credentials};
use lambdex::lambda::client as lambda_client;
use lambdex::pipeline::Pipeline;
use lambdex_functions::Task;
use lambdex_local::{Builtin, FunctionSpec, Handler, LocalConfig, LocalLambda};
use lambdex_proto::{Base64Text, FailureClass, Job, PredictionDoc, Status};
use lambdex_tests::fakes::{Canned, Faulty, Sleeper};
use lambdex_tests::images::ImageServer;
use lambdex_tests::{ASTRONAUT_FACE, billed_functions, encode_jpeg, models_dir, no_face};

const TEST_FUNCTION: &str = env!("CARGO_BIN_EXE_test-function");

/// The local Lambda with the project's functions in-process, plus `extra`.
async fn functions(extra: Vec<(&str, FunctionSpec)>) -> LocalLambda {
    let mut config = LocalConfig::project_defaults(None, models_dir());
    for (name, spec) in extra {
        config.functions.insert(name.to_owned(), spec);
    }
    LocalLambda::start(config, 0)
        .await
        .expect("the local Lambda starts")
}

/// Settings for tests: local credentials, quick retries, the image server
/// let through the SSRF guard.
fn config(lambda: &LocalLambda) -> Config {
    let mut config = Config::default();
    config.lambda.endpoint_url = Some(lambda.endpoint_url());
    config.lambda.credentials = Credentials::Local;
    config.fetch.allow = vec!["127.0.0.0/8".parse().expect("a network")];
    config.fetch.timeout = Duration::from_millis(700);
    config.fetch.max_bytes = 1_000_000;
    config.retry.min_delay = Duration::from_millis(10);
    config.retry.max_delay = Duration::from_millis(50);
    config
}

fn pipeline(lambda: &LocalLambda, config: Config) -> Pipeline {
    Pipeline::with_client(config, lambda_client::local(&lambda.endpoint_url())).expect("builds")
}

async fn process(pipeline: &Pipeline, url: String) -> PredictionDoc {
    pipeline.process(&Job::new(url.clone(), url)).await
}

fn assert_labelled(doc: &PredictionDoc, faces: usize) {
    assert_eq!(doc.status, Status::Ok, "{:?}", doc.failure);
    assert_eq!(doc.faces.len(), faces);
    for face in &doc.faces {
        assert!(face.age.is_some() && face.gender.is_some(), "{face:?}");
    }
}

#[tokio::test]
async fn faces_are_labelled_and_an_image_without_faces_calls_no_classifier() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let pipeline = pipeline(&lambda, config(&lambda));

    let doc = process(&pipeline, format!("{images}/two-faces.jpg")).await;
    assert_labelled(&doc, 2);
    let billing = doc.billing.as_ref().expect("billed");
    assert_eq!(billed_functions(&doc), ["age", "face-crop", "gender"]);
    assert!(
        billing.billed_ms > 0 && billing.estimated_cost_usd > 0.0,
        "{billing:?}"
    );
    assert!(doc.timings.iter().any(|t| t.stage == "fetch"));

    let host = lambda.engine();
    let age_calls = host.invocations("age");
    let doc = process(&pipeline, format!("{images}/no-face.jpg")).await;
    assert_eq!(doc.status, Status::NoFaces, "{:?}", doc.failure);
    assert_eq!(host.invocations("age"), age_calls);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_large_image_is_scaled_to_fit_and_its_boxes_map_back() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    // Under even a JPEG re-encoding of the 512 px original.
    config.image.max_request_bytes = 30_000;
    config.image.min_long_side = 128;
    let pipeline = pipeline(&lambda, config);

    let doc = process(&pipeline, format!("{images}/astronaut.png")).await;
    assert_labelled(&doc, 1);
    let scale = doc.image_scale.expect("scaled");
    assert!(scale < 1.0, "{scale}");
    let image = doc.image.expect("a size");
    assert_eq!((image.width, image.height), (512, 512));
    // The box is in the original's pixels: over the hand-marked face.
    let b = doc.faces[0].bbox;
    let (cx, cy) = (b.x + b.width / 2.0, b.y + b.height / 2.0);
    let [x0, y0, x1, y1] = ASTRONAUT_FACE;
    assert!((x0..x1).contains(&cx) && (y0..y1).contains(&cy), "{b:?}");
    lambda.shutdown().await;
}

#[tokio::test]
async fn hostile_inputs_fail_for_good_with_a_named_reason_before_any_function_runs() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.fetch.max_attempts = 1;
    let pipeline = pipeline(&lambda, config);

    for (path, class, says) in [
        ("missing.jpg", "fetch_status", "HTTP 404"),
        ("slow.jpg", "fetch_timeout", "did not download"),
        (
            "huge.jpg",
            "image_too_large",
            "over the limit of 1000000 bytes",
        ),
        ("page.jpg", "not_an_image", "not a JPEG, PNG, WebP or GIF"),
        (
            "to-metadata.jpg",
            "fetch_refused",
            "link-local addresses are blocked",
        ),
        (
            "bomb.png",
            "invalid_image",
            "50000×50000 pixels, over the limit",
        ),
        (
            "to-credentials.jpg",
            "invalid_url",
            "redirected to a URL carrying user information",
        ),
    ] {
        let doc = process(&pipeline, format!("{images}/{path}")).await;
        assert_eq!(doc.status, Status::Failed, "{path}");
        let failure = doc.failure.expect("a failure");
        assert_eq!(failure.class, class, "{path}: {}", failure.reason);
        assert!(failure.reason.contains(says), "{path}: {}", failure.reason);
        assert!(
            !failure.reason.contains("PASSWORD"),
            "{path}: {}",
            failure.reason
        );
        let transient = class == "fetch_timeout";
        assert_eq!(failure.retryable, transient, "{path}");
    }
    assert_eq!(lambda.engine().invocations("face-crop"), 0);
    lambda.shutdown().await;
}

#[tokio::test]
async fn the_ssrf_guard_refuses_loopback_by_default_by_address_and_by_name() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.fetch.allow.clear();
    let pipeline = pipeline(&lambda, config);

    let by_name = images.replace("127.0.0.1", "localhost");
    for base in [images.to_owned(), by_name] {
        let doc = process(&pipeline, format!("{base}/two-faces.jpg")).await;
        let failure = doc.failure.expect("refused");
        assert_eq!(failure.class, "fetch_refused", "{}", failure.reason);
        assert!(failure.reason.contains("loopback"), "{}", failure.reason);
    }
    lambda.shutdown().await;
}

#[tokio::test]
async fn each_model_gets_the_crops_in_batches_of_its_size() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.models.get_mut("age").expect("age").batch_size = Some(2);
    config.models.get_mut("gender").expect("gender").batch_size = Some(1);
    let pipeline = pipeline(&lambda, config);

    let doc = process(&pipeline, format!("{images}/three-faces.jpg")).await;
    assert_labelled(&doc, 3);
    let host = lambda.engine();
    assert_eq!(host.invocations("age"), 2, "ceil(3 / 2)");
    assert_eq!(host.invocations("gender"), 3, "ceil(3 / 1)");
    lambda.shutdown().await;
}

#[tokio::test]
async fn crops_of_images_in_the_same_batch_window_share_a_call_and_its_bill() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let urls = ["two-faces.jpg", "three-faces.jpg", "astronaut.png"]
        .map(|name| format!("{images}/{name}"));
    let host = lambda.engine();

    // Each image alone: the reference predictions.
    let mut alone = config(&lambda);
    for model in alone.models.values_mut() {
        model.batch_window = Some(Duration::ZERO);
    }
    let alone = pipeline(&lambda, alone);
    let mut reference = Vec::new();
    for url in &urls {
        reference.push(process(&alone, url.clone()).await);
    }
    let (age_calls, gender_calls) = (host.invocations("age"), host.invocations("gender"));
    assert_eq!(age_calls, 3, "one call per image without a window");

    // At once, with a window long enough for all three: age packs the
    // 2 + 3 + 1 crops into one call of 8; gender, with a batch of 4, needs
    // two calls whatever the order the images arrive in (an image's crops
    // are never split between calls).
    let mut shared = config(&lambda);
    let age = shared.models.get_mut("age").expect("age");
    (age.batch_size, age.batch_window) = (Some(8), Some(Duration::from_secs(1)));
    let gender = shared.models.get_mut("gender").expect("gender");
    (gender.batch_size, gender.batch_window) = (Some(4), Some(Duration::from_secs(1)));
    let shared = pipeline(&lambda, shared);
    let docs = process_all(&shared, &urls).await;
    assert_eq!(host.invocations("age") - age_calls, 1);
    assert_eq!(host.invocations("gender") - gender_calls, 2);

    let age_billing = |doc: &PredictionDoc| {
        doc.billing
            .as_ref()
            .and_then(|b| b.functions.iter().find(|f| f.function == "age").cloned())
            .expect("age billed")
    };
    for (doc, alone) in docs.iter().zip(&reference) {
        assert_labelled(doc, alone.faces.len());
        for (face, face_alone) in doc.faces.iter().zip(&alone.faces) {
            let (years, years_alone) = (
                face.age.expect("age").years,
                face_alone.age.expect("age").years,
            );
            assert!(
                (years - years_alone).abs() < 0.05,
                "{years} against {years_alone}"
            );
            let (gender, gender_alone) = (
                face.gender.expect("gender"),
                face_alone.gender.expect("gender"),
            );
            assert_eq!(gender.label, gender_alone.label);
            assert!((gender.probability - gender_alone.probability).abs() < 0.005);
        }
        // One call, billed to each image in proportion to its crops.
        let billing = age_billing(doc);
        assert_eq!(billing.requests, 1);
        let per_face = billing.gb_seconds / doc.faces.len() as f64;
        let first = age_billing(&docs[0]).gb_seconds / docs[0].faces.len() as f64;
        assert!(
            (per_face - first).abs() < 1e-12,
            "{per_face} against {first}"
        );
    }
    lambda.shutdown().await;
}

/// Sends every image of `urls` at once through `pipeline`.
async fn process_all(pipeline: &Pipeline, urls: &[String]) -> Vec<PredictionDoc> {
    futures::future::join_all(urls.iter().map(|url| process(pipeline, url.clone()))).await
}

/// The face-crop bill of `doc`: (requests, GB-seconds).
fn face_crop_bill(doc: &PredictionDoc, function: &str) -> (u32, f64) {
    let billing = doc.billing.as_ref().expect("billed");
    let bill = billing
        .functions
        .iter()
        .find(|f| f.function == function)
        .expect("face-crop billed");
    (bill.requests, bill.gb_seconds)
}

#[tokio::test]
async fn images_in_the_same_window_share_a_face_crop_call_and_a_bad_one_fails_alone() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let urls = [
        "two-faces.jpg",
        "three-faces.jpg",
        "astronaut.png",
        "truncated.png",
    ]
    .map(|name| format!("{images}/{name}"));
    let mut config = config(&lambda);
    config.face_crop.batch_size = Some(4);
    config.face_crop.batch_window = Some(Duration::from_secs(1));
    let pipeline = pipeline(&lambda, config);

    let docs = process_all(&pipeline, &urls).await;
    assert_eq!(
        lambda.engine().invocations("face-crop"),
        1,
        "four images, one call"
    );
    for (doc, faces) in docs.iter().zip([2, 3, 1]) {
        assert_labelled(doc, faces);
    }
    let truncated = &docs[3];
    assert_eq!(truncated.status, Status::Failed);
    let failure = truncated.failure.as_ref().expect("a failure");
    assert_eq!(failure.class, "invalid_image", "{}", failure.reason);
    assert!(!failure.retryable);
    // One call, a quarter of it billed to each image.
    let first = face_crop_bill(&docs[0], "face-crop");
    for doc in &docs {
        let (requests, gb_seconds) = face_crop_bill(doc, "face-crop");
        assert_eq!(requests, 1);
        assert!(
            (gb_seconds - first.1).abs() < 1e-12,
            "{gb_seconds} against {first:?}"
        );
    }
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_functions_rate_limit_spaces_its_calls_and_every_job_still_succeeds() {
    let lambda = functions(Vec::new()).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    // Ten calls a second, a burst of ten; each image alone.
    config.face_crop.rate_per_second = std::num::NonZeroU32::new(10);
    config.face_crop.batch_size = Some(1);
    let pipeline = pipeline(&lambda, config);

    let urls = vec![format!("{images}/no-face.jpg"); 20];
    let started = std::time::Instant::now();
    let docs = process_all(&pipeline, &urls).await;
    let elapsed = started.elapsed();
    assert!(docs.iter().all(|doc| doc.status == Status::NoFaces));
    assert_eq!(lambda.engine().invocations("face-crop"), 20);
    // The burst goes at once, the other ten a tenth of a second apart.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_shared_call_that_fails_is_sent_again_image_by_image_so_only_the_culprit_fails() {
    let poison = Base64Text::encode(&encode_jpeg(&no_face(), 92));
    let allergic = Faulty::on_content(Builtin::FaceCrop, &poison.as_str().as_bytes()[..64]).spec();
    let lambda = functions(vec![("face-crop-allergic", allergic)]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let urls = ["two-faces.jpg", "no-face.jpg", "astronaut.png"].map(|n| format!("{images}/{n}"));
    let mut config = config(&lambda);
    config.retry.max_attempts = 2;
    config.breaker.failure_threshold = 100;
    config.face_crop.function = "face-crop-allergic".to_owned();
    config.face_crop.batch_size = Some(3);
    config.face_crop.batch_window = Some(Duration::from_secs(1));
    let pipeline = pipeline(&lambda, config);

    let docs = process_all(&pipeline, &urls).await;
    assert_labelled(&docs[0], 2);
    assert_labelled(&docs[2], 1);
    assert_eq!(docs[1].status, Status::Failed);
    let failure = docs[1].failure.as_ref().expect("a failure");
    assert_eq!(failure.class, FailureClass::Internal, "{}", failure.reason);
    assert!(failure.retryable);
    // The shared call's two attempts, then each image alone: one call for
    // each good image, two attempts for the culprit.
    assert_eq!(
        lambda.engine().invocations("face-crop-allergic"),
        2 + 1 + 1 + 2
    );
    // A good image pays its third of the failed call's attempts, and its own.
    let (requests, _) = face_crop_bill(&docs[0], "face-crop-allergic");
    assert_eq!(requests, 2 + 1);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_function_that_fails_twice_then_succeeds_is_retried() {
    let flaky = Faulty::first_calls(Builtin::Classifier(Task::Age), 2).spec();
    let lambda = functions(vec![("age-flaky", flaky)]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.models.get_mut("age").expect("age").function = "age-flaky".to_owned();
    let pipeline = pipeline(&lambda, config);

    let doc = process(&pipeline, format!("{images}/two-faces.jpg")).await;
    assert_labelled(&doc, 2);
    assert_eq!(lambda.engine().invocations("age-flaky"), 3);
    let stats = pipeline.stats().functions["age"];
    assert_eq!((stats.calls, stats.attempts, stats.retries), (1, 3, 2));
    // Failed attempts are billed too.
    let billing = doc.billing.expect("billed");
    let age = billing
        .functions
        .iter()
        .find(|f| f.function == "age-flaky")
        .expect("age");
    assert_eq!(age.requests, 3);
    lambda.shutdown().await;
}

fn crashing() -> FunctionSpec {
    let mut spec = FunctionSpec::new(Handler::Command {
        program: PathBuf::from(TEST_FUNCTION),
        args: Vec::new(),
    });
    spec.latest.memory_mb = 256;
    spec.latest
        .environment
        .insert("TEST_FUNCTION_INIT".to_owned(), "exit".to_owned());
    spec
}

#[tokio::test]
async fn a_crashing_function_opens_its_breaker_and_the_fallback_answers() {
    let lambda = functions(vec![("age-avx512", crashing())]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.breaker.failure_threshold = 2;
    config.retry.max_attempts = 2;
    let age = config.models.get_mut("age").expect("age");
    age.function = "age-avx512".to_owned();
    age.fallback = Some("age".to_owned());
    let pipeline = pipeline(&lambda, config);

    for _ in 0..4 {
        let doc = process(&pipeline, format!("{images}/two-faces.jpg")).await;
        assert_labelled(&doc, 2);
    }
    let host = lambda.engine();
    // Two failures opened the breaker; later jobs went straight to the fallback.
    assert_eq!(host.invocations("age-avx512"), 2);
    let stats = pipeline.stats().functions["age"];
    assert_eq!(stats.breaker_opened, 1);
    assert_eq!(stats.fallback_calls, 4);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_crashing_model_without_fallback_fails_the_job_or_leaves_a_partial_result() {
    let lambda = functions(vec![("gender-broken", crashing())]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.retry.max_attempts = 2;
    config.models.get_mut("gender").expect("gender").function = "gender-broken".to_owned();

    let strict = pipeline(&lambda, config.clone());
    let doc = process(&strict, format!("{images}/two-faces.jpg")).await;
    assert_eq!(doc.status, Status::Failed);
    let failure = doc.failure.expect("a failure");
    assert_eq!(
        failure.class.as_str(),
        "runtime_exit_error",
        "{}",
        failure.reason
    );
    assert!(failure.retryable);

    config.pipeline.partial_results = true;
    let lenient = pipeline(&lambda, config);
    let doc = process(&lenient, format!("{images}/two-faces.jpg")).await;
    assert_eq!(doc.status, Status::Partial);
    assert!(
        doc.faces
            .iter()
            .all(|f| f.age.is_some() && f.gender.is_none())
    );
    assert_eq!(
        doc.failure.expect("the reason").class.as_str(),
        "runtime_exit_error"
    );
    lambda.shutdown().await;
}

#[tokio::test]
async fn throttling_at_the_reserved_concurrency_is_waited_out_and_every_job_succeeds() {
    let mut age = LocalConfig::project_defaults(None, models_dir()).functions["age"].clone();
    age.reserved_concurrency = Some(1);
    let lambda = functions(vec![("age-reserved", age)]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let images = server.base();
    let mut config = config(&lambda);
    config.retry.max_attempts = 20;
    let age = config.models.get_mut("age").expect("age");
    age.function = "age-reserved".to_owned();
    // Each image's crops alone: six concurrent calls for one instance.
    age.batch_window = Some(Duration::ZERO);
    let pipeline = pipeline(&lambda, config);

    let docs = futures::future::join_all(
        (0..6).map(|_| process(&pipeline, format!("{images}/two-faces.jpg"))),
    )
    .await;
    for doc in &docs {
        assert_labelled(doc, 2);
    }
    let stats = pipeline.stats().functions["age"];
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!(stats.retries, stats.throttled, "{stats:?}");
    assert_eq!(lambda.engine().throttles("age-reserved"), stats.throttled);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_as_retryable_and_lets_go_of_its_slot() {
    let sleeper = Sleeper {
        latency: Duration::from_secs(5),
        canned: Canned::Crop { faces: 1 },
    };
    let slow = FunctionSpec::new(Handler::InProcess(std::sync::Arc::new(sleeper)));
    let lambda = functions(vec![("face-crop-slow", slow)]).await;
    let server = ImageServer::start().await.expect("the image server starts");
    let mut config = config(&lambda);
    config.face_crop.function = "face-crop-slow".to_owned();
    config.pipeline.job_timeout = Duration::from_millis(500);
    // One job at a time: the second runs only once the first let go.
    config.pipeline.max_jobs_in_flight = 1;
    let pipeline = pipeline(&lambda, config);

    let started = std::time::Instant::now();
    let urls = vec![server.url("two-faces.jpg"), server.url("no-face.jpg")];
    let docs = process_all(&pipeline, &urls).await;
    for doc in &docs {
        let failure = doc.failure.as_ref().expect("timed out");
        assert_eq!(
            failure.class,
            FailureClass::JobTimeout,
            "{}",
            failure.reason
        );
        assert!(failure.retryable);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    lambda.shutdown().await;
}
