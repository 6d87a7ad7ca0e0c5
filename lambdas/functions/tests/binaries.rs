//! The real `lambda_runtime` binaries, driven through the local Lambda and
//! their own Runtime API: their answers are the proto types, and their
//! handled errors carry the `errorType` the coordinator classifies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use lambdex_functions::{MODEL_ENV, models};
use lambdex_local::{FunctionSpec, Handler, InvokeInput, InvokeOutput, LocalConfig, LocalLambda};
use lambdex_proto::{
    Base64Bytes, ClassifyRequest, ClassifyResponse, ErrorType, FaceCropBatchRequest,
    FaceCropBatchResponse, FaceCropRequest, FaceCropResponse, ImageResult, Prediction, Report,
};
use lambdex_tests::{astronaut_png, models_dir};

/// Timeout of each function: generous, for unoptimised test builds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Invokes `binary` once, on a local Lambda of its own.
async fn call(binary: &str, model: Option<&str>, event: Vec<u8>) -> InvokeOutput {
    let mut environment = BTreeMap::from([(
        models::MODELS_DIR_ENV.to_owned(),
        models_dir().display().to_string(),
    )]);
    if let Some(model) = model {
        environment.insert(MODEL_ENV.to_owned(), model.to_owned());
    }
    let mut spec = FunctionSpec::new(Handler::Command {
        program: PathBuf::from(binary),
        args: Vec::new(),
    });
    spec.latest.environment = environment;
    spec.latest.memory_mb = 1769;
    spec.latest.timeout = PATIENCE;
    let mut config = LocalConfig {
        init_timeout: PATIENCE,
        ..LocalConfig::default()
    };
    config.functions.insert("f".to_owned(), spec);
    let lambda = LocalLambda::start(config, 0).await.expect("starts");
    let output = lambda
        .engine()
        .invoke(InvokeInput {
            function: "f".to_owned(),
            log_tail: true,
            payload: Bytes::from(event),
            ..InvokeInput::default()
        })
        .await
        .expect("the call is accepted");
    lambda.shutdown().await;
    output
}

fn response_of(output: InvokeOutput) -> Vec<u8> {
    assert_eq!(
        output.function_error,
        None,
        "an error answer: {}",
        String::from_utf8_lossy(&output.payload)
    );
    output.payload.to_vec()
}

fn error_of(output: &InvokeOutput) -> serde_json::Value {
    assert_eq!(output.function_error.as_deref(), Some("Unhandled"));
    serde_json::from_slice(&output.payload).expect("Lambda's error JSON")
}

/// The face-crop binary's answer to `request`, read as `A`.
async fn face_crop_answer<A: serde::de::DeserializeOwned>(request: &impl serde::Serialize) -> A {
    let body = response_of(
        call(
            env!("CARGO_BIN_EXE_face-crop"),
            None,
            serde_json::to_vec(request).expect("serialises"),
        )
        .await,
    );
    serde_json::from_slice(&body).expect("the answer's type")
}

#[tokio::test]
async fn face_crop_then_classify_round_trip_through_the_proto_types() {
    let request = FaceCropRequest {
        image: Base64Bytes(astronaut_png()),
    };
    let cropped: FaceCropResponse = face_crop_answer(&request).await;
    assert_eq!(cropped.faces.len(), 1);
    // What the binary wrote survives a round trip through the types.
    let reencoded = serde_json::to_vec(&cropped).expect("serialises");
    let again: FaceCropResponse = serde_json::from_slice(&reencoded).expect("parses back");
    assert_eq!(again, cropped);

    let classify = ClassifyRequest {
        crops: cropped.faces.iter().map(|f| f.crop.clone()).collect(),
    };
    for model in ["age", "gender"] {
        let body = response_of(
            call(
                env!("CARGO_BIN_EXE_classify"),
                Some(model),
                serde_json::to_vec(&classify).expect("serialises"),
            )
            .await,
        );
        let answer: ClassifyResponse = serde_json::from_slice(&body).expect("a ClassifyResponse");
        assert_eq!(answer.model.id, format!("{model}-v1"));
        assert_eq!(answer.predictions.len(), 1);
        let task_matches = matches!(
            (&answer.predictions[0], model),
            (Prediction::Age(_), "age") | (Prediction::Gender(_), "gender")
        );
        assert!(task_matches, "{:?}", answer.predictions);
    }
}

#[tokio::test]
async fn the_face_crop_binary_answers_a_batch_image_by_image() {
    let request = FaceCropBatchRequest {
        images: vec![
            FaceCropRequest {
                image: Base64Bytes(astronaut_png()),
            },
            FaceCropRequest {
                image: Base64Bytes(b"GIF89a but not really".to_vec()),
            },
        ],
    };
    let answer: FaceCropBatchResponse = face_crop_answer(&request).await;
    match answer.results.as_slice() {
        [ImageResult::Cropped(cropped), ImageResult::Failed(failure)] => {
            assert_eq!(cropped.faces.len(), 1);
            assert_eq!(failure.error_type, ErrorType::InvalidImage, "{failure:?}");
        }
        other => panic!("a face, then a failure: {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_image_is_a_handled_error_with_its_error_type() {
    let request = FaceCropRequest {
        image: Base64Bytes(b"GIF89a but not really".to_vec()),
    };
    let output = call(
        env!("CARGO_BIN_EXE_face-crop"),
        None,
        serde_json::to_vec(&request).expect("serialises"),
    )
    .await;
    let error = error_of(&output);
    assert_eq!(error["errorType"], "InvalidImage", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid image")),
        "{error}"
    );
}

#[tokio::test]
async fn a_classifier_without_a_model_name_reports_its_init_error() {
    let output = call(env!("CARGO_BIN_EXE_classify"), None, b"{}".to_vec()).await;
    let error = error_of(&output);
    assert_eq!(error["errorType"], "Runtime.InitError", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains(MODEL_ENV)),
        "{error}"
    );
    let log = output.log.expect("a log tail");
    let report = Report::parse(&log).expect("a REPORT line");
    assert!(report.init_duration_ms.is_some(), "{log}");
}
