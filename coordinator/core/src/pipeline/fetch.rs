//! Downloading a job's image, here rather than on Lambda where every
//! millisecond is billed: timeouts, a byte cap enforced while streaming,
//! limited redirects, the content sniffed from its first bytes, the SSRF
//! guard, and retries of what can succeed next time.

use std::sync::Arc;
use std::time::Duration;

use image::ImageFormat;
use lambdex_functions::decode::SUPPORTED_FORMATS;
use lambdex_proto::FailureClass;
use lambdex_proto::text::redacted_url;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use tokio::time::{Instant, timeout_at};

use crate::config::{FetchConfig, RetryConfig};
use crate::pipeline::budget::{JobMemory, Reservation};
use crate::pipeline::ssrf::{Guard, Refused, refusal_in};
use crate::retry::{Retryable, retrying};

/// Bytes enough for `image::guess_format` to tell every supported format.
const SNIFF_BYTES: usize = 16;
/// The most a download's buffer reserves from its `Content-Length` before
/// any byte arrives; bigger bodies grow it as they come.
const PREALLOCATE_MAX_BYTES: usize = 1024 * 1024;
/// The memory a body byte holds until its job has its faces: the body,
/// then its base64 text, then the request that carries it.
pub const HELD_PER_BODY_BYTE: usize = 4;
/// A body of unknown length is reserved for in steps of this many bytes.
const RESERVE_STEP_BYTES: usize = 1024 * 1024;

/// A downloaded image.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
    /// Attempts made, the successful one included.
    pub attempts: usize,
    /// The memory the image holds, from the budget, until dropped.
    pub reservation: Reservation,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(Refused),
    #[error("{url} is not an http(s) URL")]
    BadUrl { url: String },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{url} is over the limit of {max_bytes} bytes")]
    TooLarge { url: String, max_bytes: u64 },
    #[error("{url} is not a JPEG, PNG, WebP or GIF image (its content says {found})")]
    NotAnImage { url: String, found: String },
    #[error("{url} did not download within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} redirected more than {max} times")]
    TooManyRedirects { url: String, max: usize },
    #[error(
        "{url} redirected to a URL carrying user information (user:password@host): credentials are never sent with a download"
    )]
    CredentialsInRedirect { url: String },
    #[error("cannot download {url}: {reason}")]
    Network { url: String, reason: String },
}

impl FetchError {
    /// The failure's class.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Refused(_) => FailureClass::FetchRefused,
            Self::BadUrl { .. } | Self::CredentialsInRedirect { .. } => FailureClass::InvalidUrl,
            Self::Status { .. } => FailureClass::FetchStatus,
            Self::TooLarge { .. } => FailureClass::ImageTooLarge,
            Self::NotAnImage { .. } => FailureClass::NotAnImage,
            Self::Timeout { .. } => FailureClass::FetchTimeout,
            Self::TooManyRedirects { .. } => FailureClass::TooManyRedirects,
            Self::Network { .. } => FailureClass::FetchFailed,
        }
    }
}

impl Retryable for FetchError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout { .. } | Self::Network { .. } => true,
            Self::Refused(_)
            | Self::BadUrl { .. }
            | Self::TooLarge { .. }
            | Self::NotAnImage { .. }
            | Self::TooManyRedirects { .. }
            | Self::CredentialsInRedirect { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Downloads images; cheap to clone, one per coordinator.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    config: FetchConfig,
    retry: RetryConfig,
}

