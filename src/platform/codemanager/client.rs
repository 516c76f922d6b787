//! The Puppet Enterprise Code Manager API client (`shared/research/puppet-code-manager.md`):
//! `POST /v1/deploys`, `GET /v1/deploys/status[?id=N]` and `POST /v1/webhook`, with RBAC tokens
//! given directly or minted from a login (`rbac.rs`). The bodies are in `wire.rs`, the error
//! answers in `errors.rs`.
//!
//! - The endpoint is Code Manager's base URL, e.g. `https://primary:8170/code-manager`; the API
//!   lives under `/v1`. TLS is always verified, against public roots plus the Provider's CA.
//! - The credential is either an RBAC token (sent as `X-Authentication`), or a JSON login
//!   `{"login":"..","password":"..","lifetime":"1h","rbacEndpoint":"https://host:4433/rbac-api"}`.
//!   For a login a token is minted with `POST <rbacEndpoint>/v1/auth/token`, always with an
//!   explicit `lifetime` (default [`DEFAULT_LIFETIME`]), re-minted once 80 % of the lifetime has
//!   passed, and re-minted once (with the request retried once) when Code Manager answers
//!   `token-expired` or `token-timed-out`. `rbacEndpoint` defaults to the endpoint's scheme and
//!   host, port [`RBAC_PORT`], path `/rbac-api` (see [`default_rbac_endpoint`]).
//! - Errors: a JSON object with `kind` is an error whatever the HTTP status (some PE versions
//!   answer errors with 200); an array is per-environment results ([`classify`]).
//! - Secrets: no token, password or URL carrying `token=` ever reaches an error message or a
//!   metrics label ([`redact`]).

pub use super::errors::{classify, error_object, redact};
pub use super::rbac::{default_rbac_endpoint, DEFAULT_LIFETIME, RBAC_PORT};
pub use super::wire::*;

use super::errors::scrub;
use super::rbac::{Auth, Minted};
use crate::api::PlatformType;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform, PlatformError};
use crate::platform::http::ApiClient;
use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

/// The header Code Manager reads the RBAC token from.
pub const AUTH_HEADER: &str = "X-Authentication";

/// A `wait` deploy returns only after every deploy and the file sync to every compiler:
/// at least `timeouts_wait` (700 s) + `timeouts_sync` (300 s) with PE's defaults.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(18 * 60);
/// A dry run fetches the control repository and lists its environments.
pub const DRY_RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment r10k derives from a branch (`R10K::Environment::Name#dirname`): with
/// correction on, every character outside `[A-Za-z0-9_]` becomes `_` (case is kept), then the
/// prefix is put in front as `<prefix>_` (the prefix itself is not corrected; `Some("")` gives
/// `_<branch>` as r10k does). The flag says whether the branch needed correcting.
pub fn environment_name(branch: &str, prefix: Option<&str>) -> (String, bool) {
    let mut corrected = false;
    let dir: String = branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                corrected = true;
                '_'
            }
        })
        .collect();
    match prefix {
        Some(p) => (format!("{p}_{dir}"), corrected),
        None => (dir, corrected),
    }
}

/// One request, as it is sent (again) after a new token was minted.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    path: &'a str,
    query: Vec<(&'a str, &'a str)>,
    body: Option<&'a Value>,
    timeout: Option<Duration>,
    /// The webhook takes the token as a query parameter, not a header.
    token_in_query: bool,
    /// Changes nothing at the platform although it is a POST (a dry run).
    read_only: bool,
}

struct Failure {
    error: PlatformError,
    expired: bool,
}

/// A Puppet Enterprise Code Manager reached with an RBAC token or login.
pub struct CodeManager {
    pub(super) api: ApiClient,
    pub(super) auth: Auth,
    pub(super) minted: StdMutex<Option<Minted>>,
    /// Serializes minting, so concurrent requests share one new token.
    pub(super) minting: AsyncMutex<()>,
    pub(super) mints: AtomicU64,
}

