//! `[lambda]`: how the Lambda client is built.

use serde::{Deserialize, Serialize};

/// How the Lambda client is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaConfig {
    /// The AWS region (unset: the standard chain's — `AWS_REGION`, the
    /// profile…).
    pub region: Option<String>,
    /// Another Invoke API endpoint, e.g. `http://127.0.0.1:9001` for
    /// `lambdex local-lambda` (unset: AWS's).
    pub endpoint_url: Option<String>,
    pub credentials: Credentials,
}

impl Default for LambdaConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            credentials: Credentials::Chain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    /// The AWS standard chain: environment, profile, web identity,
    /// container and instance roles.
    Chain,
    /// Fixed dummy credentials, for the local Lambda (which checks none).
    Local,
}
