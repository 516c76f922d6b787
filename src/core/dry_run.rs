//! Holding writes back for `bosun plan`: every request that would change something at the
//! platform is recorded instead of sent, and answered with an empty `204 No Content`, so the
//! controller's own code can go on to its next step where that step does not need the answer.

use serde::Serialize;
use std::sync::Mutex;

/// A write bosun would make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedCall {
    pub platform: String,
    /// The endpoint's name, as in `bosun_provider_requests_total{operation}`.
    pub operation: String,
    pub method: String,
    /// Path and query below the provider's endpoint.
    pub path: String,
    /// The request body, with credentials and Secret-backed values replaced by `<redacted>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The writes held back during one plan, and the values that must never be shown.
#[derive(Debug, Default)]
pub struct DryRun {
    calls: Mutex<Vec<PlannedCall>>,
    secrets: Mutex<Vec<String>>,
}

const REDACTED: &str = "<redacted>";

impl DryRun {
    /// A value (a credential, a Secret-backed variable) that a shown request must not contain.
    pub fn hide(&self, value: &str) {
        // Very short values would blank out unrelated text; they are not credentials anyway.
        if value.len() >= 4 {
            let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            if !secrets.iter().any(|s| s == value) {
                secrets.push(value.to_string());
                // Longest first, so a secret that contains another is hidden whole.
                secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }

    /// Replaces every hidden value in `text`.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_string();
        for secret in secrets.iter() {
            out = out.replace(secret.as_str(), REDACTED);
            // Inside a JSON string, quotes and backslashes in the secret appear escaped.
            if let Ok(quoted) = serde_json::to_string(secret) {
                let escaped = &quoted[1..quoted.len() - 1];
                if escaped != secret {
                    out = out.replace(escaped, REDACTED);
                }
            }
        }
        out
    }

    /// Records a held-back request.
    pub fn record(&self, platform: &str, operation: &str, request: &reqwest::Request, base: &str) {
        let url = request.url().as_str();
        let path = url.strip_prefix(base).unwrap_or(url);
        // Decoded, so that a secret in a query string is recognised (and the path reads well).
        let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .filter(|b| !b.is_empty())
            .map(|b| self.redact(&String::from_utf8_lossy(b)));
        let call = PlannedCall {
            platform: platform.to_string(),
            operation: operation.to_string(),
            method: request.method().to_string(),
            path: self.redact(&path),
            body,
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }

    /// The writes recorded since the last call.
    pub fn take(&self) -> Vec<PlannedCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The answer a held-back write gets: success, with nothing in it.
pub fn held_back_answer() -> reqwest::Response {
    let mut answer = http::Response::new(Vec::<u8>::new());
    *answer.status_mut() = http::StatusCode::NO_CONTENT;
    reqwest::Response::from(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: reqwest::Method, url: &str, body: &str) -> reqwest::Request {
        let mut r = reqwest::Request::new(method, url.parse().unwrap());
        *r.body_mut() = Some(body.to_string().into());
        r
    }

    #[test]
    fn recorded_writes_hide_secrets_in_body_and_path() {
        let dry = DryRun::default();
        dry.hide("s3cr3t-\"token\"");
        dry.hide("abc"); // too short to hide
        let body =
            serde_json::json!({"env": [{"name": "K", "value": "s3cr3t-\"token\""}], "x": "abc"});
        dry.record(
            "codesphere",
            "setEnv",
            &request(
                reqwest::Method::PUT,
                "http://h/api/ws/1?key=s3cr3t-%22token%22&t=s3cr3t-\"token\"",
                &body.to_string(),
            ),
            "http://h/api",
        );
        let calls = dry.take();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.method, "PUT");
        assert!(call.path.starts_with("/ws/1?"), "{}", call.path);
        let body = call.body.as_deref().unwrap();
        assert!(!body.contains("s3cr3t"), "{body}");
        assert!(
            body.contains("<redacted>") && body.contains("abc"),
            "{body}"
        );
        assert!(dry.take().is_empty(), "take drains");
    }

    #[tokio::test]
    async fn held_back_writes_succeed_with_an_empty_answer() {
        let answer = held_back_answer();
        assert_eq!(answer.status(), reqwest::StatusCode::NO_CONTENT);
        assert!(answer.bytes().await.unwrap().is_empty());
    }
}
