//! Codesphere's error answers (`{status, title, detail, traceId}`) as typed platform errors.

use crate::core::seam::{ErrorKind, PlatformError};
use crate::platform::http::{check_answer, kind_for_status};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

/// The error body of every non-2xx answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Problem {
    status: Option<u16>,
    title: Option<String>,
    detail: Option<String>,
    trace_id: Option<String>,
}

/// Turns a non-2xx answer into a typed error carrying the platform's `title` and `detail`
/// (the `traceId` is kept apart: it changes with every call).
pub(crate) async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    check_answer(response, |status, body| {
        problem_error(operation, status, body)
    })
    .await
}

/// Classifies an error answer (pure, so every shape is unit-tested).
pub(crate) fn problem_error(operation: &str, status: StatusCode, body: &str) -> PlatformError {
    let problem: Option<Problem> = serde_json::from_str(body).ok();
    let mut kind = kind_for_status(status);
    let (title, detail, trace_id) = match &problem {
        Some(p) => (p.title.clone(), p.detail.clone(), p.trace_id.clone()),
        None => (None, None, None),
    };
    let text = [title.as_deref(), detail.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    // Plan, seat, billing and quota limits come back as 400 (or 402) with a telling message.
    let lower = text.to_ascii_lowercase();
    if kind == ErrorKind::Invalid
        && ["limit", "quota", "billing", "seats", "exceed"]
            .iter()
            .any(|w| lower.contains(w))
    {
        kind = ErrorKind::QuotaExceeded;
    }
    let shown = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let code = problem
        .as_ref()
        .and_then(|p| p.status)
        .unwrap_or(status.as_u16());
    let mut err = PlatformError::new(
        kind,
        format!("codesphere {operation} answered {code}: {shown}"),
    );
    err.status = Some(status.as_u16());
    err.trace_id = trace_id;
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_bodies_become_typed_errors() {
        let body = r#"{"status":401,"title":"Unauthorized","detail":"Authorization information is missing or invalid.","traceId":"t-1"}"#;
        let e = problem_error("listTeams", StatusCode::UNAUTHORIZED, body);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.trace_id.as_deref(), Some("t-1"));
        assert!(e
            .message
            .contains("Authorization information is missing or invalid."));
        assert!(!e.message.contains("t-1"), "trace ids stay out of messages");
    }

    #[test]
    fn plan_limits_and_billing_are_quota_errors() {
        let body = r#"{"status":400,"title":"Bad Request","detail":"Replicas exceed the plan limit of 3","traceId":"x"}"#;
        assert_eq!(
            problem_error("updateWorkspace", StatusCode::BAD_REQUEST, body).kind,
            ErrorKind::QuotaExceeded
        );
        let body = r#"{"status":402,"title":"Payment Required","detail":"Missing billing information","traceId":"x"}"#;
        assert_eq!(
            problem_error("createWorkspace", StatusCode::PAYMENT_REQUIRED, body).kind,
            ErrorKind::QuotaExceeded
        );
        let body = r#"{"status":400,"title":"Bad Request","detail":"Path or request body variable does not match schema","traceId":"x"}"#;
        assert_eq!(
            problem_error("createWorkspace", StatusCode::BAD_REQUEST, body).kind,
            ErrorKind::Invalid
        );
    }

    #[test]
    fn non_json_errors_still_say_something() {
        let e = problem_error(
            "getWorkspace",
            StatusCode::BAD_GATEWAY,
            "<html>bad gateway</html>",
        );
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("502"), "{}", e.message);
    }
}
