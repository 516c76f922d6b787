//! Code Manager and RBAC error answers: a JSON object with `kind` is an error whatever the
//! HTTP status (some PE versions answer errors with 200), and how such an answer, or any other
//! that is not 2xx, becomes a `PlatformError`; and the redaction that keeps tokens, passwords
//! and `token=` values out of every message.

use super::wire::CmError;
use crate::core::seam::{ErrorKind, PlatformError};
use crate::platform::http::kind_for_status;
use reqwest::StatusCode;
use serde_json::Value;

/// How much of a platform's text is kept in an error message.
const MAX_TEXT: usize = 600;

/// The error object of a body, if the body is one: a JSON object with a string `kind`.
pub fn error_object(body: &str) -> Option<CmError> {
    let value: Value = serde_json::from_str(body).ok()?;
    let map = value.as_object()?;
    let kind = map.get("kind")?.as_str()?.to_owned();
    let msg = match map.get("msg") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let details = map.get("details").filter(|d| !d.is_null()).cloned();
    Some(CmError { kind, msg, details })
}

/// Turns an answer into its JSON body or a typed error. A JSON object with `kind` is an error
/// whatever the status (Code Manager has answered errors with 200); any other 2xx body is
/// returned (an empty one as `null`, a non-JSON one as a string); other statuses are errors.
pub fn classify(status: StatusCode, body: &str) -> Result<Value, PlatformError> {
    if let Some(error) = error_object(body) {
        return Err(kind_error(status, &error));
    }
    if status.is_success() {
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        return Ok(serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())));
    }
    let shown = match shorten(body.trim()) {
        s if s.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        s => s,
    };
    let mut err = PlatformError::new(
        kind_for_status(status),
        format!("answered {}: {shown}", status.as_u16()),
    );
    err.status = Some(status.as_u16());
    Err(err)
}

/// The error for a `{kind, msg, details}` body.
fn kind_error(status: StatusCode, error: &CmError) -> PlatformError {
    let details = error.details_text().map(shorten);
    let (kind, what) = match error.short_kind() {
        "user-unauthenticated" => (
            ErrorKind::Unauthorized,
            "Code Manager got no RBAC token it accepts".to_owned(),
        ),
        "invalid-token" => (
            ErrorKind::Unauthorized,
            "the RBAC token is not valid: put a valid token or login in the Secret".to_owned(),
        ),
        "token-expired" => (
            ErrorKind::Unauthorized,
            "the RBAC token has expired".to_owned(),
        ),
        "token-timed-out" => (
            ErrorKind::Unauthorized,
            "the RBAC token has expired after a period of inactivity".to_owned(),
        ),
        "token-revoked" => (
            ErrorKind::Unauthorized,
            "the RBAC token has been revoked".to_owned(),
        ),
        "user-revoked" => (
            ErrorKind::Unauthorized,
            "the RBAC user has been revoked".to_owned(),
        ),
        "permission-denied" => (
            ErrorKind::Forbidden,
            "the RBAC user lacks a permission (deploying needs \"Puppet environment: Deploy code\")"
                .to_owned(),
        ),
        "collect-failed" => (
            ErrorKind::Invalid,
            format!(
                "the control repository is not reachable: {}",
                details.as_deref().unwrap_or("no details given")
            ),
        ),
        "unrecognized-webhook-type" | "malformed-request" | "schema-violation" => (
            ErrorKind::Invalid,
            "Code Manager rejected the request".to_owned(),
        ),
        "server-error" => (
            ErrorKind::Unavailable,
            "Code Manager had an internal error".to_owned(),
        ),
        name if name.ends_with("not-found") => (
            ErrorKind::NotFound,
            "Code Manager found no such object".to_owned(),
        ),
        _ if status.is_client_error() || status.is_server_error() => (
            kind_for_status(status),
            "Code Manager reported an error".to_owned(),
        ),
        // An unknown error kind under a 2xx: worth retrying later, not a spec to fix.
        _ => (
            ErrorKind::Unavailable,
            "Code Manager reported an error".to_owned(),
        ),
    };
    let mut message = format!("{what} ({}: {}", error.kind, shorten(error.msg.trim_end()));
    if error.short_kind() != "collect-failed" {
        if let Some(d) = &details {
            message.push_str(": ");
            message.push_str(d);
        }
    }
    message.push(')');
    if !status.is_client_error() && !status.is_server_error() {
        message.push_str(&format!(" [HTTP {}]", status.as_u16()));
    }
    let mut err = PlatformError::new(kind, message);
    err.status = Some(status.as_u16());
    err
}

