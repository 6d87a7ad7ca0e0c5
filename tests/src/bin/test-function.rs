//! A small `lambda_runtime` function for testing the local Lambda: the
//! event says what to do.
//!
//! - `{"action": "echo", …}`: answers the event, its own pid, request id,
//!   function ARN, deadline and Lambda environment.
//! - `fail`: a returned error; `panic`: a panic; `exit`: `exit(3)`.
//! - `sleep` with `ms`: answers after that long.
//! - `big` with `bytes`: answers a string that long.
//! - `log` with `lines`: prints that many numbered lines, then answers.
//!
//! `TEST_FUNCTION_INIT=fail` reports an init error; `exit` exits during
//! init; `sleep:MS` takes that long to init.

use std::time::Duration;

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, context) = event.into_parts();
    let number = |key: &str| payload.get(key).and_then(Value::as_u64).unwrap_or(0);
    match payload
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("echo")
    {
        "fail" => Err(Diagnostic {
            error_type: "TestFailure".to_owned(),
            error_message: "failed on purpose".to_owned(),
        }),
        "panic" => panic!("panicked on purpose"),
        "exit" => std::process::exit(3),
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            Ok(json!({ "pid": std::process::id(), "slept_ms": number("ms") }))
        }
        "big" => Ok(json!(
            "x".repeat(usize::try_from(number("bytes")).unwrap_or(0))
        )),
        "log" => {
            for i in 0..number("lines") {
                println!("log line {i}");
            }
            Ok(json!({ "pid": std::process::id() }))
        }
        _ => {
            println!("echo: handling {}", context.request_id);
            let env: serde_json::Map<String, Value> = std::env::vars()
                .filter(|(name, _)| name.starts_with("AWS_") || name.starts_with("TEST_"))
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            Ok(json!({
                "pid": std::process::id(),
                "event": payload,
                "request_id": context.request_id,
                "function_arn": context.invoked_function_arn,
                "deadline_ms": context.deadline,
                "env": env,
            }))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambdex_functions::runtime::init(|| match std::env::var("TEST_FUNCTION_INIT").as_deref() {
        Ok("fail") => Err("init failed on purpose".into()),
        Ok("exit") => std::process::exit(4),
        Ok(sleep) if sleep.starts_with("sleep:") => {
            let ms = sleep["sleep:".len()..].parse().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        }
        _ => Ok(()),
    })
    .await?;
    lambda_runtime::run(service_fn(handle)).await
}
