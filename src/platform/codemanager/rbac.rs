//! RBAC tokens for Code Manager: a credential that is a JSON login is read here, and tokens are
//! minted from it with `POST <rbacEndpoint>/v1/auth/token`, always with an explicit lifetime,
//! and replaced once 80 % of the lifetime has passed or when Code Manager answers them as
//! expired.

use super::client::CodeManager;
use super::errors::{classify, scrub};
use crate::core::seam::{Credential, ErrorKind, PlatformError};
use jiff::{SignedDuration, Timestamp};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::Ordering;

/// The token lifetime requested when a login does not name one (RBAC's own default).
pub const DEFAULT_LIFETIME: &str = "1h";
/// The port of the console services (RBAC) on the primary.
pub const RBAC_PORT: u16 = 4433;

/// A minted token is replaced once this share (in per mille) of its lifetime has passed.
const REFRESH_PER_MILLE: i64 = 800;

/// The RBAC API next to a Code Manager endpoint: same scheme and host, port 4433, `/rbac-api`.
pub fn default_rbac_endpoint(endpoint: &str) -> Option<String> {
    let mut url = Url::parse(endpoint).ok()?;
    url.host_str()?;
    url.set_port(Some(RBAC_PORT)).ok()?;
    url.set_path("/rbac-api");
    url.set_query(None);
    url.set_fragment(None);
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// An RBAC lifetime (`<n>` seconds, or `<n>y|d|h|m|s`) in seconds; `Some(None)` for `"0"`,
/// RBAC's maximum, whose length bosun cannot know.
fn lifetime_seconds(text: &str) -> Option<Option<i64>> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let per = match unit {
        'y' => 365 * 86_400,
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    if n == 0 {
        return Some(None);
    }
    // Beyond a century, it is the same as unlimited for bosun.
    Some(Some(n.checked_mul(per)?.min(100 * 365 * 86_400)))
}

/// The login form of the credential.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginSpec {
    login: String,
    password: String,
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default)]
    rbac_endpoint: Option<String>,
}

pub(super) struct Login {
    login: String,
    password: Credential,
    lifetime: String,
    /// `None` for `"0"` (RBAC's maximum): only an expiry answer triggers a new token.
    lifetime_secs: Option<i64>,
    token_url: String,
}

pub(super) enum Auth {
    Token(Credential),
    Login(Login),
}

#[derive(Clone)]
pub(super) struct Minted {
    token: Credential,
    expires_at: Option<Timestamp>,
    refresh_at: Option<Timestamp>,
}

