//! The `lambdex` command as a user runs it.

use std::process::Command;

use lambdex_proto::{PredictionDoc, Status};
use lambdex_tests::{fixture, models_dir};

fn lambdex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(args)
        .env("LAMBDEX_MODELS_DIR", models_dir())
        .output()
        .expect("lambdex runs")
}

#[test]
fn predict_prints_a_row_per_face() {
    let photo = fixture("astronaut.png");
    let output = lambdex(&["predict", photo.to_str().expect("a UTF-8 path")]);
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(table.contains("female"), "{table}");
    assert_eq!(table.matches("astronaut.png").count(), 1, "{table}");
}

#[test]
fn predict_json_prints_one_document_per_image() {
    let photo = fixture("astronaut.png");
    let photo = photo.to_str().expect("a UTF-8 path");
    let output = lambdex(&["predict", "--json", photo, photo]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let docs: Vec<PredictionDoc> = stdout
        .lines()
        .map(|line| PredictionDoc::from_slice(line.as_bytes()).expect("a PredictionDoc"))
        .collect();
    assert_eq!(docs.len(), 2);
    for doc in docs {
        assert_eq!(doc.status, Status::Ok);
        assert_eq!(doc.faces.len(), 1);
        assert!(doc.faces[0].age.is_some() && doc.faces[0].gender.is_some());
        assert_eq!(doc.models.len(), 3, "{:?}", doc.models);
        assert!(doc.timings.iter().any(|t| t.stage == "crop"));
    }
}

#[test]
fn a_failed_image_gives_a_one_line_reason_and_a_failing_exit_code() {
    let photo = fixture("astronaut.png");
    let not_an_image = fixture("PROVENANCE.md");
    let output = lambdex(&[
        "predict",
        "--json",
        photo.to_str().expect("a UTF-8 path"),
        not_an_image.to_str().expect("a UTF-8 path"),
        "no/such/file.jpg",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("lambdex: "))
        .collect();
    assert_eq!(reasons.len(), 2, "{stderr}");
    assert!(
        reasons[0].contains("PROVENANCE.md") && reasons[0].contains("invalid image"),
        "{stderr}"
    );
    assert!(reasons[1].contains("no/such/file.jpg"), "{stderr}");
    // The good image's document is still printed, and the failures too.
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let statuses: Vec<Status> = stdout
        .lines()
        .map(|line| {
            PredictionDoc::from_slice(line.as_bytes())
                .expect("a document")
                .status
        })
        .collect();
    assert_eq!(statuses, [Status::Ok, Status::Failed, Status::Failed]);
}