/// Removes secrets from a text: each given secret, and the value of every `token=` parameter.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if secret.len() >= 4 {
            out = out.replace(secret, "<redacted>");
        }
    }
    let lower = out.to_ascii_lowercase();
    let mut result = String::with_capacity(out.len());
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("token=") {
        let value_start = search + found + "token=".len();
        let value_end = out[value_start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ')' | '<' | '>' | '#' | ',')
            })
            .map_or(out.len(), |i| value_start + i);
        result.push_str(&out[rest..value_start]);
        if value_end > value_start {
            result.push_str("<redacted>");
        }
        rest = value_end;
        search = value_end.max(value_start);
    }
    result.push_str(&out[rest..]);
    result
}

/// At most `MAX_TEXT` characters of a platform's text.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

pub(super) fn scrub(mut error: PlatformError, secrets: &[&str]) -> PlatformError {
    error.message = redact(&error.message, secrets);
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::codemanager::wire::tests::{answer, fixture};

    #[test]
    fn the_expired_token_body_is_an_expiry() {
        let name = "errors/jenkins-pe2016.4-deploys-expired_token.json";
        let e = answer(name, 401).expect_err("an error");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.status, Some(401));
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(e.message.contains("puppetlabs.rbac/token-expired"));
        assert!(e.message.contains("The provided token has expired."));
        let o = error_object(&fixture(name)).expect("object");
        assert!(o.is_expiry());
        assert_eq!(o.details, None);
        // The same body under a 200 is still the same error.
        assert_eq!(
            answer(name, 200).expect_err("error").kind,
            ErrorKind::Unauthorized
        );
    }

    #[test]
    fn an_error_object_under_200_is_an_error() {
        let name = "errors/pejava-puppet_general_fail.json";
        let e = answer(name, 200).expect_err("200 with kind is an error");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message
                .contains("puppetlabs.code-manager/unrecognized-webhook-type"),
            "{}",
            e.message
        );
        assert!(e.message.contains("Unrecognized webhook type: 'githubby'"));
        assert!(e.message.contains("github gitlab stash tfs-git bitbucket"));
        assert!(e.message.contains("[HTTP 200]"));
        let o = error_object(&fixture(name)).expect("object");
        assert_eq!(o.corrected_name(), None, "details is a string here");
        assert_eq!(
            o.details_text(),
            Some("Currently supported valid webhook types include: github gitlab stash tfs-git bitbucket")
        );
        assert_eq!(answer(name, 400).expect_err("400").kind, ErrorKind::Invalid);
    }

    #[test]
    fn rbac_kinds_classify() {
        let body = |kind: &str, msg: &str| format!(r#"{{"kind":"{kind}","msg":"{msg}"}}"#);
        let cases = [
            (
                "puppetlabs.rbac/user-unauthenticated",
                401,
                ErrorKind::Unauthorized,
                "no RBAC token",
            ),
            (
                "puppetlabs.rbac/invalid-token",
                401,
                ErrorKind::Unauthorized,
                "not valid",
            ),
            (
                "puppetlabs.rbac/token-expired",
                401,
                ErrorKind::Unauthorized,
                "expired",
            ),
            (
                "puppetlabs.rbac/token-timed-out",
                403,
                ErrorKind::Unauthorized,
                "expired",
            ),
            (
                "puppetlabs.rbac/token-revoked",
                401,
                ErrorKind::Unauthorized,
                "revoked",
            ),
            (
                "puppetlabs.rbac/user-revoked",
                401,
                ErrorKind::Unauthorized,
                "revoked",
            ),
            (
                "puppetlabs.rbac/permission-denied",
                403,
                ErrorKind::Forbidden,
                "permission",
            ),
            (
                "puppetlabs.code-manager/not-found",
                404,
                ErrorKind::NotFound,
                "no such",
            ),
            (
                "puppetlabs.rbac/server-error",
                500,
                ErrorKind::Unavailable,
                "internal",
            ),
            (
                "puppetlabs.code-manager/something-new",
                409,
                ErrorKind::Conflict,
                "something-new",
            ),
            (
                "puppetlabs.code-manager/something-new",
                200,
                ErrorKind::Unavailable,
                "HTTP 200",
            ),
        ];
        for (kind, status, expected, words) in cases {
            let e = classify(
                StatusCode::from_u16(status).expect("status"),
                &body(kind, "the platform said so"),
            )
            .expect_err(kind);
            assert_eq!(e.kind, expected, "{kind}");
            assert!(e.message.contains(words), "{kind}: {}", e.message);
            assert!(e.message.contains(kind), "{}", e.message);
            assert!(e.message.contains("the platform said so"), "{}", e.message);
            assert_eq!(e.status, Some(status));
        }
    }

    #[test]
    fn collect_failed_names_the_control_repository() {
        let body = r#"{"kind":"puppetlabs.code-manager/collect-failed","msg":"Errors while collecting a list of environments to deploy (exit code: 1)","details":"ERROR\t -> Unable to determine current branches for Git source 'puppet'"}"#;
        for status in [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR] {
            let e = classify(status, body).expect_err("error");
            assert_eq!(e.kind, ErrorKind::Invalid);
            assert!(
                e.message.starts_with(
                    "the control repository is not reachable: ERROR\t -> Unable to determine"
                ),
                "{}",
                e.message
            );
            assert!(e.message.contains("collect-failed"));
        }
    }

    #[test]
    fn other_bodies_classify() {
        assert_eq!(
            classify(StatusCode::OK, "[]").expect("ok"),
            Value::Array(vec![])
        );
        assert_eq!(classify(StatusCode::OK, "").expect("ok"), Value::Null);
        assert_eq!(
            classify(StatusCode::OK, r#"{"status":"OK"}"#).expect("ok")["status"],
            "OK"
        );
        // An object without `kind` is not an error; a `kind` that is not text neither.
        assert!(classify(StatusCode::OK, r#"{"kind":3}"#).is_ok());
        let e = classify(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").expect_err("502");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("502"), "{}", e.message);
        let e = classify(StatusCode::UNAUTHORIZED, "").expect_err("401");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        let e = classify(StatusCode::NOT_FOUND, &"x".repeat(5000)).expect_err("404");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.len() < 1000, "long bodies are shortened");
        // An array under an error status is still an error.
        assert!(classify(StatusCode::INTERNAL_SERVER_ERROR, "[]").is_err());
    }

    #[test]
    fn redaction_removes_tokens_and_query_values() {
        let text = "POST https://pe:8170/code-manager/v1/webhook?type=github&token=abc-DEF_123&prefix=x failed; Token=zzz\"";
        let out = redact(text, &[]);
        assert!(
            !out.contains("abc-DEF_123") && !out.contains("zzz"),
            "{out}"
        );
        assert!(out.contains("token=<redacted>&prefix=x"), "{out}");
        assert_eq!(
            redact("said s3cr3t-pass twice: s3cr3t-pass", &["s3cr3t-pass"]),
            "said <redacted> twice: <redacted>"
        );
        assert_eq!(redact("token=", &[]), "token=");
        assert_eq!(redact("no secrets here", &["ab"]), "no secrets here");
    }
}
