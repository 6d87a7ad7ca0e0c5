//! The one `aws-sdk-lambda` client every call shares, built from the
//! configuration: AWS's standard credential chain and region for a real
//! endpoint, fixed dummy credentials for the local Lambda. The SDK's own
//! retries are off: [`crate::lambda::caller`] owns retrying, with its
//! classifier, budget and breaker, and two stacked retry loops would
//! multiply attempts.
//! Its stalled-stream protection is off too: every attempt has its own
//! timeout ([`crate::lambda::invoke`]), and the protection's per-poll
//! bookkeeping showed in the coordinator's profile.
//!
//! The HTTPS client is built here, on rustls with ring, the one TLS
//! provider of the workspace (the SDK's default client would bring
//! aws-lc-rs as well).

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::config::{SharedHttpClient, StalledStreamProtectionConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::config::{self, LambdaConfig};

/// The region a local endpoint is addressed as when none is set.
pub const LOCAL_REGION: &str = "us-east-1";

/// The client `config` describes.
pub async fn from_config(config: &LambdaConfig) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(endpoint_url) = &config.endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    match (&config.region, config.credentials) {
        (Some(region), _) => loader = loader.region(Region::new(region.clone())),
        (None, config::Credentials::Local) => loader = loader.region(Region::new(LOCAL_REGION)),
        (None, config::Credentials::Chain) => {}
    }
    if config.credentials == config::Credentials::Local {
        loader = loader.credentials_provider(local_credentials());
    }
    Client::new(&loader.load().await)
}

/// A client for the local Lambda at `endpoint_url`.
pub fn local(endpoint_url: &str) -> Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint_url)
        .credentials_provider(local_credentials())
        .http_client(https_client())
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// An HTTP(S) client on rustls with ring.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The local Lambda checks no credentials; the SDK still signs requests.
fn local_credentials() -> Credentials {
    Credentials::new(
        "lambdex-local",
        "lambdex-local",
        None,
        None,
        "lambdex-local",
    )
}
