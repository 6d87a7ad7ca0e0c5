//! The audit trail: one line per state-changing call (a stored
//! prediction, submitted jobs, a replay), refused or not, naming the token
//! (never the token itself), the request and the outcome.
//!
//! Lines go to the log (target `lambdex::audit`) and, when
//! `admin.audit_log` names a file, are appended to it as JSON, one object
//! per line, so they outlive the process's log retention.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AdminState;
use super::auth::Caller;
use super::error::ErrorMessage;

/// What a handler tells the audit line about the request it served (job
/// ids, counts), set on its response.
#[derive(Debug, Clone)]
pub struct Detail(pub serde_json::Value);

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: DateTime<Utc>,
    /// The token's name; `null` when no valid token was shown.
    pub token: Option<String>,
    pub method: String,
    /// Path and query.
    pub request: String,
    pub status: u16,
    /// What the handler did, or the error it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("admin.audit_log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// Where audit lines go.
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
}

impl Audit {
    /// To the log, and appended to `path` when set (created if missing).
    pub fn open(path: Option<&Path>) -> Result<Self, AuditError> {
        let file = path
            .map(|path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError {
                        path: path.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        Ok(Self {
            file: file.map(Mutex::new),
        })
    }

    pub fn record(&self, entry: &Entry) {
        let line = serde_json::to_string(entry).unwrap_or_default();
        tracing::info!(target: "lambdex::audit", token = entry.token.as_deref().unwrap_or("-"),
            method = %entry.method, request = %entry.request, status = entry.status, "{line}");
        if let Some(file) = &self.file {
            // One write of a whole line: lines from concurrent requests
            // never interleave.
            let written = file
                .lock()
                .map_err(|_| std::io::Error::other("the audit file's lock is poisoned"))
                .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
            if let Err(error) = written {
                tracing::error!(%error, "cannot append to admin.audit_log: the line is in this log only");
            }
        }
    }
}

/// The `/v1` layer that audits every call that may change state: every
/// method but GET and HEAD.
pub async fn audit_changes(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let token = request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.name.clone());
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let response = next.run(request).await;
    state.audit.record(&Entry {
        time: Utc::now(),
        token,
        method,
        request: target,
        status: response.status().as_u16(),
        detail: response
            .extensions()
            .get::<Detail>()
            .map(|detail| detail.0.clone()),
        error: response
            .extensions()
            .get::<ErrorMessage>()
            .map(|message| message.0.clone()),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_as_json_objects() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").expect("written");
        let audit = Audit::open(Some(&path)).expect("opens");
        let entry = Entry {
            time: Utc::now(),
            token: Some("support".to_owned()),
            method: "POST".to_owned(),
            request: "/v1/jobs".to_owned(),
            status: 202,
            detail: Some(serde_json::json!({"job_ids": ["a"]})),
            error: None,
        };
        audit.record(&entry);
        audit.record(&Entry {
            status: 403,
            detail: None,
            error: Some("lacks the scope".to_owned()),
            ..entry
        });
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1]["token"], "support");
        assert_eq!(lines[1]["detail"]["job_ids"][0], "a");
        assert_eq!(lines[2]["status"], 403);
        assert_eq!(lines[2]["error"], "lacks the scope");
        assert!(lines[2].get("detail").is_none());
    }

    #[test]
    fn an_audit_file_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let error =
            Audit::open(Some(&dir.path().join("missing/audit.jsonl"))).expect_err("no such folder");
        assert!(error.to_string().starts_with("admin.audit_log "), "{error}");
    }
}
