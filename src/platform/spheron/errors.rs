//! Spheron error answers: the `{message}` body (a string, or a list of strings in the NestJS
//! validation style; `error` as a fallback) and how an answer that is not 2xx becomes a
//! `PlatformError`.

use crate::core::seam::{ErrorKind, PlatformError};
use crate::platform::http::{check_answer, kind_for_status, name_operation};
use reqwest::{Response, StatusCode};
use serde_json::Value;

/// Words that mark a 400 as a billing or plan limit rather than a bad request.
const QUOTA_WORDS: &[&str] = &[
    "balance",
    "quota",
    "insufficient",
    "not enough funds",
    "overdue",
    "subscription",
    "limit reached",
    "limit exceeded",
    "upgrade your plan",
    "payment",
];

/// The `message` of an error body: a string, or the first of a list (NestJS validation).
fn said_in(body: &str) -> (Option<String>, Vec<String>) {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return (None, Vec::new());
    };
    let read = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.trim().to_string()],
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_string())
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut all: Vec<String> = map
        .get("message")
        .map(read)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if all.is_empty() {
        all = map
            .get("error")
            .map(read)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    }
    let joined = (!all.is_empty()).then(|| all.join("; "));
    (joined, all)
}

/// The field a validation message names, in the class-validator style the API's messages
/// use (`"organizationId must be a string"`, `"services.0.serviceCount must not be less than
/// 1"`, `"property foo should not exist"`). This is a heuristic: the API documents no field.
fn field_in(message: &str) -> Option<String> {
    let mut words = message.split_whitespace();
    let mut first = words.next()?;
    let mut second = words.next()?;
    if first == "property" {
        first = second;
        second = words.next()?;
    }
    let ident = first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
        && first.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    (ident && matches!(second, "must" | "should")).then(|| first.to_string())
}

/// Classifies a Spheron error answer (pure, so every shape is unit-tested). The body may be
/// `{message}`, `{message: [..]}`, `{error}`, empty, or not JSON at all.
pub fn error_from(status: StatusCode, body: &str) -> PlatformError {
    let (message, all) = said_in(body);
    let code = status.as_u16();
    let said = message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let lower = said.to_ascii_lowercase();
    let quota = QUOTA_WORDS.iter().any(|w| lower.contains(w));
    let mut kind = kind_for_status(status);
    if quota && matches!(code, 400 | 403 | 422) {
        kind = ErrorKind::QuotaExceeded;
    }
    let field = if kind == ErrorKind::Invalid {
        all.iter().find_map(|m| field_in(m))
    } else {
        None
    };
    let mut text = match (code, kind) {
        (401, _) => format!(
            "the API token was refused (401 Unauthorized: wrong, expired or revoked token): {said}"
        ),
        (_, ErrorKind::QuotaExceeded) => {
            format!("the organization's plan, balance or usage limit does not allow this ({code}): {said}")
        }
        (403, _) => format!(
            "the API token is refused for this (403 Forbidden): it is invalid, or scoped to another organization: {said}"
        ),
        (404, _) => format!("not found (404): {said}"),
        (409, _) => format!("conflicts with the current state (409): {said}"),
        _ => format!("answered {code}: {said}"),
    };
    if let Some(f) = &field {
        text = format!("{text} (field `{f}`)");
    }
    let mut err = PlatformError::new(kind, format!("spheron {text}"));
    err.status = Some(code);
    err.field = field;
    err
}

/// Turns a non-2xx answer into a typed error naming the operation.
pub(super) async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    check_answer(response, |status, body| {
        name_operation("spheron", operation, error_from(status, body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_kinds_and_say_why() {
        let e = error_from(StatusCode::UNAUTHORIZED, r#"{"message":"Unauthorized"}"#);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("token was refused"), "{}", e.message);
        let e = error_from(
            StatusCode::FORBIDDEN,
            r#"{"message":"You don't have access to this organization"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(
            e.message.contains("scoped to another organization"),
            "{}",
            e.message
        );
        assert!(e.message.contains("access to this organization"));
        assert_eq!(
            error_from(
                StatusCode::NOT_FOUND,
                r#"{"message":"Deployment not found"}"#
            )
            .kind,
            ErrorKind::NotFound
        );
        let e = error_from(StatusCode::CONFLICT, r#"{"message":"busy"}"#);
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(
            error_from(StatusCode::PAYMENT_REQUIRED, "").kind,
            ErrorKind::QuotaExceeded
        );
        assert_eq!(
            error_from(StatusCode::BAD_GATEWAY, "<html>").kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, "").kind,
            ErrorKind::RateLimited
        );
    }

    #[test]
    fn balance_messages_are_quota_errors() {
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"message":"Insufficient balance in the organization wallet"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(!e.is_transient());
        assert_eq!(e.field, None);
        let e = error_from(
            StatusCode::FORBIDDEN,
            r#"{"message":"Subscription limit reached for domains"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"message":"services.0.serviceCount must not be less than 1"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("services.0.serviceCount"));
        assert!(e.message.contains("`services.0.serviceCount`"));
        // NestJS lists, `property ... should not exist`, `{error}` only, not JSON.
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"statusCode":400,"message":["property foo should not exist","name must be a string"],"error":"Bad Request"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("foo"));
        assert!(e.message.contains("name must be a string"), "{}", e.message);
        let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":"bad thing"}"#);
        assert!(e.message.contains("bad thing"));
        assert_eq!(e.field, None);
        let e = error_from(StatusCode::BAD_REQUEST, "not json");
        assert!(e.message.contains("Bad Request"), "{}", e.message);
        // Sentences are not fields.
        assert_eq!(field_in("Deployment must be finished first"), None);
        assert_eq!(field_in("Invalid organization"), None);
    }
}