impl Fetcher {
    pub fn new(config: &FetchConfig, retry: &RetryConfig) -> Result<Self, reqwest::Error> {
        let guard = Arc::new(Guard::new(config.allow.clone()));
        let redirect_guard = Arc::clone(&guard);
        let max_redirects = config.max_redirects;
        let client = reqwest::Client::builder()
            // `fetch.timeout` is kept by `once`, which does not count the
            // waits for memory: reqwest's own would.
            .connect_timeout(config.connect_timeout)
            // A proxy would resolve names itself, past the guard.
            .no_proxy()
            .dns_resolver(guard.resolver())
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    let url = attempt.previous()[0].to_string();
                    return attempt.error(FetchError::TooManyRedirects {
                        url,
                        max: max_redirects,
                    });
                }
                if !matches!(attempt.url().scheme(), "http" | "https") {
                    let url = redacted_url(attempt.url().as_str()).into_owned();
                    return attempt.error(FetchError::BadUrl { url });
                }
                if !attempt.url().username().is_empty() || attempt.url().password().is_some() {
                    let url = attempt.previous()[0].to_string();
                    return attempt.error(FetchError::CredentialsInRedirect { url });
                }
                match redirect_guard.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .user_agent(concat!("lambdex/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            guard,
            config: config.clone(),
            retry: retry.clone(),
        })
    }

    /// The image at `url`, retried while the failure is transient; its
    /// bytes are reserved from `memory` as they arrive.
    #[tracing::instrument(skip(self, memory), fields(attempts))]
    pub async fn fetch(&self, url: &str, memory: &JobMemory) -> Result<Fetched, FetchError> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            // A job's URL with credentials is refused before it gets here.
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| FetchError::BadUrl {
                url: redacted_url(url).into_owned(),
            })?;
        self.guard.check_url(&parsed).map_err(FetchError::Refused)?;
        let mut attempts = 0;
        let fetched = retrying(
            &self.retry,
            self.config.max_attempts,
            None,
            || {
                attempts += 1;
                self.once(&parsed, memory)
            },
            |error, wait| tracing::info!(%error, ?wait, "Retrying download."),
        )
        .await;
        tracing::Span::current().record("attempts", attempts);
        fetched.map(|(bytes, format, reservation)| Fetched {
            bytes,
            format,
            attempts,
            reservation,
        })
    }

    /// One attempt, within `fetch.timeout` of its own: the time it waits
    /// for memory moves its deadline on.
    async fn once(
        &self,
        url: &reqwest::Url,
        memory: &JobMemory,
    ) -> Result<(Vec<u8>, ImageFormat, Reservation), FetchError> {
        let mut deadline = Instant::now() + self.config.timeout;
        let timed_out = || FetchError::Timeout {
            url: url.to_string(),
            timeout: self.config.timeout,
        };
        let mut response = timeout_at(deadline, self.client.get(url.clone()).send())
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| self.request_error(url, &error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                retry_after: (status == StatusCode::TOO_MANY_REQUESTS)
                    .then(|| retry_after(response.headers()))
                    .flatten(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            max_bytes: self.config.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|length| length > self.config.max_bytes)
        {
            return Err(too_large());
        }
        let announced = response
            .content_length()
            .and_then(|length| usize::try_from(length).ok());
        // The announced length is reserved at once; without one, or past
        // it, the body is reserved for step by step as it comes.
        let waiting = Instant::now();
        let mut reservation = memory
            .reserve(announced.unwrap_or(0) * HELD_PER_BODY_BYTE)
            .await;
        deadline += waiting.elapsed();
        let mut reserved_body = announced.unwrap_or(0);
        // Sized once from the header, up to a bound: a server may announce
        // more than it sends.
        let mut body = Vec::with_capacity(announced.unwrap_or(0).min(PREALLOCATE_MAX_BYTES));
        let mut format = None;
        while let Some(chunk) = timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| self.request_error(url, &error))?
        {
            // The cap holds whatever the headers said.
            if (body.len() + chunk.len()) as u64 > self.config.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
            if body.len() > reserved_body {
                let step = (body.len() - reserved_body).max(RESERVE_STEP_BYTES);
                let waiting = Instant::now();
                reservation = memory.grow(reservation, step * HELD_PER_BODY_BYTE).await;
                deadline += waiting.elapsed();
                reserved_body += step;
            }
            if format.is_none() && body.len() >= SNIFF_BYTES {
                format = Some(sniff(url, &body)?);
            }
        }
        let format = match format {
            Some(format) => format,
            None => sniff(url, &body)?,
        };
        Ok((body, format, reservation))
    }

    fn request_error(&self, url: &reqwest::Url, error: &reqwest::Error) -> FetchError {
        if let Some(refused) = refusal_in(error) {
            return FetchError::Refused(refused.clone());
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = cause {
            // What the redirect policy stopped with.
            if let Some(error) = current.downcast_ref::<FetchError>() {
                return error.clone();
            }
            cause = current.source();
        }
        if error.is_timeout() {
            FetchError::Timeout {
                url: url.to_string(),
                timeout: self.config.timeout,
            }
        } else {
            FetchError::Network {
                url: url.to_string(),
                reason: error_chain(error),
            }
        }
    }
}

/// The format the content's first bytes say, if lambdex takes it.
fn sniff(url: &reqwest::Url, bytes: &[u8]) -> Result<ImageFormat, FetchError> {
    let not_an_image = |found: String| FetchError::NotAnImage {
        url: url.to_string(),
        found,
    };
    match image::guess_format(bytes) {
        Ok(format) if SUPPORTED_FORMATS.contains(&format) => Ok(format),
        Ok(format) => Err(not_an_image(format!("{format:?}"))),
        Err(_) if bytes.is_empty() => Err(not_an_image("nothing: the body is empty".to_owned())),
        Err(_) => Err(not_an_image("no known image format".to_owned())),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not worth honouring).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// An error and its causes, `: `-joined.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let next = current.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_the_format_not_the_name() {
        let url = reqwest::Url::parse("https://example.com/a.jpg").expect("a URL");
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
        ];
        assert_eq!(sniff(&url, &png).expect("a PNG"), ImageFormat::Png);
        let error = sniff(&url, b"<html><body>hello</body></html>").expect_err("html");
        assert!(matches!(error, FetchError::NotAnImage { .. }), "{error:?}");
        assert!(!error.is_retryable());
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        let status = |status| FetchError::Status {
            url: "u".into(),
            status,
            retry_after: None,
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(403).is_retryable());
    }
}
