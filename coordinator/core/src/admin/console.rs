//! The staff web console at `/`: one HTML page, its script and its style,
//! embedded in the binary (no separate server, no build step, nothing
//! fetched from the internet). It calls the same `/v1` API with the
//! token the user signs in with, and shows only what the token's scopes
//! allow (`GET /v1/whoami`).

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Scripts and styles only from this server; photos from anywhere (a
/// job's photo is shown from its own URL when the browser can load it);
/// API calls only to this server; never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src * data: blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body)
}

/// `GET /`: the page.
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/console.js`.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /console/console.css`.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}
