//! Bearer tokens: stored as SHA-256 digests, compared in constant time
//! against every configured one, then rate limited per token.
//!
//! Each token carries scopes (`admin.tokens.scopes`); every `/v1` route
//! names the one it needs ([`require_scope`]), and a token without it
//! gets 403 naming what is missing.
//!
//! Tokens are 256-bit random strings (`lambdex admin new-token`), so one
//! unsalted SHA-256 is enough to keep them out of the config file: no
//! dictionary reaches them. The limiter is keyed by the token's name, and
//! only a valid token gets a key, so its memory is bounded by the config.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::AdminState;
use super::error::ApiError;
use crate::config::{AdminConfig, Scope};

/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// The caller a valid token names, for handlers and logs.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (never the token).
    pub name: String,
    scopes: BTreeSet<Scope>,
}

impl Caller {
    /// 403 unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        let has: Vec<&str> = self.scopes.iter().map(|scope| scope.as_str()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} lacks the scope \"{scope}\" this needs (it has: {}); scopes are granted in admin.tokens",
                self.name,
                if has.is_empty() {
                    "none".to_owned()
                } else {
                    has.join(", ")
                }
            ),
        ))
    }
}

/// One configured token.
#[derive(Debug)]
struct Known {
    name: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
}

#[derive(Debug)]
pub struct Auth {
    tokens: Vec<Known>,
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Auth {
    /// From validated settings (each digest is 64 hex digits).
    pub fn new(config: &AdminConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|token| Known {
                name: token.name.clone(),
                digest: digest_of_hex(&token.sha256),
                scopes: token.scopes.clone().unwrap_or_default(),
            })
            .collect();
        let quota = Quota::per_second(config.rate_per_token).allow_burst(config.burst_per_token);
        Self {
            tokens,
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// The token whose digest is `presented`'s, looking at every token
    /// whatever matches, so timing tells nothing.
    fn find(&self, presented: &str) -> Option<&Known> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        let mut any = Choice::from(0);
        for known in &self.tokens {
            let matches = digest.ct_eq(&known.digest);
            if bool::from(matches & !any) {
                found = Some(known);
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
    let Some(known) = state.auth.find(presented) else {
        tracing::info!(path = %request.uri().path(), "refused a request with an unknown token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is not valid",
        ));
    };
    let name = known.name.clone();
    if let Err(not_until) = state.auth.limiter.check_key(&name) {
        let wait = not_until.wait_time_from(state.auth.clock.now());
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("token {name:?} is over its rate (admin.rate_per_token)"),
        )
        .with_retry_after(wait.as_secs().max(1)));
    }
    request.extensions_mut().insert(Caller {
        name,
        scopes: known.scopes.clone(),
    });
    Ok(next.run(request).await)
}

/// Who a token is, for the console (it shows only what the scopes allow).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's name.
    token: String,
    /// What it may do.
    scopes: Vec<String>,
}

/// The token's name and scopes (any valid token may ask).
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "tokens",
    responses(
        (status = 200, description = "The token's name and scopes", body = WhoAmI),
        (status = 401, description = "No valid token", body = super::error::ErrorBody),
        (status = 429, description = "Over the token's rate", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: caller.name,
        scopes: caller
            .scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect(),
    })
}

/// A route's guard, after [`require_token`]: 403 unless the token has
/// `scope`.
pub async fn require_scope(
    scope: Scope,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(caller) = request.extensions().get::<Caller>() else {
        // Only routed behind `require_token`; refuse rather than trust.
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer token is required",
        ));
    };
    caller.require(scope)?;
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
                    scopes: Some([Scope::Read].into()),
                })
                .collect(),
            ..AdminConfig::default()
        };
        Auth::new(&config)
    }

    #[test]
    fn a_token_is_known_by_its_digest_only() {
        let auth = auth(&[("support", "ldx_one"), ("ops", "ldx_two")]);
        let name_of = |token| auth.find(token).map(|known| known.name.as_str());
        assert_eq!(name_of("ldx_one"), Some("support"));
        assert_eq!(name_of("ldx_two"), Some("ops"));
        assert_eq!(name_of("ldx_three"), None);
        assert_eq!(name_of(""), None);
        // What is stored is not the token.
        assert_eq!(hash_token("ldx_one").len(), 64);
        assert_ne!(hash_token("ldx_one"), "ldx_one");
    }

    #[test]
    fn a_caller_may_do_only_what_its_scopes_name() {
        let caller = Caller {
            name: "support".to_owned(),
            scopes: [Scope::Predict, Scope::Read].into(),
        };
        assert!(caller.require(Scope::Predict).is_ok());
        assert!(caller.require(Scope::Read).is_ok());
        let refused = caller.require(Scope::Store).expect_err("not granted");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refused.message(),
            "token \"support\" lacks the scope \"store\" this needs (it has: predict, read); scopes are granted in admin.tokens"
        );
        let nothing = Caller {
            name: "new".to_owned(),
            scopes: BTreeSet::new(),
        };
        assert!(
            nothing
                .require(Scope::Read)
                .expect_err("none")
                .message()
                .contains("(it has: none)")
        );
    }

    #[test]
    fn new_tokens_are_long_and_differ() {
        let (a, b) = (new_token().expect("random"), new_token().expect("random"));
        assert_eq!(a.len(), 4 + 2 * TOKEN_BYTES);
        assert_ne!(a, b);
    }
}
