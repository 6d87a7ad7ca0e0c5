//! The `lambdex` command as a user runs it.

use std::process::Command;

use lambdex_proto::{PredictionDoc, Status};
use lambdex_tests::{billed_functions, fixture, models_dir};

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
fn predict_annotate_draws_each_face_box_and_label_on_a_copy() {
    let photo = fixture("astronaut.png");
    let out = tempfile::tempdir().expect("a temp dir");
    let folder = out.path().join("annotated");
    let output = lambdex(&[
        "predict",
        "--json",
        photo.to_str().expect("a UTF-8 path"),
        "--annotate",
        folder.to_str().expect("a UTF-8 path"),
    ]);
    assert!(output.status.success(), "{output:?}");
    let doc = PredictionDoc::from_slice(&output.stdout).expect("a PredictionDoc");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let written = folder.join("astronaut.annotated.png");
    assert!(stderr.contains("annotated in"), "{stderr}");
    let original = image::open(&photo).expect("the photo").to_rgb8();
    let annotated = image::open(&written).expect("the annotated copy").to_rgb8();
    assert_eq!(annotated.dimensions(), original.dimensions());
    // The box's outline is drawn where the document puts the face, in the
    // box colour, and the face inside it is left as it was.
    let face = &doc.faces[0].bbox;
    let (left, top) = (face.x.round() as u32, face.y.round() as u32);
    let middle_y = top + face.height as u32 / 2;
    assert_eq!(annotated.get_pixel(left, middle_y).0, [255, 212, 0]);
    let centre = (left + face.width as u32 / 2, middle_y);
    assert_eq!(
        annotated.get_pixel(centre.0, centre.1),
        original.get_pixel(centre.0, centre.1)
    );
    // The label's band sits above the box: dark, with white text in it.
    let band: Vec<[u8; 3]> = (left..left + 40)
        .flat_map(|x| (top.saturating_sub(20)..top.saturating_sub(2)).map(move |y| (x, y)))
        .map(|(x, y)| annotated.get_pixel(x, y).0)
        .collect();
    assert!(band.contains(&[0, 0, 0]), "no band above the box");
    assert!(band.contains(&[255, 255, 255]), "no text in the band");
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
        // The functions answered through the Invoke API, which names the version.
        assert!(
            doc.models
                .iter()
                .all(|m| m.function_version.as_deref() == Some("$LATEST")),
            "{:?}",
            doc.models
        );
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

/// `lambdex local-lambda` serves the project's functions, as processes of
/// the `lambdex` binary, to the real SDK client, and stops on SIGTERM.
#[tokio::test]
async fn local_lambda_serves_the_project_functions_until_sigterm() {
    use aws_sdk_lambda::primitives::Blob;
    use aws_sdk_lambda::types::LogType;
    use lambdex_proto::{
        Base64Bytes, ClassifyRequest, ClassifyResponse, FaceCropRequest, FaceCropResponse,
    };
    use tokio::io::AsyncBufReadExt as _;

    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(["local-lambda", "--port", "0"])
        .env("LAMBDEX_MODELS_DIR", models_dir())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("lambdex runs");
    let stdout = server.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let banner = lines.next_line().await.expect("reads").expect("a banner");
    let endpoint = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no endpoint in {banner:?}"));
    assert!(
        banner.contains("face-crop") && banner.contains("gender"),
        "{banner}"
    );
    let client = lambdex::lambda::client::local(endpoint);

    let request = FaceCropRequest {
        image: Base64Bytes(std::fs::read(fixture("astronaut.png")).expect("the fixture")),
    };
    let output = client
        .invoke()
        .function_name("face-crop")
        .log_type(LogType::Tail)
        .payload(Blob::new(serde_json::to_vec(&request).expect("JSON")))
        .send()
        .await
        .expect("face-crop answers");
    assert_eq!(output.function_error(), None);
    let report = lambdex::lambda::invoke::report_of(output.log_result().expect("a tail"))
        .expect("a REPORT line");
    assert!(
        report.init_duration_ms.is_some(),
        "a cold start: {report:?}"
    );
    assert_eq!(report.memory_size_mb, 1769);
    let cropped: FaceCropResponse =
        serde_json::from_slice(output.payload().expect("a body").as_ref())
            .expect("a FaceCropResponse");
    assert_eq!(cropped.faces.len(), 1);

    let classify = ClassifyRequest {
        crops: vec![cropped.faces[0].crop.clone()],
    };
    let output = client
        .invoke()
        .function_name("gender")
        .payload(Blob::new(serde_json::to_vec(&classify).expect("JSON")))
        .send()
        .await
        .expect("gender answers");
    let answer: ClassifyResponse =
        serde_json::from_slice(output.payload().expect("a body").as_ref())
            .expect("a ClassifyResponse");
    assert_eq!(answer.model.id, "gender-v1");

    let pid = server.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), server.wait())
        .await
        .expect("it stops within 20 s")
        .expect("waits");
    assert!(status.success(), "{status}");
}

