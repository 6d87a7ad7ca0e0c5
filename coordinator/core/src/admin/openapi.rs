//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, dead_letters, health, jobs, predictions};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "lambdex admin",
        description = "Ad-hoc face age and gender predictions, jobs ahead of the batch backlog, and dead-letter replay. Every /v1 route needs `Authorization: Bearer TOKEN` of a token holding the scope its security requirement names (predict, store, submit, read, replay; set per token in admin.tokens); a token without it is answered 403 naming the scope. Every call that may change state is written to the audit log with the token's name."
    ),
    paths(
        predictions::create,
        jobs::create,
        jobs::show,
        dead_letters::list,
        dead_letters::replay,
        auth::whoami,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The `bearer` scheme the `/v1` routes name.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
