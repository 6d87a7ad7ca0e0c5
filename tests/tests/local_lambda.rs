//! The local Lambda through the real `aws-sdk-lambda` client, against a
//! real `lambda_runtime` binary (`test-function`: echo, fail, panic, exit,
//! sleep, big answers, init failures) and an in-process handler.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::ProvideErrorMetadata as _;
use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType, ThrottleReason};
use futures::StreamExt as _;
use lambda_runtime::Diagnostic;
use lambdex::lambda::client as lambda_client;
use lambdex::lambda::invoke::report_of;
use lambdex_local::{
    FunctionSpec, Handler, InProcessFunction, InProcessHandler, LocalConfig, LocalLambda,
};
use lambdex_proto::Report;
use serde_json::{Value, json};

const TEST_FUNCTION: &str = env!("CARGO_BIN_EXE_test-function");

fn test_function() -> FunctionSpec {
    let mut spec = FunctionSpec::new(Handler::Command {
        program: PathBuf::from(TEST_FUNCTION),
        args: Vec::new(),
    });
    spec.latest.memory_mb = 256;
    spec.latest.timeout = Duration::from_secs(10);
    spec
}

async fn serve(functions: Vec<(&str, FunctionSpec)>) -> (LocalLambda, Client) {
    let mut config = LocalConfig::default();
    for (name, spec) in functions {
        config.functions.insert(name.to_owned(), spec);
    }
    let lambda = LocalLambda::start(config, 0).await.expect("starts");
    let client = lambda_client::local(&lambda.endpoint_url());
    (lambda, client)
}

async fn invoke(client: &Client, function: &str, event: Value) -> InvokeOutput {
    client
        .invoke()
        .function_name(function)
        .log_type(LogType::Tail)
        .payload(Blob::new(serde_json::to_vec(&event).expect("JSON")))
        .send()
        .await
        .expect("the call is accepted")
}

fn body(output: &InvokeOutput) -> Value {
    serde_json::from_slice(output.payload().expect("a payload").as_ref()).expect("JSON")
}

