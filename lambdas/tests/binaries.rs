//! The real `lambda_runtime` binaries, driven through the Runtime API: their
//! answers are the proto types, and their handled errors carry the
//! `errorType` the coordinator classifies.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use lambdex_lambdas::oneshot::{Answer, invoke_once};
use lambdex_lambdas::{MODEL_ENV, models};
use lambdex_proto::{
    Base64Bytes, ClassifyRequest, ClassifyResponse, FaceCropRequest, FaceCropResponse, Prediction,
};
use lambdex_tests::{astronaut_png, models_dir};

const PATIENCE: Duration = Duration::from_secs(60);

fn env(model: Option<&str>) -> HashMap<String, String> {
    let mut env = HashMap::from([(
        models::MODELS_DIR_ENV.to_owned(),
        models_dir().display().to_string(),
    )]);
    if let Some(model) = model {
        env.insert(MODEL_ENV.to_owned(), model.to_owned());
    }
    env
}

async fn call(binary: &str, model: Option<&str>, event: Vec<u8>) -> Answer {
    invoke_once(Path::new(binary), &env(model), event, PATIENCE)
        .await
        .expect("the binary answers")
        .answer
}

fn response_of(answer: Answer) -> Vec<u8> {
    match answer {
        Answer::Response(body) => body,
        Answer::Error(body) => panic!("an error answer: {}", String::from_utf8_lossy(&body)),
    }
}

#[tokio::test]
async fn face_crop_then_classify_round_trip_through_the_proto_types() {
    let request = FaceCropRequest {
        image: Base64Bytes(astronaut_png()),
    };
    let body = response_of(
        call(
            env!("CARGO_BIN_EXE_face-crop"),
            None,
            serde_json::to_vec(&request).expect("serialises"),
        )
        .await,
    );
    let cropped: FaceCropResponse = serde_json::from_slice(&body).expect("a FaceCropResponse");
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
async fn a_bad_image_is_a_handled_error_with_its_error_type() {
    let request = FaceCropRequest {
        image: Base64Bytes(b"GIF89a but not really".to_vec()),
    };
    let answer = call(
        env!("CARGO_BIN_EXE_face-crop"),
        None,
        serde_json::to_vec(&request).expect("serialises"),
    )
    .await;
    let Answer::Error(body) = answer else {
        panic!("expected an error answer, got {answer:?}");
    };
    let error: serde_json::Value = serde_json::from_slice(&body).expect("Lambda's error JSON");
    assert_eq!(error["errorType"], "InvalidImage", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("invalid image")),
        "{error}"
    );
}

#[tokio::test]
async fn a_classifier_without_a_model_name_fails_to_start_and_says_why() {
    let result = invoke_once(
        Path::new(env!("CARGO_BIN_EXE_classify")),
        &env(None),
        b"{}".to_vec(),
        Duration::from_secs(10),
    )
    .await;
    let error = result.expect_err("no answer from a function that cannot start");
    assert!(error.to_string().contains("exit status"), "{error}");
}
