//! Rendering: error answers and the JSON bodies of deploys and their status.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::state::{Clock, Data, Deploy, Outcome, Stored};
use super::{DeployStatus, CM_KIND, CONTROL_REPO, FILE_SYNC_CLIENTS, RBAC_KIND};

/// An error answer: Code Manager's and RBAC's `{kind, msg, details?}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, kind: String, msg: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "kind": kind, "msg": msg.into() }),
        }
    }

    pub(super) fn rbac(status: StatusCode, kind: &str, msg: impl Into<String>) -> Self {
        Self::new(status, format!("{RBAC_KIND}{kind}"), msg)
    }

    pub(super) fn code_manager(status: StatusCode, kind: &str, msg: impl Into<String>) -> Self {
        Self::new(status, format!("{CM_KIND}{kind}"), msg)
    }

    pub(super) fn with_details(mut self, details: Value) -> Self {
        if let Value::Object(map) = &mut self.body {
            map.insert("details".to_owned(), details);
        }
        self
    }

    /// The exact body of the RBAC client middleware (`wrap-block-anonymous-access`).
    pub(super) fn unauthenticated() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "user-unauthenticated",
            "Route requires authentication",
        )
    }

    // Synthetic message: the real one comes from the closed-source RBAC service. It must not
    // echo the token.
    pub(super) fn invalid_token() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "The provided token is not valid.",
        )
    }

    /// The real body (fixture `errors/jenkins-pe2016.4-deploys-expired_token.json`).
    pub(super) fn token_expired() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "token-expired",
            "The provided token has expired.",
        )
    }

    /// The body the research notes quote for a revoked token.
    pub(super) fn token_revoked() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "token-revoked",
            "Authentication token has been revoked.",
        )
    }

    pub(super) fn malformed(msg: impl Into<String>) -> Self {
        Self::code_manager(StatusCode::BAD_REQUEST, "malformed-request", msg)
    }

    pub(super) fn rbac_malformed(msg: impl Into<String>) -> Self {
        Self::rbac(StatusCode::BAD_REQUEST, "malformed-request", msg)
    }

    /// The dry-run failure body of the PE 2017.3 docs (`details` is a string there).
    pub(super) fn collect_failed() -> Self {
        Self::code_manager(
            StatusCode::INTERNAL_SERVER_ERROR,
            "collect-failed",
            "Errors while collecting a list of environments to deploy (exit code: 1)",
        )
        .with_details(Value::String(format!(
            "ERROR\t -> {}\n",
            unreachable_cause()
        )))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body)
    }
}

/// A JSON answer with the content type the RBAC middleware uses.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Error renderer for the shared middleware (outages, injected errors, 429, unknown paths).
pub fn render_error(status: StatusCode, message: &str) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::TOO_MANY_REQUESTS => "too-many-requests",
        StatusCode::SERVICE_UNAVAILABLE => "service-unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "server-error",
        _ => "error",
    };
    ApiError::code_manager(status, kind, message).into_response()
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

fn unreachable_cause() -> String {
    format!(
        "Unable to determine current branches for Git source 'puppet' \
         (/etc/puppetlabs/code-staging/environments)\nOriginal exception:\n\
         Failed to connect to {CONTROL_REPO}: Connection timed out (simulated)"
    )
}

impl Deploy {
    fn error(&self) -> Value {
        let cause = match self.outcome {
            Some(Outcome::Unreachable) => unreachable_cause(),
            _ => format!(
                "Environment(s) '{}' cannot be found in any source and will not be deployed.",
                self.directory
            ),
        };
        json!({
            "kind": format!("{CM_KIND}deploy-failure"),
            "msg": format!(
                "Errors while deploying environment '{}' (exit code: 1):\nERROR\t -> {cause}\n",
                self.directory
            ),
            "details": { "corrected-env-name": self.directory },
        })
    }
}

impl Data {
    pub(super) fn status_body(&self, now: Instant, clock: &Clock) -> Value {
        let mut lists: BTreeMap<&str, Vec<Value>> = ["new", "queued", "deploying", "failed"]
            .into_iter()
            .map(|k| (k, Vec::new()))
            .collect();
        for d in self.deploys.values() {
            let status = d.status(now);
            let mut entry = json!({
                "environment": d.environment,
                "id": d.id,
                "queued-at": clock.render(d.queued_at),
            });
            if status == DeployStatus::Failed {
                entry["error"] = d.error();
            }
            if let Some(list) = lists.get_mut(status.as_str()) {
                list.push(entry);
            }
        }
        let render_stored = |map: &BTreeMap<String, Stored>| -> Vec<Value> {
            map.iter()
                .map(|(environment, s)| {
                    json!({
                        "environment": environment,
                        "date": s.date,
                        "deploy-signature": s.signature,
                    })
                })
                .collect()
        };
        let synced = self.clients == self.storage;
        let clients: serde_json::Map<String, Value> = FILE_SYNC_CLIENTS
            .iter()
            .map(|name| {
                (
                    (*name).to_owned(),
                    json!({
                        "last_check_in_time": clock.render(now),
                        "synced-with-file-sync-storage": synced,
                        "deployed": render_stored(&self.clients),
                    }),
                )
            })
            .collect();
        json!({
            "deploys-status": lists,
            "file-sync-storage-status": { "deployed": render_stored(&self.storage) },
            "file-sync-client-status": {
                "all-synced": synced,
                "file-sync-clients": clients,
            },
        })
    }

    pub(super) fn wait_entry(&self, id: u64, now: Instant) -> Value {
        let Some(d) = self.deploys.get(&id) else {
            // Unreachable: waited-for deploys are pinned against garbage collection.
            return json!({ "id": id, "status": "failed" });
        };
        match (&d.outcome, d.status(now)) {
            (Some(Outcome::Deployed { signature }), DeployStatus::Synced) => json!({
                "environment": d.environment,
                "id": d.id,
                "status": "complete",
                "deploy-signature": signature,
                "file-sync": {
                    "environment-commit": d.environment_commit,
                    "code-commit": d.code_commit,
                },
            }),
            _ => json!({
                "environment": d.environment,
                "id": d.id,
                "status": "failed",
                "error": d.error(),
            }),
        }
    }
}