impl CodeManager {
    pub fn new(connection: Connection) -> Result<Self, PlatformError> {
        let api = ApiClient::new(&connection, "puppetCodeManager")?;
        let secret = connection.credential.expose().trim();
        if secret.is_empty() {
            return Err(PlatformError::new(
                ErrorKind::Unauthorized,
                "the Secret holds no RBAC token or login",
            ));
        }
        let auth = if secret.starts_with('{') {
            Auth::Login(Self::login(secret, &connection.endpoint)?)
        } else {
            Auth::Token(Credential::new(secret))
        };
        Ok(CodeManager {
            api,
            auth,
            minted: StdMutex::new(None),
            minting: AsyncMutex::new(()),
            mints: AtomicU64::new(0),
        })
    }

    /// Sends a call; with a login, an expiry answer mints a new token and sends it once more.
    async fn exchange(&self, call: &Call<'_>) -> Result<Value, PlatformError> {
        let token = self.token().await?;
        match self.attempt(call, &token).await {
            Err(failure) if failure.expired && self.mints_tokens() => {
                let fresh = self.refresh(&token).await?;
                self.attempt(call, &fresh).await.map_err(|f| {
                    let mut e = f.error;
                    if f.expired {
                        e.message.push_str(
                            "; a newly minted token was refused as expired too: check the RBAC \
                             token lifetime settings and the clocks",
                        );
                    }
                    e
                })
            }
            other => other.map_err(|f| f.error),
        }
    }

