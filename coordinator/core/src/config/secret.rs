//! Settings that carry secrets: a password or API key ([`Secret`]), or a
//! URL that may hold one in its user information ([`CredentialUrl`]).
//!
//! Both read and write as plain strings in the settings file, but their
//! `Debug` and `Display` never show the secret, so no `{:?}` of the
//! settings, error message or log line can leak it; the value is reached
//! only through `expose`, at the one place that hands it to a client.
//! (The `secrecy` crate's `SecretString` would add zeroing on drop, but
//! offers neither equality nor serialization, which the settings need;
//! the values are copied into the clients anyway.)

use std::fmt;

use serde::{Deserialize, Serialize};

/// What is shown in place of a secret.
pub const REDACTED: &str = "REDACTED";

/// A password or key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A service's URL, which may carry `user:password@`: shown with the
/// password replaced.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The URL with its password: only for the client that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL to show: its password (and any user information that does
    /// not parse as a URL's) replaced by [`REDACTED`].
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Only a URL that cannot hold a password refuses one.
                    let _ = url.set_password(Some(REDACTED));
                }
                url.to_string()
            }
            // Not a URL, so nothing tells where a password would be.
            Err(_) if self.0.contains('@') => REDACTED.to_owned(),
            Err(_) => self.0.clone(),
        }
    }
}

impl From<&str> for CredentialUrl {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for CredentialUrl {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_shown() {
        let secret = Secret::new("s3cret");
        assert_eq!(
            format!("{secret:?} {secret} {secret:#?}"),
            "REDACTED REDACTED REDACTED"
        );
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(serde_json::to_string(&secret).expect("plain"), "\"s3cret\"");
    }

    #[test]
    fn a_urls_password_is_never_shown() {
        for (url, shown) in [
            (
                "amqps://worker:s3cret@mq.example.com/prod",
                "amqps://worker:REDACTED@mq.example.com/prod",
            ),
            (
                "http://elastic:s3cret@10.0.0.1:9200",
                "http://elastic:REDACTED@10.0.0.1:9200/",
            ),
            ("http://127.0.0.1:9200", "http://127.0.0.1:9200/"),
            ("not a url:s3cret@host", "REDACTED"),
        ] {
            let url = CredentialUrl::from(url);
            assert_eq!(url.redacted(), shown);
            assert_eq!(format!("{url}"), shown);
            assert_eq!(format!("{url:?}"), format!("{shown:?}"));
        }
    }
}
