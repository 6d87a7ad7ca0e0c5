//! Where `lambdex predict` gets an image: a local file or an http(s) URL.
//! (The queue worker's hardened fetch, with its SSRF guard, is the pipeline
//! issue's; this is the command-line path, where the user names the image.)

use std::path::Path;
use std::time::Duration;

/// The largest image `predict` reads: 50 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// How long a download may take in all.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{origin} is over the limit of {max_bytes} bytes")]
    TooLarge { origin: String, max_bytes: u64 },
}

/// Reads images for `predict`.
#[derive(Debug, Clone)]
pub struct Input {
    client: reqwest::Client,
    max_bytes: u64,
}

impl Input {
    pub fn new(max_bytes: u64, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("lambdex/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with only timeouts and a redirect policy builds");
        Self { client, max_bytes }
    }

    pub fn is_url(source: &str) -> bool {
        let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    }

    /// The bytes at `source`, a path or an http(s) URL.
    pub async fn read(&self, source: &str) -> Result<Vec<u8>, InputError> {
        if Self::is_url(source) {
            self.download(source).await
        } else {
            self.read_file(Path::new(source)).await
        }
    }

    async fn read_file(&self, path: &Path) -> Result<Vec<u8>, InputError> {
        let read_error = |source| InputError::Read {
            path: path.display().to_string(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(read_error)?.len();
        if size > self.max_bytes {
            return Err(self.too_large(&path.display().to_string()));
        }
        tokio::fs::read(path).await.map_err(read_error)
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, InputError> {
        let failed = |reason: String| InputError::Download {
            url: url.to_owned(),
            reason,
        };
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| failed(error.to_string()))?;
        let mut body = Vec::new();
        // Stop reading as soon as the cap is passed, whatever the headers say.
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| failed(error.to_string()))?
        {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_large(url));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn too_large(&self, source: &str) -> InputError {
        InputError::TooLarge {
            origin: source.to_owned(),
            max_bytes: self.max_bytes,
        }
    }
}

impl Default for Input {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES, DEFAULT_DOWNLOAD_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_urls_from_paths() {
        assert!(Input::is_url("https://example.com/a.jpg"));
        assert!(Input::is_url("HTTP://example.com/a.jpg"));
        assert!(!Input::is_url("tests/fixtures/astronaut.png"));
        assert!(!Input::is_url("http"));
    }

    #[tokio::test]
    async fn a_missing_file_names_the_path() {
        let error = Input::default()
            .read("no/such/image.png")
            .await
            .expect_err("missing");
        assert!(error.to_string().contains("no/such/image.png"), "{error}");
    }

    #[tokio::test]
    async fn a_file_over_the_cap_is_refused() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let error = Input::new(10, DEFAULT_DOWNLOAD_TIMEOUT)
            .read(path)
            .await
            .expect_err("too large");
        assert!(matches!(error, InputError::TooLarge { .. }), "{error:?}");
    }
}
