//! Bearer tokens: stored as SHA-256 digests, compared in constant time
//! against every configured one, then rate limited per token.
//!
//! Tokens are 256-bit random strings (`lambdex admin new-token`), so one
//! unsalted SHA-256 is enough to keep them out of the config file: no
//! dictionary reaches them. The limiter is keyed by the token's name, and
//! only a valid token gets a key, so its memory is bounded by the config.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::AdminState;
use super::error::ApiError;
use crate::config::AdminConfig;

/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// The caller a valid token names, for handlers and logs.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

#[derive(Debug)]
pub struct Auth {
    /// (name, SHA-256 digest) of every token.
    tokens: Vec<(String, [u8; 32])>,
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Auth {
    /// From validated settings (each digest is 64 hex digits).
    pub fn new(config: &AdminConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|token| (token.name.clone(), digest_of_hex(&token.sha256)))
            .collect();
        let quota = Quota::per_second(config.rate_per_token).allow_burst(config.burst_per_token);
        Self {
            tokens,
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// The name of the token whose digest is `presented`'s, looking at
    /// every token whatever matches, so timing tells nothing.
    fn name_of(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        let mut any = Choice::from(0);
        for (name, stored) in &self.tokens {
            let matches = digest.ct_eq(stored);
            if bool::from(matches & !any) {
                found = Some(name.as_str());
            }
            any |= matches;
        }
        found
    }
}

/// The token's SHA-256 in hex, as `admin.tokens` stores it.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.trim().as_bytes()))
}

/// A new random token, from the operating system's generator.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("ldx_{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of_hex(text: &str) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    digest
}

/// The `/v1` guard: 401 without a valid bearer token, 429 past its rate.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer token is required",
        ));
    };
    let Some(name) = state.auth.name_of(presented) else {
        tracing::info!(path = %request.uri().path(), "refused a request with an unknown token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is not valid",
        ));
    };
    let name = name.to_owned();
    if let Err(not_until) = state.auth.limiter.check_key(&name) {
        let wait = not_until.wait_time_from(state.auth.clock.now());
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("token {name:?} is over its rate (admin.rate_per_token)"),
        )
        .with_retry_after(wait.as_secs().max(1)));
    }
    request.extensions_mut().insert(Caller(name));
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminToken;

    fn auth(tokens: &[(&str, &str)]) -> Auth {
        let config = AdminConfig {
            tokens: tokens
                .iter()
                .map(|(name, token)| AdminToken {
                    name: (*name).to_owned(),
                    sha256: hash_token(token),
                })
                .collect(),
            ..AdminConfig::default()
        };
        Auth::new(&config)
    }

    #[test]
    fn a_token_is_known_by_its_digest_only() {
        let auth = auth(&[("support", "ldx_one"), ("ops", "ldx_two")]);
        assert_eq!(auth.name_of("ldx_one"), Some("support"));
        assert_eq!(auth.name_of("ldx_two"), Some("ops"));
        assert_eq!(auth.name_of("ldx_three"), None);
        assert_eq!(auth.name_of(""), None);
        // What is stored is not the token.
        assert_eq!(hash_token("ldx_one").len(), 64);
        assert_ne!(hash_token("ldx_one"), "ldx_one");
    }

    #[test]
    fn new_tokens_are_long_and_differ() {
        let (a, b) = (new_token().expect("random"), new_token().expect("random"));
        assert_eq!(a.len(), 4 + 2 * TOKEN_BYTES);
        assert_ne!(a, b);
    }
}