    async fn attempt(&self, call: &Call<'_>, token: &Credential) -> Result<Value, Failure> {
        let secrets = [token.expose(), self.password()];
        let fail = |error: PlatformError, expired: bool| Failure {
            error: scrub(error, &secrets),
            expired,
        };
        let mut request = self.api.request(call.method.clone(), call.path);
        let mut query = call.query.clone();
        if call.token_in_query {
            query.push(("token", token.expose()));
        } else {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                fail(
                    PlatformError::new(
                        ErrorKind::Unauthorized,
                        "the RBAC token holds characters an HTTP header cannot carry",
                    ),
                    false,
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTH_HEADER, value);
        }
        if !query.is_empty() {
            request = request.query(&query);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        let sent = if call.read_only {
            self.api.send_read_only(call.operation, request).await
        } else {
            self.api.send(call.operation, request).await
        };
        let response = sent.map_err(|e| fail(e, false))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            fail(
                PlatformError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "code manager {}: the answer broke off: {}",
                        call.operation,
                        e.without_url()
                    ),
                ),
                false,
            )
        })?;
        classify(status, &text).map_err(|mut e| {
            let expired = error_object(&text).is_some_and(|o| o.is_expiry());
            e.message = format!("code manager {}: {}", call.operation, e.message);
            fail(e, expired)
        })
    }

    fn decoded<T>(
        &self,
        parse: fn(Value) -> Result<T, PlatformError>,
        body: Value,
    ) -> Result<T, PlatformError> {
        let secrets = [self.password()];
        parse(body).map_err(|e| scrub(e, &secrets))
    }

    /// `POST /v1/deploys`. With `wait`, the request may take up to [`WAIT_TIMEOUT`].
    pub async fn deploy(
        &self,
        request: &DeployRequest,
    ) -> Result<Vec<DeployResult>, PlatformError> {
        if request.environments.is_empty() && !request.deploy_all {
            return Err(PlatformError::new(
                ErrorKind::Invalid,
                "a Code Manager deploy needs environments or deploy-all",
            ));
        }
        let body = serde_json::to_value(request).map_err(|e| {
            PlatformError::new(ErrorKind::Protocol, format!("cannot encode a deploy: {e}"))
        })?;
        let timeout = if request.wait {
            Some(if request.dry_run {
                DRY_RUN_TIMEOUT
            } else {
                WAIT_TIMEOUT
            })
        } else {
            None
        };
        let value = self
            .exchange(&Call {
                operation: if request.dry_run { "dryRun" } else { "deploy" },
                method: Method::POST,
                path: "/v1/deploys",
                query: Vec::new(),
                body: Some(&body),
                timeout,
                token_in_query: false,
                read_only: request.dry_run,
            })
            .await?;
        self.decoded(deploy_results, value)
    }

    /// A dry run of every environment (`deploy-all`, `dry-run`, `wait`): proves that Code
    /// Manager can reach the control repository, and lists its environments.
    pub async fn dry_run(&self) -> Result<Vec<String>, PlatformError> {
        let request = DeployRequest {
            deploy_all: true,
            wait: true,
            dry_run: true,
            ..DeployRequest::default()
        };
        let body = serde_json::to_value(&request).map_err(|e| {
            PlatformError::new(ErrorKind::Protocol, format!("cannot encode a dry run: {e}"))
        })?;
        let value = self
            .exchange(&Call {
                operation: "dryRun",
                method: Method::POST,
                path: "/v1/deploys",
                query: Vec::new(),
                body: Some(&body),
                timeout: Some(DRY_RUN_TIMEOUT),
                token_in_query: false,
                read_only: true,
            })
            .await?;
        self.decoded(dry_run_environments, value)
    }

    /// `GET /v1/deploys/status`.
    pub async fn status(&self) -> Result<DeploysStatus, PlatformError> {
        let value = self
            .exchange(&Call {
                operation: "deploysStatus",
                method: Method::GET,
                path: "/v1/deploys/status",
                query: Vec::new(),
                body: None,
                timeout: None,
                token_in_query: false,
                read_only: false,
            })
            .await?;
        self.decoded(deploys_status, value)
    }

    /// `GET /v1/deploys/status?id=N`; `None` when Code Manager does not know the id (never
    /// known, or garbage-collected after `deploy_ttl`).
    pub async fn status_of(&self, id: i64) -> Result<Option<DeployStatusById>, PlatformError> {
        let id = id.to_string();
        let result = self
            .exchange(&Call {
                operation: "deployStatusById",
                method: Method::GET,
                path: "/v1/deploys/status",
                query: vec![("id", id.as_str())],
                body: None,
                timeout: None,
                token_in_query: false,
                read_only: false,
            })
            .await;
        match result {
            Ok(value) => self.decoded(deploy_status_by_id, value).map(Some),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/webhook?type=..&prefix=..&token=..` with a Git host's push event. The token
    /// travels in the query, as the webhook requires; it never reaches an error or a metric.
    pub async fn webhook(
        &self,
        type_: &str,
        prefix: Option<&str>,
        body: &Value,
    ) -> Result<(), PlatformError> {
        let mut query = vec![("type", type_)];
        if let Some(prefix) = prefix {
            query.push(("prefix", prefix));
        }
        self.exchange(&Call {
            operation: "webhook",
            method: Method::POST,
            path: "/v1/webhook",
            query,
            body: Some(body),
            timeout: None,
            token_in_query: true,
            read_only: false,
        })
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Platform for CodeManager {
    fn platform_type(&self) -> PlatformType {
        PlatformType::PuppetCodeManager
    }

    fn workspaces(&self) -> Option<&dyn crate::core::drivers::WorkspaceDriver> {
        Some(self)
    }

    /// A dry run: the Provider is ready only once Code Manager reached the control repository.
    async fn verify(&self) -> Result<String, PlatformError> {
        let environments = self.dry_run().await?;
        Ok(match environments.len() {
            1 => "control repository with 1 environment".to_owned(),
            n => format!("control repository with {n} environments"),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::budget::RateBudget;
    use crate::platform::codemanager::wire::tests::fixture;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Uri};
    use axum::response::IntoResponse;
    use axum::Router;
    use jiff::{SignedDuration, Timestamp};
    use std::sync::{Arc, Mutex};

    #[test]
    fn environment_names_follow_r10k() {
        assert_eq!(
            environment_name("production", None),
            ("production".into(), false)
        );
        assert_eq!(
            environment_name("feature/JIRA-12.x", None),
            ("feature_JIRA_12_x".into(), true)
        );
        assert_eq!(
            environment_name("feature/x", Some("myorg")),
            ("myorg_feature_x".into(), true)
        );
        assert_eq!(
            environment_name("Main_2", Some("acme")),
            ("acme_Main_2".into(), false)
        );
        assert_eq!(
            environment_name("pre-prod", None),
            ("pre_prod".into(), true)
        );
        assert_eq!(environment_name("café", None), ("caf_".into(), true));
        // The prefix is put in front as given, not corrected.
        assert_eq!(
            environment_name("dev", Some("my-org")),
            ("my-org_dev".into(), false)
        );
    }

    // -- against a local HTTP server -----------------------------------------------------------

    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        query: Option<String>,
        auth: Option<String>,
        body: String,
    }

    type Reply = Arc<dyn Fn(&Seen, &[Seen]) -> (u16, String) + Send + Sync>;
    type Log = Arc<Mutex<Vec<Seen>>>;

    /// Serves `reply` on a free port; returns the base URL and the log of requests.
    async fn serve(reply: Reply) -> (String, Log) {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let seen_log = log.clone();
        let handler =
            move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let log = seen_log.clone();
                let reply = reply.clone();
                async move {
                    let seen = Seen {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        query: uri.query().map(str::to_owned),
                        auth: headers
                            .get(AUTH_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, text) = {
                        let mut log = log.lock().expect("log");
                        let answer = reply(&seen, &log);
                        log.push(seen);
                        answer
                    };
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        text,
                    )
                        .into_response()
                }
            };
        let app = Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), log)
    }

    pub(crate) fn connection(endpoint: &str, secret: &str) -> Connection {
        Connection {
            platform: PlatformType::PuppetCodeManager,
            endpoint: endpoint.to_owned(),
            credential: Credential::new(secret),
            ca_pem: None,
            defaults: Default::default(),
            budget: Arc::new(RateBudget::new(6000, 100)),
            metrics: crate::core::metrics::Metrics::new(),
            read_only: false,
        }
    }

    pub(crate) fn client(endpoint: &str, secret: &str) -> CodeManager {
        CodeManager::new(connection(endpoint, secret)).expect("client")
    }

    fn login_secret(base: &str, lifetime: Option<&str>) -> String {
        let mut v = serde_json::json!({
            "login": "deployer",
            "password": "pa55-word-9",
            "rbacEndpoint": format!("{base}/rbac-api"),
        });
        if let Some(l) = lifetime {
            v["lifetime"] = Value::String(l.into());
        }
        v.to_string()
    }

    fn log_of(log: &Log) -> Vec<Seen> {
        log.lock().expect("log").clone()
    }

    const EXPIRED: &str =
        r#"{"kind":"puppetlabs.rbac/token-expired","msg":"The provided token has expired."}"#;

    /// RBAC mints `minted-1`, `minted-2`, ...; Code Manager accepts only `good` tokens.
    fn rbac_and_code_manager(good: fn(&str) -> bool, cm_answer: &'static str) -> Reply {
        Arc::new(move |seen: &Seen, before: &[Seen]| {
            if seen.path == "/rbac-api/v1/auth/token" {
                let n = before
                    .iter()
                    .filter(|s| s.path == "/rbac-api/v1/auth/token")
                    .count();
                return (200, format!(r#"{{"token":"minted-{}"}}"#, n + 1));
            }
            match seen.auth.as_deref() {
                Some(t) if good(t) => (200, cm_answer.to_owned()),
                Some(_) => (401, EXPIRED.to_owned()),
                None => (
                    401,
                    r#"{"kind":"puppetlabs.rbac/user-unauthenticated","msg":"Route requires authentication"}"#
                        .to_owned(),
                ),
            }
        })
    }

    #[tokio::test]
    async fn the_token_is_sent_in_the_header() {
        let status = fixture("deploys-status/cmdash-small-02-done.json");
        let (base, log) = serve(Arc::new(move |_: &Seen, _: &[Seen]| (200, status.clone()))).await;
        let cm = client(&format!("{base}/code-manager"), "tok-abc-123\n");
        let s = cm.status().await.expect("status");
        assert_eq!(s.all_synced, Some(true));
        let seen = log_of(&log);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/code-manager/v1/deploys/status");
        assert_eq!(seen[0].query, None);
        assert_eq!(seen[0].auth.as_deref(), Some("tok-abc-123"));
        assert_eq!(cm.mint_count(), 0);
    }

    #[tokio::test]
    async fn deploy_posts_the_request_and_reads_results() {
        let (base, log) = serve(Arc::new(|_: &Seen, _: &[Seen]| {
            (
                200,
                r#"[{"environment":"feature_x","id":807,"status":"queued"}]"#.to_owned(),
            )
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), "tok-abc-123");
        let r = cm
            .deploy(&DeployRequest {
                environments: vec!["feature_x".into()],
                ..Default::default()
            })
            .await
            .expect("deploy");
        assert_eq!(r[0].id, Some(807));
        assert_eq!(r[0].status, DeployState::Queued);
        let seen = log_of(&log);
        assert_eq!(seen[0].path, "/code-manager/v1/deploys");
        assert_eq!(
            serde_json::from_str::<Value>(&seen[0].body).expect("json"),
            serde_json::json!({"environments": ["feature_x"]})
        );
        let e = cm
            .deploy(&DeployRequest::default())
            .await
            .expect_err("nothing to deploy");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(log_of(&log).len(), 1, "refused before sending");
    }

    #[tokio::test]
    async fn a_login_mints_a_token_and_re_mints_once_on_expiry() {
        let (base, log) = serve(rbac_and_code_manager(
            |t| t == "minted-2",
            r#"[{"environment":"production","id":1,"status":"queued"}]"#,
        ))
        .await;
        let cm = client(&format!("{base}/code-manager"), &login_secret(&base, None));
        let before = Timestamp::now();
        let r = cm
            .deploy(&DeployRequest {
                environments: vec!["production".into()],
                ..Default::default()
            })
            .await
            .expect("deploy after a re-mint");
        assert_eq!(r[0].environment, "production");
        assert_eq!(cm.mint_count(), 2);
        let seen = log_of(&log);
        let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/rbac-api/v1/auth/token",
                "/code-manager/v1/deploys",
                "/rbac-api/v1/auth/token",
                "/code-manager/v1/deploys",
            ]
        );
        assert_eq!(seen[1].auth.as_deref(), Some("minted-1"));
        assert_eq!(seen[3].auth.as_deref(), Some("minted-2"));
        assert_eq!(seen[1].body, seen[3].body, "the same request is retried");
        let mint: Value = serde_json::from_str(&seen[0].body).expect("json");
        assert_eq!(
            mint,
            serde_json::json!({"login":"deployer","password":"pa55-word-9","lifetime":"1h"})
        );
        assert_eq!(seen[0].auth, None, "minting sends no token");
        // The expiry is tracked as issue time + 1h.
        let expires = cm.token_expires_at().expect("expiry");
        let after = Timestamp::now();
        assert!(expires >= before + SignedDuration::from_hours(1));
        assert!(expires <= after + SignedDuration::from_hours(1));
        // The next call reuses the token.
        cm.deploy(&DeployRequest {
            environments: vec!["production".into()],
            ..Default::default()
        })
        .await
        .expect("deploy");
        assert_eq!(cm.mint_count(), 2);
    }

    #[tokio::test]
    async fn an_expiry_is_retried_only_once() {
        let (base, log) = serve(rbac_and_code_manager(|_| false, "[]")).await;
        let cm = client(&format!("{base}/code-manager"), &login_secret(&base, None));
        let e = cm.status().await.expect_err("always expired");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(e.message.contains("newly minted"), "{}", e.message);
        assert!(!e.message.contains("minted-"), "{}", e.message);
        assert_eq!(cm.mint_count(), 2);
        let calls = log_of(&log)
            .iter()
            .filter(|s| s.path.starts_with("/code-manager"))
            .count();
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn a_plain_token_is_not_retried_on_expiry() {
        let (base, log) = serve(rbac_and_code_manager(|_| false, "[]")).await;
        let cm = client(&format!("{base}/code-manager"), "old-token-xyz");
        let e = cm.status().await.expect_err("expired");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(!e.message.contains("old-token-xyz"));
        assert_eq!(log_of(&log).len(), 1);
        assert_eq!(cm.mint_count(), 0);
    }

    #[tokio::test]
    async fn a_token_is_re_minted_at_80_percent_of_its_lifetime() {
        let (base, _log) = serve(rbac_and_code_manager(
            |t| t.starts_with("minted-"),
            r#"[{"environment":"production"}]"#,
        ))
        .await;
        let cm = client(
            &format!("{base}/code-manager"),
            &login_secret(&base, Some("10m")),
        );
        cm.dry_run().await.expect("dry run");
        assert_eq!(cm.mint_count(), 1);
        let first = cm.token_expires_at().expect("expiry");
        cm.backdate_token(SignedDuration::from_secs(7 * 60));
        cm.dry_run().await.expect("dry run at 70 %");
        assert_eq!(cm.mint_count(), 1);
        cm.backdate_token(SignedDuration::from_secs(60));
        cm.dry_run().await.expect("dry run at 80 %");
        assert_eq!(cm.mint_count(), 2);
        assert!(cm.token_expires_at().expect("expiry") >= first);
    }

    #[tokio::test]
    async fn a_refused_login_is_unauthorized_and_hides_the_password() {
        let (base, _log) = serve(Arc::new(|seen: &Seen, _: &[Seen]| {
            if seen.path.starts_with("/rbac-api") {
                (
                    401,
                    format!(
                        r#"{{"kind":"puppetlabs.rbac/authentication-failed","msg":"bad login, got {}"}}"#,
                        seen.body.replace('"', "'")
                    ),
                )
            } else {
                (200, "[]".to_owned())
            }
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), &login_secret(&base, None));
        let e = cm.status().await.expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(
            e.message.contains("RBAC refused the login"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("pa55-word-9"), "{}", e.message);
        assert_eq!(cm.token_expires_at(), None);
    }

    #[tokio::test]
    async fn the_webhook_sends_the_token_only_in_the_query_and_never_leaks_it() {
        let (base, log) = serve(Arc::new(|seen: &Seen, _: &[Seen]| {
            // A server that echoes the whole query back in its error.
            (
                400,
                format!(
                    r#"{{"kind":"puppetlabs.code-manager/unrecognized-webhook-type","msg":"Unrecognized webhook type: 'githubby' in ?{}","details":"Currently supported valid webhook types include: github gitlab stash tfs-git bitbucket"}}"#,
                    seen.query.clone().unwrap_or_default()
                ),
            )
        }))
        .await;
        let conn = connection(&format!("{base}/code-manager"), "Wh-T0ken_abcdef");
        let metrics = conn.metrics.clone();
        let cm = CodeManager::new(conn).expect("client");
        let push = serde_json::json!({"ref": "refs/heads/feature/x"});
        let e = cm
            .webhook("githubby", Some("acme"), &push)
            .await
            .expect_err("bad type");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("githubby"), "{}", e.message);
        assert!(!e.message.contains("Wh-T0ken_abcdef"), "{}", e.message);
        assert!(e.message.contains("token=<redacted>"), "{}", e.message);
        let seen = log_of(&log);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/code-manager/v1/webhook");
        assert_eq!(seen[0].auth, None, "no header on the webhook");
        assert_eq!(
            seen[0].query.as_deref(),
            Some("type=githubby&prefix=acme&token=Wh-T0ken_abcdef")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&seen[0].body).expect("json"),
            push
        );
        let rendered = metrics.render();
        assert!(!rendered.contains("Wh-T0ken"), "{rendered}");
        assert!(!rendered.contains("token="), "{rendered}");

        // A server that cannot be reached: the error does not carry the URL either.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = listener.local_addr().expect("addr");
        drop(listener);
        let cm = client(&format!("http://{dead}/code-manager"), "Wh-T0ken_abcdef");
        let e = cm.webhook("github", None, &push).await.expect_err("down");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(!e.message.contains("Wh-T0ken_abcdef"), "{}", e.message);
        assert!(!e.message.contains("token="), "{}", e.message);
    }

    #[tokio::test]
    async fn the_webhook_succeeds_on_ok() {
        let (base, _log) = serve(Arc::new(|_: &Seen, _: &[Seen]| {
            (200, r#"{"status":"OK"}"#.to_owned())
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), "Wh-T0ken_abcdef");
        cm.webhook("github", None, &serde_json::json!({}))
            .await
            .expect("ok");
    }

    #[tokio::test]
    async fn verify_is_a_dry_run_of_the_control_repository() {
        let (base, log) = serve(Arc::new(|seen: &Seen, _: &[Seen]| {
            let body: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
            if body == serde_json::json!({"deploy-all": true, "wait": true, "dry-run": true}) {
                (
                    200,
                    r#"[{"environment":"development"},{"environment":"production"}]"#.to_owned(),
                )
            } else {
                (400, r#"{"kind":"malformed-request","msg":"?"}"#.to_owned())
            }
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), "tok-abc-123");
        assert_eq!(cm.platform_type(), PlatformType::PuppetCodeManager);
        assert_eq!(
            cm.verify().await.expect("verify"),
            "control repository with 2 environments"
        );
        assert_eq!(log_of(&log)[0].path, "/code-manager/v1/deploys");

        let (base, _log) = serve(Arc::new(|_: &Seen, _: &[Seen]| {
            (
                200,
                r#"{"kind":"puppetlabs.code-manager/collect-failed","msg":"Errors while collecting a list of environments to deploy (exit code: 1)","details":"ERROR\t -> Unable to determine current branches for Git source 'puppet'"}"#
                    .to_owned(),
            )
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), "tok-abc-123");
        let e = cm.verify().await.expect_err("unreachable repo");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message
                .contains("the control repository is not reachable"),
            "{}",
            e.message
        );
        assert!(e.message.contains("Git source 'puppet'"));
    }

    #[tokio::test]
    async fn status_of_an_id() {
        let (base, log) = serve(Arc::new(|seen: &Seen, _: &[Seen]| {
            match seen.query.as_deref() {
                Some("id=7") => (
                    200,
                    r#"{"environment":"production","id":7,"status":"synced","queued-at":"2021-06-01T10:00:00Z"}"#
                        .to_owned(),
                ),
                _ => (
                    404,
                    r#"{"kind":"puppetlabs.code-manager/not-found","msg":"No deploy with id 8"}"#
                        .to_owned(),
                ),
            }
        }))
        .await;
        let cm = client(&format!("{base}/code-manager"), "tok-abc-123");
        let s = cm.status_of(7).await.expect("ok").expect("known");
        assert_eq!(s.status, DeployState::Synced);
        assert!(s.status.is_success());
        assert_eq!(s.id, Some(7));
        assert_eq!(cm.status_of(8).await.expect("ok"), None);
        assert_eq!(log_of(&log)[0].path, "/code-manager/v1/deploys/status");
    }
}
