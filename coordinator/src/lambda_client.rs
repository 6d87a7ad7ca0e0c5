//! The `aws-sdk-lambda` client lambdex calls its functions with.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};

/// The region a local endpoint is addressed as.
pub const LOCAL_REGION: &str = "us-east-1";

/// A client for the local Lambda at `endpoint_url`: static credentials
/// (the local Lambda does not check them) and no SDK retries — whoever
/// calls decides what to retry.
pub fn local(endpoint_url: &str) -> Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint_url)
        .credentials_provider(Credentials::new(
            "lambdex-local",
            "lambdex-local",
            None,
            None,
            "lambdex-local",
        ))
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}