#[test]
fn config_check_prints_the_effective_settings_and_refuses_a_bad_one_with_exit_64() {
    let output = Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(["config", "check"])
        .env("LAMBDEX__MODELS__AGE__BATCH_SIZE", "8")
        .output()
        .expect("lambdex runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(stdout.contains("[models.age]"), "{stdout}");
    assert!(stdout.contains("batch_size = 8"), "{stdout}");
    assert!(stdout.contains("failure_threshold = 5"), "{stdout}");

    let output = Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(["config", "check"])
        .env("LAMBDEX__FETCH__TIMEOUT", "soon")
        .output()
        .expect("lambdex runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[test]
fn a_new_token_hashes_to_its_entry_and_the_admin_needs_one_to_start() {
    let output = lambdex(&[
        "admin",
        "new-token",
        "--name",
        "ops",
        "--scopes",
        "replay,read",
    ]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let token = printed
        .split_whitespace()
        .find(|word| word.starts_with("ldx_"))
        .expect("the token");
    let entry = printed
        .lines()
        .find_map(|line| line.strip_prefix("sha256 = "))
        .expect("the entry's digest")
        .trim_matches('"');
    assert!(
        printed.contains("[[admin.tokens]]\nname = \"ops\""),
        "{printed}"
    );
    assert!(
        printed.contains("\nscopes = [\"read\", \"replay\"]\n"),
        "{printed}"
    );
    let unknown = lambdex(&["admin", "new-token", "--scopes", "everything"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8(unknown.stderr).expect("UTF-8");
    assert!(stderr.contains("\"everything\" is not a scope"), "{stderr}");

    let mut hash = Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(["admin", "hash-token"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("lambdex runs");
    use std::io::Write as _;
    writeln!(hash.stdin.take().expect("stdin"), "{token}").expect("written");
    let hashed = hash.wait_with_output().expect("exits");
    assert!(hashed.status.success());
    assert_eq!(
        String::from_utf8(hashed.stdout).expect("UTF-8").trim(),
        entry
    );

    // Without a token in the settings there is no admin API.
    let refused = lambdex(&["admin", "serve"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).expect("UTF-8");
    assert!(stderr.contains("admin.tokens is empty"), "{stderr}");
}

/// `lambdex bench power` with `args` on the astronaut, one cold start per
/// size, its report written to `out`; the JSON it prints.
fn bench_power(out: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let photo = fixture("astronaut.png");
    let mut all = vec!["bench", "power", "--cold-starts", "1", "--json"];
    all.extend(["--image", photo.to_str().expect("a UTF-8 path")]);
    all.extend(["--out", out.to_str().expect("a UTF-8 path")]);
    all.extend(args);
    let output = lambdex(&all);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The power bench on a small scale: face-crop at 128 MB (7 % of a core)
/// and at 1769 MB (a whole core), on full batches of images, with the
/// report in all three forms.
#[test]
fn bench_power_measures_each_memory_size_and_writes_its_report() {
    let out = tempfile::tempdir().expect("a temp dir");
    let report = bench_power(
        out.path(),
        &[
            "--function",
            "face-crop",
            "--memory",
            "128,1769",
            "--invocations",
            "4",
        ],
    );
    let sizes = report["functions"][0]["sizes"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 2, "{report}");
    let p50 = |i: usize| sizes[i]["p50_ms"].as_f64().expect("a p50");
    // A fourteenth of a core takes several times as long.
    assert!(
        p50(0) > 3.0 * p50(1),
        "128 MB {} ms, 1769 MB {} ms",
        p50(0),
        p50(1)
    );
    for size in sizes {
        assert_eq!(size["calls"], 4);
        assert!(size["cold"]["init_p50_ms"].as_f64().expect("an init") > 0.0);
        // The request fee alone is $1.60 per 8M calls.
        assert!(size["x86"]["per_8m_usd"].as_f64().expect("a cost") > 1.6);
        assert!(size["arm64"]["per_8m_usd"].as_f64() < size["x86"]["per_8m_usd"].as_f64());
    }
    assert_eq!(report["images"][0]["faces"], 1);
    // Shared batching, the default: each call a full batch of images.
    let images = lambdex::config::DEFAULT_CROP_BATCH_SIZE as f64;
    assert_eq!(report["images_per_crop_call"], images);
    // The astronaut shows one face: as many faces as images a call.
    assert_eq!(report["faces_per_crop_call"], images);
    assert_eq!(report["calls_per_image"]["face-crop"], 1.0 / images);
    // Face-crop alone: no pipeline figure, and the Markdown says why.
    assert!(report["pipeline"].is_null());
    let markdown = std::fs::read_to_string(out.path().join("power.md")).expect("power.md");
    assert!(markdown.contains("## face-crop"), "{markdown}");
    assert!(markdown.contains("Not priced"), "{markdown}");
    // Face-crop priced per image and per face found.
    assert!(markdown.contains("per 8M images"), "{markdown}");
    assert!(markdown.contains("per 8M faces"), "{markdown}");
    assert!(markdown.contains("$413"), "{markdown}");
    // The figures name the CPU they hold for.
    let host = lambdex_bench::machine::Machine::this();
    assert_eq!(report["host"]["arch"], host.arch);
    assert_eq!(report["host"]["cpu"], host.cpu.as_str());
    assert!(markdown.contains(&format!("Host: {host}.")), "{markdown}");
    let svg = std::fs::read_to_string(out.path().join("power.svg")).expect("power.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("face-crop"),
        "{svg}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("power.json")).expect("power.json"))
            .expect("JSON");
    assert_eq!(written, report);
}

#[test]
fn bench_power_prices_a_classifier_per_image_or_in_batches_shared_across_images() {
    let run = |batching: &str| {
        let out = tempfile::tempdir().expect("a temp dir");
        bench_power(
            out.path(),
            &[
                "--function",
                "gender",
                "--memory",
                "1769",
                "--invocations",
                "2",
                "--batching",
                batching,
            ],
        )
    };
    let batch = lambdex::config::DEFAULT_BATCH_SIZE as f64;
    // One face a photo: alone, a call per image carrying that face;
    // shared, full batches, a batch's worth of images per call.
    let alone = run("per-image");
    assert_eq!(alone["batching"], "per-image");
    assert_eq!(alone["faces_per_classifier_call"], 1.0);
    assert_eq!(alone["calls_per_image"]["gender"], 1.0);
    let shared = run("shared");
    assert_eq!(shared["batching"], "shared");
    assert_eq!(shared["faces_per_classifier_call"], batch);
    assert_eq!(shared["calls_per_image"]["gender"], 1.0 / batch);
    // A full batch takes longer than one face, but far less than a batch
    // of single calls.
    let p50 = |report: &serde_json::Value| {
        report["functions"][0]["sizes"][0]["p50_ms"]
            .as_f64()
            .expect("a p50")
    };
    assert!(
        p50(&shared) > p50(&alone) && p50(&shared) < batch * p50(&alone),
        "shared {} ms, alone {} ms",
        p50(&shared),
        p50(&alone)
    );
}

#[test]
fn bench_power_refuses_a_memory_size_lambda_does_not_allow() {
    let output = lambdex(&["bench", "power", "--memory", "64", "--invocations", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--memory 64"), "{stderr}");
}

/// The value of the bench table's row named `measure`.
fn measure<'a>(table: &'a str, measure: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.contains(measure))
        .and_then(|line| line.split('┆').nth(1))
        .map(|value| value.trim_matches(|c: char| c.is_whitespace() || c == '│'))
        .unwrap_or_else(|| panic!("no {measure:?} in {table}"))
}

#[test]
fn bench_pipeline_shares_face_crop_calls_and_can_pin_the_coordinator_to_one_cpu() {
    let output = lambdex(&[
        "bench",
        "pipeline",
        "--jobs",
        "400",
        "--concurrency",
        "40",
        "--latency-ms",
        "5",
        "--pin",
    ]);
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    // Four images a face-crop call by default, with 40 jobs in flight to
    // fill them.
    let crop_calls: f64 = measure(&table, "face-crop calls per job")
        .parse()
        .expect("a number");
    assert!(crop_calls < 0.5, "{table}");
    assert!(
        measure(&table, "CPUs").starts_with("coordinator pinned to CPU"),
        "{table}"
    );
    assert!(
        measure(&table, "while C jobs were in flight").ends_with("jobs/s)"),
        "{table}"
    );
}

/// `lambdex local-lambda` on a free port, its functions processes of this
/// binary; stopped (SIGTERM, as Ctrl-C would) when dropped.
struct LocalLambdaProcess {
    child: std::process::Child,
    /// Held open: the process writes more lines after the first.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    url: String,
}

impl LocalLambdaProcess {
    fn start() -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambdex"))
            .args(["local-lambda", "--port", "0"])
            .env("LAMBDEX_MODELS_DIR", models_dir())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("lambdex local-lambda starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("its first line");
        // "local Lambda listening on http://127.0.0.1:PORT — functions: …"
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Self {
            child,
            _stdout: stdout,
            url,
        }
    }
}

impl Drop for LocalLambdaProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn predict_remote_calls_a_separate_local_lambda_through_the_sdk() {
    let lambda = LocalLambdaProcess::start();
    let photo = fixture("astronaut.png");
    let output = Command::new(env!("CARGO_BIN_EXE_lambdex"))
        .args(["predict", "--remote", "--json"])
        .arg(&photo)
        .env("LAMBDEX__LAMBDA__ENDPOINT_URL", &lambda.url)
        .env("LAMBDEX__LAMBDA__CREDENTIALS", "local")
        .output()
        .expect("lambdex runs");
    assert!(output.status.success(), "{output:?}");
    let doc = PredictionDoc::from_slice(&output.stdout).expect("a PredictionDoc");
    assert_eq!(doc.status, Status::Ok, "{:?}", doc.failure);
    assert_eq!(doc.faces.len(), 1);
    assert!(doc.faces[0].age.is_some() && doc.faces[0].gender.is_some());
    // Billed from the REPORT lines of the other process's function instances.
    assert_eq!(billed_functions(&doc), ["age", "face-crop", "gender"]);
    let billing = doc.billing.expect("billed");
    assert!(billing.functions.iter().all(|f| f.billed_ms > 0));
}
