//! RBAC tokens: their records, lifetimes and `POST /rbac-api/v1/auth/token`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::render::{ApiError, ApiResult};
use super::{CodeManagerSim, DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME};

#[derive(Clone, Debug)]
pub(super) struct TokenRecord {
    /// `None` = never expires by itself.
    pub(super) expires_at: Option<Instant>,
    pub(super) label: Option<String>,
    pub(super) expired: bool,
    pub(super) revoked: bool,
}

impl TokenRecord {
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        self.expired || self.expires_at.is_some_and(|at| now >= at)
    }
}

/// An opaque token like current PE's (44 URL-safe characters).
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..44)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// An RBAC lifetime: a number with an optional unit `y|d|h|m|s` (none = seconds), no space;
/// zero means the maximum (10 years).
pub(super) fn parse_lifetime(raw: &str) -> Option<Duration> {
    let (digits, unit) = match raw.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&raw[..i], Some(c)),
        _ => (raw, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit_secs: u64 = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('y') => 365 * 86_400,
        Some(_) => return None,
    };
    if n == 0 {
        return Some(MAX_TOKEN_LIFETIME);
    }
    n.checked_mul(unit_secs).map(Duration::from_secs)
}

pub(super) async fn mint_token(
    State(sim): State<CodeManagerSim>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::rbac_malformed(format!("The body is not valid JSON: {err}")))?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::rbac_malformed("The body must be a JSON object."))?;
    let text = |key: &str| match obj.get(key) {
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(ApiError::rbac_malformed(format!(
            "'{key}' must be a string."
        ))),
    };
    let login = text("login")?.ok_or_else(|| ApiError::rbac_malformed("'login' is required."))?;
    let password =
        text("password")?.ok_or_else(|| ApiError::rbac_malformed("'password' is required."))?;
    let lifetime = match obj.get("lifetime") {
        None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME,
        Some(Value::String(raw)) => parse_lifetime(raw).ok_or_else(|| {
            ApiError::rbac_malformed(format!(
                "Invalid lifetime '{raw}': use a number with an optional unit y, d, h, m or s."
            ))
        })?,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => MAX_TOKEN_LIFETIME,
            Some(secs) => Duration::from_secs(secs),
            None => return Err(ApiError::rbac_malformed("Invalid lifetime.")),
        },
        Some(_) => return Err(ApiError::rbac_malformed("'lifetime' must be a string.")),
    };
    if lifetime > MAX_TOKEN_LIFETIME {
        return Err(ApiError::rbac_malformed(
            "The requested lifetime exceeds the maximum token lifetime (10y).",
        ));
    }
    let label = text("label")?;
    if label.is_some_and(|l| l.len() > 200 || l.contains(',')) {
        return Err(ApiError::rbac_malformed(
            "A label must be at most 200 characters long and contain no commas.",
        ));
    }
    for key in ["description", "client"] {
        text(key)?;
    }

    let now = Instant::now();
    let mut data = sim.data();
    if login != data.settings.login || password != data.settings.password {
        // Synthetic message; the kind and status are documented.
        return Err(ApiError::rbac(
            StatusCode::UNAUTHORIZED,
            "user-unauthenticated",
            "The provided login or password is incorrect.",
        ));
    }
    if let Some(label) = label {
        let taken = data
            .tokens
            .values()
            .any(|t| t.label.as_deref() == Some(label) && !t.revoked && !t.is_expired(now));
        if taken {
            return Err(ApiError::rbac_malformed(format!(
                "The label '{label}' is already used by another token of this user."
            )));
        }
    }
    let token = random_token();
    data.tokens.insert(
        token.clone(),
        TokenRecord {
            expires_at: now.checked_add(lifetime),
            label: label.map(str::to_owned),
            expired: false,
            revoked: false,
        },
    );
    data.minted += 1;
    Ok(Json(json!({ "token": token })).into_response())
}