fn log(output: &InvokeOutput) -> String {
    use base64::Engine as _;
    let tail = output.log_result().expect("a log tail");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(tail)
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

fn pid(output: &InvokeOutput) -> u64 {
    body(output)["pid"].as_u64().expect("a pid")
}

/// Whether a process is gone (reaped, or at least a zombie).
fn is_gone(pid: u64) -> bool {
    u32::try_from(pid).map_or(true, lambdex_local::procstat::has_ended)
}

/// Waits (at most 10 s) until an instance is back in the warm pool.
async fn wait_for_an_idle_instance(lambda: &LocalLambda) {
    let mut waited = Duration::ZERO;
    while lambda.engine().idle_pids().is_empty() {
        assert!(waited < Duration::from_secs(10), "no instance came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
}

fn error_type(output: &InvokeOutput) -> String {
    assert_eq!(output.function_error(), Some("Unhandled"));
    body(output)["errorType"]
        .as_str()
        .expect("an errorType")
        .to_owned()
}

#[tokio::test]
async fn echo_cold_then_warm_with_the_lambda_environment_and_a_report() {
    let (lambda, client) = serve(vec![("echo", test_function())]).await;
    let cold = invoke(&client, "echo", json!({ "hello": "world" })).await;
    assert_eq!(cold.status_code(), 200);
    assert_eq!(cold.function_error(), None);
    assert_eq!(cold.executed_version(), Some("$LATEST"));
    let answer = body(&cold);
    assert_eq!(answer["event"], json!({ "hello": "world" }));
    assert_eq!(answer["env"]["AWS_LAMBDA_FUNCTION_NAME"], "echo");
    assert_eq!(answer["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(
        answer["function_arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo"
    );
    let request_id = answer["request_id"].as_str().expect("a request id");
    let deadline = answer["deadline_ms"].as_u64().expect("a deadline");
    let now = u64::try_from(chrono_now_ms()).expect("after 1970");
    assert!(
        deadline > now && deadline <= now + 10_000,
        "{deadline} vs {now}"
    );

    // The tail: START, the function's own line, END, REPORT with Init Duration.
    let cold_log = log(&cold);
    assert!(cold_log.contains(&format!("START RequestId: {request_id} Version: $LATEST")));
    assert!(
        cold_log.contains(&format!("echo: handling {request_id}")),
        "{cold_log}"
    );
    assert!(cold_log.contains(&format!("END RequestId: {request_id}")));
    let report = Report::parse(&cold_log).expect("a REPORT line");
    assert_eq!(report.request_id, request_id);
    assert_eq!(report.memory_size_mb, 256);
    assert!(report.max_memory_used_mb > 0, "{report:?}");
    let init = report
        .init_duration_ms
        .expect("Init Duration on a cold start");
    assert!(report.billed_duration_ms as f64 >= report.duration_ms + init);
    // The coordinator reads the same figures from the header.
    assert_eq!(report_of(cold.log_result().expect("tail")), Some(report));

    let warm = invoke(&client, "echo", json!({})).await;
    assert_eq!(pid(&warm), pid(&cold), "the warm instance is reused");
    let warm_report = Report::parse(&log(&warm)).expect("a REPORT line");
    assert_eq!(warm_report.init_duration_ms, None);
    assert!(!log(&warm).contains(request_id), "only its own lines");
    assert_eq!(lambda.engine().instances_started("echo"), 1);
    lambda.shutdown().await;
}

fn chrono_now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

#[tokio::test]
async fn errors_and_panics_are_unhandled_function_errors_on_the_same_instance() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let failed = invoke(&client, "f", json!({ "action": "fail" })).await;
    assert_eq!(failed.status_code(), 200);
    assert_eq!(error_type(&failed), "TestFailure");
    assert_eq!(body(&failed)["errorMessage"], "failed on purpose");

    let panicked = invoke(&client, "f", json!({ "action": "panic" })).await;
    assert_eq!(panicked.status_code(), 200);
    error_type(&panicked);
    let message = body(&panicked)["errorMessage"].to_string();
    assert!(message.contains("panicked on purpose"), "{message}");

    // Neither error cost the instance, and the SDK did not retry.
    assert_eq!(lambda.engine().instances_started("f"), 1);
    lambda.shutdown().await;
}

#[tokio::test]
async fn an_exit_is_an_exit_error_and_the_next_call_gets_a_new_instance() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let first = pid(&invoke(&client, "f", json!({})).await);
    let exited = invoke(&client, "f", json!({ "action": "exit" })).await;
    assert_eq!(error_type(&exited), "Runtime.ExitError");
    let message = body(&exited)["errorMessage"].to_string();
    assert!(message.contains("exit status: 3"), "{message}");
    assert_eq!(
        Report::parse(&log(&exited)).and_then(|r| r.status),
        Some("error".to_owned())
    );

    let next = invoke(&client, "f", json!({})).await;
    assert_ne!(pid(&next), first, "a new instance");
    assert!(
        Report::parse(&log(&next))
            .and_then(|r| r.init_duration_ms)
            .is_some()
    );
    assert_eq!(lambda.engine().instances_started("f"), 2);
    lambda.shutdown().await;
}

#[tokio::test]
async fn past_its_timeout_the_instance_is_killed() {
    let mut spec = test_function();
    spec.latest.timeout = Duration::from_secs(1);
    let (lambda, client) = serve(vec![("f", spec)]).await;
    let victim = pid(&invoke(&client, "f", json!({})).await);
    let timed_out = invoke(&client, "f", json!({ "action": "sleep", "ms": 5000 })).await;
    assert_eq!(error_type(&timed_out), "Sandbox.Timedout");
    let message = body(&timed_out)["errorMessage"].to_string();
    assert!(
        message.contains("Task timed out after 1.00 seconds"),
        "{message}"
    );
    let tail = log(&timed_out);
    let report = Report::parse(&tail).expect("a REPORT line");
    assert_eq!(report.status.as_deref(), Some("timeout"));
    assert!((1000.0..2000.0).contains(&report.duration_ms), "{report:?}");
    assert!(is_gone(victim), "the timed-out process is killed");

    let again = invoke(&client, "f", json!({ "action": "sleep", "ms": 10 })).await;
    assert_eq!(again.function_error(), None);
    assert_ne!(pid(&again), victim);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_failed_init_is_reported_as_the_invocations_error() {
    let with_init = |mode: &str| {
        let mut spec = test_function();
        spec.latest
            .environment
            .insert("TEST_FUNCTION_INIT".to_owned(), mode.to_owned());
        spec
    };
    let (lambda, client) = serve(vec![
        ("init-fail", with_init("fail")),
        ("init-exit", with_init("exit")),
    ])
    .await;
    let failed = invoke(&client, "init-fail", json!({})).await;
    assert_eq!(error_type(&failed), "Runtime.InitError");
    assert!(
        body(&failed)["errorMessage"]
            .to_string()
            .contains("init failed on purpose")
    );
    let report = Report::parse(&log(&failed)).expect("a REPORT line");
    assert!(report.init_duration_ms.is_some());

    let exited = invoke(&client, "init-exit", json!({})).await;
    assert_eq!(error_type(&exited), "Runtime.ExitError");
    assert!(
        body(&exited)["errorMessage"]
            .to_string()
            .contains("exit status: 4")
    );
    lambda.shutdown().await;
}

fn service_error(error: aws_sdk_lambda::error::SdkError<InvokeError>) -> InvokeError {
    error.into_service_error()
}

#[tokio::test]
async fn unknown_functions_and_qualifiers_are_resource_not_found() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    for (function, qualifier) in [("nope", None), ("f", Some("7")), ("f", Some("live"))] {
        let error = client
            .invoke()
            .function_name(function)
            .set_qualifier(qualifier.map(str::to_owned))
            .send()
            .await
            .expect_err("refused");
        let error = service_error(error);
        assert!(error.is_resource_not_found_exception(), "{error:?}");
        assert!(
            error
                .message()
                .is_some_and(|m| m.contains("Function not found")),
            "{error:?}"
        );
    }
    assert_eq!(lambda.engine().instances_started("f"), 0);
    lambda.shutdown().await;
}

#[tokio::test]
async fn versions_and_aliases_run_their_own_configuration() {
    let mut spec = test_function();
    let mut v1 = spec.latest.clone();
    v1.environment
        .insert("TEST_VERSION".to_owned(), "one".to_owned());
    spec.versions.insert("1".to_owned(), v1);
    spec.aliases.insert("live".to_owned(), "1".to_owned());
    let (lambda, client) = serve(vec![("f", spec)]).await;
    for (qualifier, version, env) in [
        (Some("live"), "1", Some("one")),
        (Some("1"), "1", Some("one")),
        (Some("$LATEST"), "$LATEST", None),
        (None, "$LATEST", None),
    ] {
        let output = client
            .invoke()
            .function_name("f")
            .set_qualifier(qualifier.map(str::to_owned))
            .send()
            .await
            .expect("accepted");
        assert_eq!(output.executed_version(), Some(version));
        assert_eq!(body(&output)["env"]["TEST_VERSION"].as_str(), env);
        assert_eq!(
            body(&output)["env"]["AWS_LAMBDA_FUNCTION_VERSION"].as_str(),
            Some(version)
        );
    }
    // Versions do not share instances.
    assert_eq!(lambda.engine().instances_started("f"), 2);
    lambda.shutdown().await;
}

#[tokio::test]
async fn payload_limits_in_both_directions() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let huge = format!("\"{}\"", "x".repeat(6 * 1024 * 1024));
    let error = client
        .invoke()
        .function_name("f")
        .payload(Blob::new(huge))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(413));
    assert_eq!(
        service_error(error).code(),
        Some("RequestEntityTooLargeException")
    );

    let big = invoke(&client, "f", json!({ "action": "big", "bytes": 7_000_000 })).await;
    assert_eq!(error_type(&big), "Function.ResponseSizeTooLarge");
    let fits = invoke(&client, "f", json!({ "action": "big", "bytes": 1_000_000 })).await;
    assert_eq!(fits.function_error(), None);
    assert_eq!(body(&fits).as_str().map(str::len), Some(1_000_000));
    lambda.shutdown().await;
}

#[tokio::test]
async fn fifty_calls_share_the_reserved_instances_and_one_more_is_throttled() {
    const RESERVED: u32 = 4;
    let mut spec = test_function();
    spec.reserved_concurrency = Some(RESERVED);
    let (lambda, client) = serve(vec![("f", spec)]).await;

    let outputs: Vec<InvokeOutput> = futures::stream::iter(0..50)
        .map(|_| invoke(&client, "f", json!({ "action": "sleep", "ms": 50 })))
        .buffer_unordered(RESERVED as usize)
        .collect()
        .await;
    assert!(outputs.iter().all(|o| o.function_error().is_none()));
    let pids: HashSet<u64> = outputs.iter().map(pid).collect();
    assert_eq!(pids.len(), RESERVED as usize, "{pids:?}");
    assert_eq!(lambda.engine().instances_started("f"), u64::from(RESERVED));

    // All four busy: the fifth concurrent call is refused, with a hint.
    let busy: Vec<_> = (0..RESERVED)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                invoke(&client, "f", json!({ "action": "sleep", "ms": 1500 })).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let error = client
        .invoke()
        .function_name("f")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(429));
    let InvokeError::TooManyRequestsException(throttled) = service_error(error) else {
        panic!("expected TooManyRequestsException");
    };
    assert_eq!(
        throttled.reason(),
        Some(&ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
    );
    assert_eq!(throttled.retry_after_seconds(), Some("1"));
    for call in busy {
        let output = call.await.expect("joins");
        assert_eq!(output.function_error(), None);
    }
    lambda.shutdown().await;
}

#[tokio::test]
async fn event_runs_in_the_background_and_dry_run_runs_nothing() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let dry = client
        .invoke()
        .function_name("f")
        .invocation_type(InvocationType::DryRun)
        .send()
        .await
        .expect("accepted");
    assert_eq!(dry.status_code(), 204);
    assert_eq!(lambda.engine().instances_started("f"), 0);

    let event = client
        .invoke()
        .function_name("f")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(r#"{"action":"sleep","ms":300}"#))
        .send()
        .await
        .expect("accepted");
    assert_eq!(event.status_code(), 202);
    assert!(event.payload().is_none_or(|p| p.as_ref().is_empty()));
    // It runs after the 202: an instance starts, then goes back to the pool.
    wait_for_an_idle_instance(&lambda).await;
    assert_eq!(lambda.engine().instances_started("f"), 1);
    lambda.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_every_instance_it_started() {
    let (lambda, client) = serve(vec![("a", test_function()), ("b", test_function())]).await;
    let mut pids = vec![
        pid(&invoke(&client, "a", json!({})).await),
        pid(&invoke(&client, "b", json!({})).await),
    ];
    // And one caught mid-call.
    let client_in_flight = client.clone();
    let in_flight = tokio::spawn(async move {
        invoke(
            &client_in_flight,
            "a",
            json!({ "action": "sleep", "ms": 60_000 }),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pids.extend(lambda.engine().idle_pids().iter().map(|&p| u64::from(p)));
    lambda.shutdown().await;
    for pid in &pids {
        assert!(is_gone(*pid), "instance {pid} outlived the shutdown");
    }
    let cut_short = in_flight.await.expect("joins");
    assert_eq!(error_type(&cut_short), "Runtime.ExitError");
}

#[tokio::test]
async fn each_process_instance_gets_its_cpu_share() {
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let pid = pid(&invoke(&client, "f", json!({})).await);
    match lambda.cpu_limit_unavailable() {
        None => {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("readable");
            let line = cgroups
                .lines()
                .find(|line| line.contains(lambda.engine().id()))
                .unwrap_or_else(|| panic!("not in the host's cgroup: {cgroups}"));
            let dir = line.rsplit(':').next().expect("a path");
            let quota = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"]
                .iter()
                .find_map(|root| {
                    let base = Path::new(root).join(dir.trim_start_matches('/'));
                    std::fs::read_to_string(base.join("cpu.cfs_quota_us"))
                        .or_else(|_| std::fs::read_to_string(base.join("cpu.max")))
                        .ok()
                })
                .expect("a quota file");
            // 256 MB: 256/1769 of a 20 ms period (v2 names the period too).
            assert!(quota.starts_with("2894"), "{quota}");
            assert!(
                quota
                    .split_whitespace()
                    .nth(1)
                    .is_none_or(|period| period == "20000"),
                "{quota}"
            );
        }
        Some(reason) => {
            // Not root, or no CPU controller: the host says why.
            assert!(!reason.is_empty());
            eprintln!("CPU limits unavailable here: {reason}");
        }
    }
    lambda.shutdown().await;
}

/// An in-process function: echoes, and panics on request.
#[derive(Debug)]
struct InProcessEcho;

struct EchoHandler;

impl InProcessHandler for EchoHandler {
    fn handle(&mut self, event: &[u8]) -> Result<Vec<u8>, Diagnostic> {
        if event.windows(5).any(|w| w == b"panic") {
            panic!("in-process panic");
        }
        Ok(event.to_vec())
    }
}

impl InProcessFunction for InProcessEcho {
    fn init(
        &self,
        _environment: &BTreeMap<String, String>,
    ) -> Result<Box<dyn InProcessHandler>, Diagnostic> {
        Ok(Box::new(EchoHandler))
    }
}

#[tokio::test]
async fn in_process_handlers_answer_through_the_same_api() {
    let (lambda, client) = serve(vec![(
        "inline",
        FunctionSpec::new(Handler::InProcess(Arc::new(InProcessEcho))),
    )])
    .await;
    let echoed = invoke(&client, "inline", json!({ "x": 1 })).await;
    assert_eq!(body(&echoed), json!({ "x": 1 }));
    assert!(
        Report::parse(&log(&echoed))
            .and_then(|r| r.init_duration_ms)
            .is_some()
    );
    let panicked = invoke(&client, "inline", json!("panic")).await;
    assert_eq!(error_type(&panicked), "Runtime.HandlerPanic");
    let again = invoke(&client, "inline", json!(2)).await;
    assert_eq!(body(&again), json!(2));
    assert_eq!(lambda.engine().instances_started("inline"), 1);
    lambda.shutdown().await;
}

#[tokio::test]
async fn a_caller_hanging_up_does_not_cut_the_invocation_short() {
    use aws_sdk_lambda::config::timeout::TimeoutConfig;
    let (lambda, client) = serve(vec![("f", test_function())]).await;
    let impatient = Client::from_conf(
        client
            .config()
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build(),
    );
    let gave_up = impatient
        .invoke()
        .function_name("f")
        .payload(Blob::new(r#"{"action":"sleep","ms":1000}"#))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    // The invocation ends on its own and its instance goes back to the pool.
    wait_for_an_idle_instance(&lambda).await;
    let warm = invoke(&client, "f", json!({})).await;
    assert_eq!(warm.function_error(), None);
    assert_eq!(lambda.engine().instances_started("f"), 1);
    lambda.shutdown().await;
}