impl CodeManager {
    pub(super) fn login(secret: &str, endpoint: &str) -> Result<Login, PlatformError> {
        // serde's message may quote the values it read: it is not shown.
        let spec: LoginSpec = serde_json::from_str(secret).map_err(|_| {
            PlatformError::new(
                ErrorKind::Invalid,
                "the credential looks like a JSON login but is not one: it takes \"login\" and \
                 \"password\" strings, and optionally \"lifetime\" and \"rbacEndpoint\"",
            )
        })?;
        if spec.login.is_empty() || spec.password.is_empty() {
            return Err(PlatformError::new(
                ErrorKind::Invalid,
                "the credential's login needs a non-empty \"login\" and \"password\"",
            ));
        }
        let lifetime = spec.lifetime.unwrap_or_else(|| DEFAULT_LIFETIME.to_owned());
        let lifetime_secs = lifetime_seconds(&lifetime).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Invalid,
                format!(
                    "the credential's lifetime {lifetime:?} is not a number followed by y, d, h, \
                     m or s (e.g. \"1h\")"
                ),
            )
        })?;
        let rbac = match spec.rbac_endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None => default_rbac_endpoint(endpoint).ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Invalid,
                    "cannot derive the RBAC endpoint from the Provider's endpoint: set \
                     \"rbacEndpoint\" in the credential",
                )
            })?,
        };
        let rbac_url = Url::parse(&rbac).map_err(|_| {
            PlatformError::new(
                ErrorKind::Invalid,
                "the credential's rbacEndpoint is not a URL",
            )
        })?;
        let endpoint_https = Url::parse(endpoint).is_ok_and(|u| u.scheme() == "https");
        match rbac_url.scheme() {
            "https" => {}
            "http" if !endpoint_https => {}
            _ => {
                return Err(PlatformError::new(
                    ErrorKind::Invalid,
                    "the credential's rbacEndpoint must be https: bosun does not send a password \
                     over plain HTTP to a server whose Code Manager uses HTTPS",
                ))
            }
        }
        Ok(Login {
            login: spec.login,
            password: Credential::new(spec.password),
            lifetime,
            lifetime_secs,
            token_url: format!("{rbac}/v1/auth/token"),
        })
    }

    /// When the current minted token expires (issue time + lifetime); `None` for a token
    /// given directly, before the first mint, or for lifetime `"0"`.
    pub fn token_expires_at(&self) -> Option<Timestamp> {
        self.lock_minted().as_ref().and_then(|m| m.expires_at)
    }

    /// How many tokens were requested from RBAC.
    pub fn mint_count(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// The credential is a login that bosun mints tokens from.
    pub fn mints_tokens(&self) -> bool {
        matches!(self.auth, Auth::Login(_))
    }

    fn lock_minted(&self) -> std::sync::MutexGuard<'_, Option<Minted>> {
        self.minted.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn password(&self) -> &str {
        match &self.auth {
            Auth::Login(login) => login.password.expose(),
            Auth::Token(_) => "",
        }
    }

    /// The minted token, unless it is due for replacement.
    fn fresh(&self) -> Option<Credential> {
        let minted = self.lock_minted();
        let m = minted.as_ref()?;
        match m.refresh_at {
            Some(at) if Timestamp::now() >= at => None,
            _ => Some(m.token.clone()),
        }
    }

    /// The token to send now, minting one when needed.
    pub(super) async fn token(&self) -> Result<Credential, PlatformError> {
        let login = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::Login(login) => login,
        };
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _guard = self.minting.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.mint(login).await
    }

    /// A new token after `refused` was answered as expired (unless another request already
    /// replaced it).
    pub(super) async fn refresh(&self, refused: &Credential) -> Result<Credential, PlatformError> {
        let login = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::Login(login) => login,
        };
        let _guard = self.minting.lock().await;
        let current = self.lock_minted().as_ref().map(|m| m.token.clone());
        match current {
            Some(token) if &token != refused => Ok(token),
            _ => self.mint(login).await,
        }
    }

    /// `POST <rbac>/v1/auth/token` with the login, an explicit lifetime and no label (labels
    /// must be unique per user).
    async fn mint(&self, login: &Login) -> Result<Credential, PlatformError> {
        let body = serde_json::json!({
            "login": login.login,
            "password": login.password.expose(),
            "lifetime": login.lifetime,
        });
        let secrets = [login.password.expose()];
        let issued = Timestamp::now();
        let request = self.api.raw(Method::POST, &login.token_url).json(&body);
        self.mints.fetch_add(1, Ordering::Relaxed);
        let response = self
            .api
            .send_read_only("rbacAuthToken", request)
            .await
            .map_err(|e| scrub(e, &secrets))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            PlatformError::new(
                ErrorKind::Unavailable,
                format!("rbac token: the answer broke off: {}", e.without_url()),
            )
        })?;
        let value = classify(status, &text).map_err(|mut e| {
            e.message = if e.kind == ErrorKind::Unauthorized || status == StatusCode::UNAUTHORIZED {
                e.kind = ErrorKind::Unauthorized;
                format!(
                    "RBAC refused the login {:?}: wrong login or password, or a revoked user ({})",
                    login.login, e.message
                )
            } else {
                format!("rbac token for {:?}: {}", login.login, e.message)
            };
            scrub(e, &secrets)
        })?;
        let token = value
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .map(|t| Credential::new(t.trim()))
            .ok_or_else(|| {
                PlatformError::new(ErrorKind::Protocol, "rbac token: the answer holds no token")
            })?;
        let after = |per_mille: i64| {
            login.lifetime_secs.and_then(|secs| {
                issued
                    .checked_add(SignedDuration::from_millis(secs * per_mille))
                    .ok()
            })
        };
        *self.lock_minted() = Some(Minted {
            token: token.clone(),
            expires_at: after(1000),
            refresh_at: after(REFRESH_PER_MILLE),
        });
        Ok(token)
    }

    #[cfg(test)]
    pub(super) fn backdate_token(&self, by: SignedDuration) {
        if let Some(m) = self.lock_minted().as_mut() {
            m.expires_at = m.expires_at.and_then(|t| t.checked_sub(by).ok());
            m.refresh_at = m.refresh_at.and_then(|t| t.checked_sub(by).ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::codemanager::client::tests::{client, connection};

    #[test]
    fn rbac_endpoint_defaults_next_to_code_manager() {
        assert_eq!(
            default_rbac_endpoint("https://primary:8170/code-manager").as_deref(),
            Some("https://primary:4433/rbac-api")
        );
        assert_eq!(
            default_rbac_endpoint("https://pe.example.com/code-manager/").as_deref(),
            Some("https://pe.example.com:4433/rbac-api")
        );
        assert_eq!(default_rbac_endpoint("not a url"), None);
    }

    #[test]
    fn lifetimes_parse() {
        assert_eq!(lifetime_seconds("1h"), Some(Some(3600)));
        assert_eq!(lifetime_seconds("90"), Some(Some(90)));
        assert_eq!(lifetime_seconds("30m"), Some(Some(1800)));
        assert_eq!(lifetime_seconds("2d"), Some(Some(172_800)));
        assert_eq!(lifetime_seconds("1y"), Some(Some(31_536_000)));
        assert_eq!(lifetime_seconds("0"), Some(None));
        for bad in ["", "h", "1 h", "1w", "-1h", "1.5h"] {
            assert_eq!(lifetime_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_read_as_token_or_login() {
        let cm = client("https://primary:8170/code-manager", " tok-1\n");
        assert!(!cm.mints_tokens());
        assert_eq!(cm.token_expires_at(), None);
        let cm = client(
            "https://primary:8170/code-manager",
            r#"{"login":"deployer","password":"pw-123456"}"#,
        );
        assert!(cm.mints_tokens());
        let Auth::Login(login) = &cm.auth else {
            panic!("a login")
        };
        assert_eq!(
            login.token_url,
            "https://primary:4433/rbac-api/v1/auth/token"
        );
        assert_eq!(login.lifetime, "1h");

        let bad = |secret: &str| {
            CodeManager::new(connection("https://primary:8170/code-manager", secret))
                .err()
                .expect("refused")
        };
        let e = bad(r#"{"login":"deployer","password":12345678901}"#);
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(!e.message.contains("12345678901"), "{}", e.message);
        let e = bad(r#"{"login":"deployer","password":"pw-123456","lifetime":"1 week"}"#);
        assert!(e.message.contains("lifetime"), "{}", e.message);
        let e = bad(
            r#"{"login":"d","password":"pw-123456","rbacEndpoint":"http://primary:4433/rbac-api"}"#,
        );
        assert!(e.message.contains("https"), "{}", e.message);
        assert!(!e.message.contains("pw-123456"));
        assert_eq!(bad("  ").kind, ErrorKind::Unauthorized);
    }
}
