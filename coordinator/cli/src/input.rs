//! Images named on `lambdex predict`'s command line: a URL is a job like
//! any other (downloaded by [`crate::fetch`], behind its SSRF guard); a
//! local file is read here, within a size cap.

use std::path::Path;

/// The largest image `predict` reads: 50 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} is over the limit of {max_bytes} bytes")]
    TooLarge { origin: String, max_bytes: u64 },
}

/// Reads image files for `predict`.
#[derive(Debug, Clone)]
pub struct Input {
    max_bytes: u64,
}

impl Input {
    pub fn new(max_bytes: u64) -> Self {
        Self { max_bytes }
    }

    pub fn is_url(source: &str) -> bool {
        let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    }

    /// The bytes of the file at `path`.
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, InputError> {
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

    fn too_large(&self, source: &str) -> InputError {
        InputError::TooLarge {
            origin: source.to_owned(),
            max_bytes: self.max_bytes,
        }
    }
}

impl Default for Input {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
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
            .read_file(Path::new("no/such/image.png"))
            .await
            .expect_err("missing");
        assert!(error.to_string().contains("no/such/image.png"), "{error}");
    }

    #[tokio::test]
    async fn a_file_over_the_cap_is_refused() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let error = Input::new(10)
            .read_file(Path::new(path))
            .await
            .expect_err("too large");
        assert!(matches!(error, InputError::TooLarge { .. }), "{error:?}");
    }
}
