//! Devopness error answers: the platform's `{message, errors}` body and how an answer that is
//! not 2xx becomes a `PlatformError`.

use crate::core::seam::PlatformError;
use crate::platform::http::{check_answer, kind_for_status, name_operation};
use reqwest::{Response, StatusCode};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::fmt;

/// The fields of `errors`, in the order the platform sent them.
struct OrderedErrors(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for OrderedErrors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedErrors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of field to messages")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedErrors, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    let messages = match v {
                        Value::Array(items) => items
                            .into_iter()
                            .map(|i| match i {
                                Value::String(s) => s,
                                other => other.to_string(),
                            })
                            .collect(),
                        Value::String(s) => vec![s],
                        Value::Null => Vec::new(),
                        other => vec![other.to_string()],
                    };
                    out.push((k, messages));
                }
                Ok(OrderedErrors(out))
            }
            fn visit_unit<E>(self) -> Result<OrderedErrors, E> {
                Ok(OrderedErrors(Vec::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OrderedErrors, A::Error> {
                // An empty `[]` (how PHP encodes an empty map) or a list: no field named.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(OrderedErrors(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ApiError`.
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<OrderedErrors>,
}

/// Classifies a Devopness error answer (pure, so every shape is unit-tested). The body may be
/// `{message, errors}`, `{message}`, empty or not JSON at all. `field` is the first field of
/// `errors`, and the message names it.
pub fn error_from(status: StatusCode, body: &str) -> PlatformError {
    let parsed: Option<ApiError> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|p| p.message.clone())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let first = parsed
        .as_ref()
        .and_then(|p| p.errors.as_ref())
        .and_then(|e| e.0.first().cloned());
    let code = status.as_u16();
    let kind = kind_for_status(status);
    let said = message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let mut text = match code {
        401 => format!(
            "the API token was refused (401 Unauthenticated: wrong or expired credentials): {said}"
        ),
        403 => format!("the API token does not allow this (403 Forbidden): {said}"),
        402 => format!("usage limit reached on the project's subscription: {said}"),
        404 => format!("not found (404): {said}"),
        409 => format!("conflicts with the current state (409): {said}"),
        _ => format!("answered {code}: {said}"),
    };
    let field = first.as_ref().map(|(f, _)| f.clone());
    if let Some((name, messages)) = &first {
        let detail = messages
            .iter()
            .filter(|m| !m.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if detail.is_empty() || said.contains(detail.as_str()) {
            text = format!("{text} (field `{name}`)");
        } else {
            text = format!("{text} (field `{name}`: {detail})");
        }
    }
    let mut err = PlatformError::new(kind, format!("devopness {text}"));
    err.status = Some(code);
    err.field = field;
    err
}

/// Turns a non-2xx answer into a typed error naming the operation.
pub(super) async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    check_answer(response, |status, body| {
        name_operation("devopness", operation, error_from(status, body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::seam::ErrorKind;

    #[test]
    fn validation_errors_name_the_first_field() {
        let body = r#"{"message":"The given data was invalid.","errors":{"name":["The name has already been taken."],"credential_id":["The selected credential id is invalid."]}}"#;
        let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.status, Some(422));
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("`name`"), "{}", e.message);
        assert!(e.message.contains("already been taken"), "{}", e.message);
        assert!(e.message.contains("The given data was invalid."));
        // Document order, not alphabetical order.
        let body = r#"{"message":"bad","errors":{"zeta":["z"],"alpha":["a"]}}"#;
        assert_eq!(
            error_from(StatusCode::UNPROCESSABLE_ENTITY, body)
                .field
                .as_deref(),
            Some("zeta")
        );
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let msg = r#"{"message":"nope"}"#;
        let e = error_from(StatusCode::UNAUTHORIZED, msg);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("nope"));
        assert_eq!(e.field, None);
        assert_eq!(
            error_from(StatusCode::FORBIDDEN, msg).kind,
            ErrorKind::Forbidden
        );
        let e = error_from(
            StatusCode::PAYMENT_REQUIRED,
            r#"{"message":"Max parallel actions reached"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(
            e.message.contains(
                "usage limit reached on the project's subscription: Max parallel actions reached"
            ),
            "{}",
            e.message
        );
        assert_eq!(
            error_from(StatusCode::NOT_FOUND, msg).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            error_from(StatusCode::CONFLICT, msg).kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            error_from(StatusCode::BAD_REQUEST, msg).kind,
            ErrorKind::Invalid
        );
        assert_eq!(
            error_from(StatusCode::INTERNAL_SERVER_ERROR, msg).kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, msg).kind,
            ErrorKind::RateLimited
        );
    }

    #[test]
    fn empty_and_non_json_bodies_still_say_something() {
        let e = error_from(StatusCode::NOT_FOUND, "");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("Not Found"), "{}", e.message);
        let e = error_from(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("502"), "{}", e.message);
        // `errors` absent, null, an empty PHP array, or odd shapes.
        for body in [
            r#"{"message":"m"}"#,
            r#"{"message":"m","errors":null}"#,
            r#"{"message":"m","errors":[]}"#,
        ] {
            let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, body);
            assert_eq!(e.field, None, "{body}");
            assert!(e.message.contains('m'));
        }
        let e = error_from(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message":"m","errors":{"key":"must be unique"}}"#,
        );
        assert_eq!(e.field.as_deref(), Some("key"));
        assert!(e.message.contains("must be unique"));
    }
}
