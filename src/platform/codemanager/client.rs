//! The Puppet Enterprise Code Manager API client (`shared/research/puppet-code-manager.md`):
//! `POST /v1/deploys`, `GET /v1/deploys/status[?id=N]` and `POST /v1/webhook`, with RBAC tokens
//! given directly or minted from a login.
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

use crate::api::PlatformType;
use crate::platform::http::{kind_for_status, ApiClient};
use crate::platform::{Connection, Credential, ErrorKind, Platform, PlatformError};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

/// The token lifetime requested when a login does not name one (RBAC's own default).
pub const DEFAULT_LIFETIME: &str = "1h";
/// The port of the console services (RBAC) on the primary.
pub const RBAC_PORT: u16 = 4433;
/// The header Code Manager reads the RBAC token from.
pub const AUTH_HEADER: &str = "X-Authentication";
/// A minted token is replaced once this share (in per mille) of its lifetime has passed.
const REFRESH_PER_MILLE: i64 = 800;
/// A `wait` deploy returns only after every deploy and the file sync to every compiler:
/// at least `timeouts_wait` (700 s) + `timeouts_sync` (300 s) with PE's defaults.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(18 * 60);
/// A dry run fetches the control repository and lists its environments.
pub const DRY_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a platform's text is kept in an error message.
const MAX_TEXT: usize = 600;

// ---------------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------------

/// `POST /v1/deploys` body. Unset keys are omitted, so the server's defaults apply
/// (`deploy-modules` true, `wait` false).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployRequest {
    /// Environment names, after prefixing and name correction ([`environment_name`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Every environment currently in the sources.
    #[serde(rename = "deploy-all", skip_serializing_if = "is_false")]
    pub deploy_all: bool,
    /// `false` skips the Puppetfile modules (they are always deployed the first time).
    #[serde(rename = "deploy-modules", skip_serializing_if = "Option::is_none")]
    pub deploy_modules: Option<bool>,
    /// Only these modules (sent as a JSON array, as Puppet's own client does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<Vec<String>>,
    /// Answer only after every deploy finished and was synced to every compiler.
    #[serde(skip_serializing_if = "is_false")]
    pub wait: bool,
    /// Only test the connection to each source and list the environments.
    #[serde(
        rename = "dry-run",
        alias = "dry_run",
        skip_serializing_if = "is_false"
    )]
    pub dry_run: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The state of one deploy: `new`/`queued` right after `POST /deploys`, `complete`/`failed`
/// after a `wait`, `new`..`synced` from `GET /deploys/status?id=`. Unknown words (such as
/// PE 2016's `pending`) are kept as [`DeployState::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeployState {
    New,
    Queued,
    Deploying,
    Failed,
    /// Committed to file-sync storage; the sync to the servers is still running.
    Syncing,
    /// Deployed and synced to every server.
    Synced,
    /// Deployed and synced (the answer of a `wait` deploy).
    Complete,
    Other(String),
}

impl DeployState {
    pub fn parse(text: &str) -> DeployState {
        match text {
            "new" => DeployState::New,
            "queued" => DeployState::Queued,
            "deploying" => DeployState::Deploying,
            "failed" => DeployState::Failed,
            "syncing" => DeployState::Syncing,
            "synced" => DeployState::Synced,
            "complete" => DeployState::Complete,
            other => DeployState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DeployState::New => "new",
            DeployState::Queued => "queued",
            DeployState::Deploying => "deploying",
            DeployState::Failed => "failed",
            DeployState::Syncing => "syncing",
            DeployState::Synced => "synced",
            DeployState::Complete => "complete",
            DeployState::Other(s) => s,
        }
    }

    /// Nothing more will happen to this deploy.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            DeployState::Failed | DeployState::Synced | DeployState::Complete
        )
    }

    /// The code is deployed and synced to every server.
    pub fn is_success(&self) -> bool {
        matches!(self, DeployState::Synced | DeployState::Complete)
    }
}

impl fmt::Display for DeployState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeployState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeployState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(DeployState::parse(&text))
    }
}

/// A Code Manager or RBAC error object `{kind, msg, details?}`. `details` is an object
/// (`{"corrected-env-name": ..}`) in per-environment errors and a string in top-level ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CmError {
    pub kind: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl CmError {
    /// The environment name Code Manager actually used. The key changed over PE versions:
    /// `corrected-name` (2019.8.10+), `corrected-env-name` (2016-2019), `env-name` (2016.1).
    pub fn corrected_name(&self) -> Option<String> {
        let details = self.details.as_ref()?.as_object()?;
        ["corrected-name", "corrected-env-name", "env-name"]
            .iter()
            .find_map(|key| details.get(*key).and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    }

    /// The kind without its namespace: `token-expired` for `puppetlabs.rbac/token-expired`.
    pub fn short_kind(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or(&self.kind)
    }

    /// The token has expired (or timed out for inactivity): a fresh one may help.
    pub fn is_expiry(&self) -> bool {
        matches!(self.short_kind(), "token-expired" | "token-timed-out")
    }

    /// `details` when it is text (top-level errors such as `collect-failed`).
    pub fn details_text(&self) -> Option<&str> {
        self.details.as_ref().and_then(Value::as_str)
    }
}

impl fmt::Display for CmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.msg.trim_end())
    }
}

/// File sync's internal commits of a deployed environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSync {
    #[serde(rename = "environment-commit")]
    pub environment_commit: String,
    #[serde(rename = "code-commit")]
    pub code_commit: String,
}

/// One element of a `POST /v1/deploys` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployResult {
    #[serde(alias = "project")]
    pub environment: String,
    /// The deploy's place in the queue (kept in memory by Code Manager for `deploy_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub status: DeployState,
    /// The control-repository commit that was deployed (`complete` entries).
    #[serde(
        rename = "deploy-signature",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deploy_signature: Option<String>,
    #[serde(rename = "file-sync", default, skip_serializing_if = "Option::is_none")]
    pub file_sync: Option<FileSync>,
    /// Why it failed (`failed` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

/// A `new`, `queued`, `deploying` or `failed` entry of `GET /v1/deploys/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// Present from PE 2019.8.3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(alias = "project")]
    pub environment: String,
    #[serde(rename = "queued-at", default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

/// An environment in file-sync storage or on one file-sync client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub environment: String,
    pub date: String,
    /// The control-repository commit.
    #[serde(rename = "deploy-signature")]
    pub deploy_signature: String,
}

/// One file-sync client (a compiler or the primary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSyncClient {
    #[serde(default)]
    pub last_check_in_time: Option<String>,
    #[serde(
        rename = "synced-with-file-sync-storage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub synced: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deployed: Vec<Deployed>,
}

/// `GET /v1/deploys/status`, flattened. Deploys that succeeded are not in the four queues:
/// they show up only in `deployed` (file-sync storage, which lists every environment).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "WireStatus", into = "WireStatus")]
pub struct DeploysStatus {
    pub new: Vec<StatusEntry>,
    pub queued: Vec<StatusEntry>,
    pub deploying: Vec<StatusEntry>,
    /// Failures stay listed until garbage collection, even after a later success.
    pub failed: Vec<StatusEntry>,
    /// `file-sync-storage-status.deployed`.
    pub deployed: Vec<Deployed>,
    /// `file-sync-client-status.all-synced`.
    pub all_synced: Option<bool>,
    /// `file-sync-client-status.file-sync-clients`, by server certname.
    pub clients: BTreeMap<String, FileSyncClient>,
}

impl DeploysStatus {
    /// The environment as file-sync storage has it.
    pub fn deployed(&self, environment: &str) -> Option<&Deployed> {
        self.deployed.iter().find(|d| d.environment == environment)
    }

    /// A deploy of the environment is new, queued or deploying.
    pub fn in_progress(&self, environment: &str) -> bool {
        self.new
            .iter()
            .chain(&self.queued)
            .chain(&self.deploying)
            .any(|e| e.environment == environment)
    }

    /// The most recently queued failure of the environment still listed.
    pub fn last_failure(&self, environment: &str) -> Option<&StatusEntry> {
        self.failed
            .iter()
            .filter(|e| e.environment == environment)
            .max_by(|a, b| a.queued_at.cmp(&b.queued_at))
    }

    /// The deploy with this id, and the queue it is in (PE 2019.8.3+).
    pub fn find_id(&self, id: i64) -> Option<(DeployState, &StatusEntry)> {
        [
            (DeployState::New, &self.new),
            (DeployState::Queued, &self.queued),
            (DeployState::Deploying, &self.deploying),
            (DeployState::Failed, &self.failed),
        ]
        .into_iter()
        .find_map(|(state, list)| {
            list.iter()
                .find(|e| e.id == Some(id))
                .map(|e| (state.clone(), e))
        })
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireStatus {
    #[serde(rename = "deploys-status")]
    queues: WireQueues,
    #[serde(rename = "file-sync-storage-status", default)]
    storage: WireStorage,
    #[serde(rename = "file-sync-client-status", default)]
    clients: WireClients,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireQueues {
    #[serde(default, deserialize_with = "null_as_empty")]
    new: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    queued: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    deploying: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    failed: Vec<StatusEntry>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireStorage {
    #[serde(default, deserialize_with = "null_as_empty")]
    deployed: Vec<Deployed>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireClients {
    #[serde(
        rename = "all-synced",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    all_synced: Option<bool>,
    #[serde(rename = "file-sync-clients", default)]
    clients: Option<BTreeMap<String, FileSyncClient>>,
}

impl From<WireStatus> for DeploysStatus {
    fn from(w: WireStatus) -> Self {
        DeploysStatus {
            new: w.queues.new,
            queued: w.queues.queued,
            deploying: w.queues.deploying,
            failed: w.queues.failed,
            deployed: w.storage.deployed,
            all_synced: w.clients.all_synced,
            clients: w.clients.clients.unwrap_or_default(),
        }
    }
}

impl From<DeploysStatus> for WireStatus {
    fn from(s: DeploysStatus) -> Self {
        WireStatus {
            queues: WireQueues {
                new: s.new,
                queued: s.queued,
                deploying: s.deploying,
                failed: s.failed,
            },
            storage: WireStorage {
                deployed: s.deployed,
            },
            clients: WireClients {
                all_synced: s.all_synced,
                clients: Some(s.clients),
            },
        }
    }
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `GET /v1/deploys/status?id=N` (PE 2019.8.3+).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployStatusById {
    /// `project` for CD4PE project deploys.
    #[serde(alias = "project")]
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `new`, `queued`, `deploying`, `failed`, `syncing` or `synced`.
    pub status: DeployState,
    #[serde(rename = "queued-at", default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// Undocumented here; kept when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

#[derive(Deserialize)]
struct DryRunEntry {
    #[serde(alias = "project")]
    environment: String,
}

// ---------------------------------------------------------------------------------------------
// Pure answer handling (shared by the client and the fixture tests)
// ---------------------------------------------------------------------------------------------

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

fn decode<T: DeserializeOwned>(what: &str, body: Value) -> Result<T, PlatformError> {
    serde_json::from_value(body).map_err(|e| {
        PlatformError::new(
            ErrorKind::Protocol,
            format!("code manager {what}: unexpected answer: {e}"),
        )
    })
}

/// A `POST /v1/deploys` answer: one result per environment.
pub fn deploy_results(body: Value) -> Result<Vec<DeployResult>, PlatformError> {
    decode("deploy", body)
}

/// A `GET /v1/deploys/status` answer.
pub fn deploys_status(body: Value) -> Result<DeploysStatus, PlatformError> {
    decode("deploys status", body)
}

/// A `GET /v1/deploys/status?id=N` answer. A Code Manager older than PE 2019.8.3 ignores `id`
/// and answers the full status: that is reported as such.
pub fn deploy_status_by_id(body: Value) -> Result<DeployStatusById, PlatformError> {
    if body.get("deploys-status").is_some() {
        return Err(PlatformError::new(
            ErrorKind::Invalid,
            "this Code Manager cannot report a deploy by id (it needs PE 2019.8.3 or later): \
             deploy with wait, or follow the full status",
        ));
    }
    decode("deploy status by id", body)
}

/// A dry-run answer: the environment names the control repository has.
pub fn dry_run_environments(body: Value) -> Result<Vec<String>, PlatformError> {
    let entries: Vec<DryRunEntry> = decode("dry run", body)?;
    Ok(entries.into_iter().map(|e| e.environment).collect())
}

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

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

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

struct Login {
    login: String,
    password: Credential,
    lifetime: String,
    /// `None` for `"0"` (RBAC's maximum): only an expiry answer triggers a new token.
    lifetime_secs: Option<i64>,
    token_url: String,
}

enum Auth {
    Token(Credential),
    Login(Login),
}

#[derive(Clone)]
struct Minted {
    token: Credential,
    expires_at: Option<Timestamp>,
    refresh_at: Option<Timestamp>,
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
    api: ApiClient,
    auth: Auth,
    minted: StdMutex<Option<Minted>>,
    /// Serializes minting, so concurrent requests share one new token.
    minting: AsyncMutex<()>,
    mints: AtomicU64,
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

    fn login(secret: &str, endpoint: &str) -> Result<Login, PlatformError> {
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

    fn password(&self) -> &str {
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
    async fn token(&self) -> Result<Credential, PlatformError> {
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
    async fn refresh(&self, refused: &Credential) -> Result<Credential, PlatformError> {
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

    #[cfg(test)]
    fn backdate_token(&self, by: SignedDuration) {
        if let Some(m) = self.lock_minted().as_mut() {
            m.expires_at = m.expires_at.and_then(|t| t.checked_sub(by).ok());
            m.refresh_at = m.refresh_at.and_then(|t| t.checked_sub(by).ok());
        }
    }
}

fn scrub(mut error: PlatformError, secrets: &[&str]) -> PlatformError {
    error.message = redact(&error.message, secrets);
    error
}

#[async_trait]
impl Platform for CodeManager {
    fn platform_type(&self) -> PlatformType {
        PlatformType::PuppetCodeManager
    }

    fn workspaces(&self) -> Option<&dyn crate::platform::drivers::WorkspaceDriver> {
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
mod tests {
    use super::*;
    use crate::platform::budget::RateBudget;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Uri};
    use axum::response::IntoResponse;
    use axum::Router;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    // -- fixtures ------------------------------------------------------------------------------

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/puppet-code-manager")
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(fixtures().join(name)).expect(name)
    }

    /// The body as the client reads it: through `classify` with the given status.
    fn answer(name: &str, status: u16) -> Result<Value, PlatformError> {
        classify(
            StatusCode::from_u16(status).expect("status"),
            &fixture(name),
        )
    }

    fn results(name: &str) -> Vec<DeployResult> {
        deploy_results(answer(name, 200).expect(name)).expect(name)
    }

    fn full_status(name: &str) -> DeploysStatus {
        deploys_status(answer(name, 200).expect(name)).expect(name)
    }

    fn all_fixture_files() -> Vec<String> {
        let mut out = Vec::new();
        for dir in ["deploys", "deploys-status", "errors"] {
            for entry in std::fs::read_dir(fixtures().join(dir)).expect(dir) {
                let entry = entry.expect("entry");
                out.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_fixture_file_is_checked() {
        let checked = [
            "deploys-status/cmdash-large-02-deploy-status-multiple.json",
            "deploys-status/cmdash-large-05-deploy-status-deleted.json",
            "deploys-status/cmdash-large-07-deploy-status-updating.json",
            "deploys-status/cmdash-small-01-multiple-in-progress.json",
            "deploys-status/cmdash-small-02-done.json",
            "deploys/jenkins-pe2016.4-code_deploy.json",
            "deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json",
            "deploys/pejava-deploy_mixed.json",
            "deploys/pejava-puppet_deploy_error.json",
            "errors/jenkins-pe2016.4-deploys-expired_token.json",
            "errors/pejava-puppet_general_fail.json",
        ];
        assert_eq!(all_fixture_files(), checked, "a fixture has no test");
        // And every one of them goes through the client's own path without a protocol error.
        for name in all_fixture_files() {
            let status = if name.contains("expired_token") {
                401
            } else {
                200
            };
            match answer(&name, status) {
                Ok(body) if name.starts_with("deploys-status/") => {
                    deploys_status(body).expect(&name);
                }
                Ok(body) => {
                    deploy_results(body).expect(&name);
                }
                Err(e) => {
                    assert!(name.starts_with("errors/"), "{name}: {e}");
                    assert_ne!(e.kind, ErrorKind::Protocol, "{name}");
                }
            }
        }
    }

    #[test]
    fn mixed_deploy_all_has_ids_38_to_43_and_one_failure() {
        let r = results("deploys/pejava-deploy_mixed.json");
        assert_eq!(
            r.iter().map(|e| e.id).collect::<Vec<_>>(),
            (38..=43).map(Some).collect::<Vec<_>>()
        );
        let failed: Vec<_> = r
            .iter()
            .filter(|e| e.status == DeployState::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        let f = failed[0];
        assert_eq!(
            (f.environment.as_str(), f.id),
            ("fail_code_quality", Some(39))
        );
        assert!(f.deploy_signature.is_none() && f.file_sync.is_none());
        let err = f.error.as_ref().expect("error");
        assert_eq!(err.kind, "puppetlabs.code-manager/deploy-failure");
        assert_eq!(err.corrected_name().as_deref(), Some("fail_code_quality"));
        assert!(
            err.msg.contains("Puppetfile:19: syntax error"),
            "{}",
            err.msg
        );
        assert!(!err.is_expiry());
        let ok: Vec<_> = r.iter().filter(|e| e.status.is_success()).collect();
        assert_eq!(ok.len(), 5);
        assert!(ok
            .iter()
            .all(|e| e.status == DeployState::Complete && e.error.is_none()));
        let production = r.iter().find(|e| e.environment == "production").expect("p");
        assert_eq!(production.id, Some(43));
        assert_eq!(
            production.deploy_signature.as_deref(),
            Some("9e5475a0dbfb705bf474af80cbdf56f0477e7dc3")
        );
        let development = &r[0];
        assert_eq!(development.environment, "development");
        assert_eq!(
            development.file_sync,
            Some(FileSync {
                environment_commit: "943b1140bff1f510a0e4fd7dd7b769f04c14d510".into(),
                code_commit: "9a4c7c8174d48c35fd808313553bade148fc4cb8".into(),
            })
        );
        // Two environments deployed from the same control-repo commit.
        assert_eq!(
            r.iter()
                .filter(|e| e.deploy_signature.as_deref()
                    == Some("22811999e6cbeaf4b6be744a4d0b454b831f8999"))
                .map(|e| e.environment.as_str())
                .collect::<Vec<_>>(),
            ["development", "hmm"]
        );
    }

    #[test]
    fn jenkins_wait_deploys_parse() {
        let ok = results("deploys/jenkins-pe2016.4-code_deploy.json");
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].environment, "production");
        assert_eq!(ok[0].id, Some(6));
        assert_eq!(ok[0].status, DeployState::Complete);
        assert_eq!(
            ok[0].deploy_signature.as_deref(),
            Some("45ddf48253c2ee7537aae05c7e674879fd8bb616")
        );
        let fs = ok[0].file_sync.as_ref().expect("file-sync");
        assert_eq!(
            fs.environment_commit,
            "0d1bf46d5613a819ebb76ded56ebdedd0a326be3"
        );
        assert_eq!(fs.code_commit, "4bbf215913a801f1c090f5a58382c3009e4e5905");

        let failed = results("deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].environment.as_str(), failed[0].id),
            ("nosuchenv", Some(10))
        );
        assert_eq!(failed[0].status, DeployState::Failed);
        assert!(failed[0].status.is_terminal() && !failed[0].status.is_success());
        let err = failed[0].error.as_ref().expect("error");
        assert_eq!(err.corrected_name().as_deref(), Some("nosuchenv"));
        assert!(err.msg.contains("cannot be found in any source"));
    }

    #[test]
    fn pejava_failed_deploy_parses() {
        let r = results("deploys/pejava-puppet_deploy_error.json");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].environment.as_str(), r[0].id), ("nothere", Some(268)));
        assert_eq!(r[0].status, DeployState::Failed);
        let err = r[0].error.as_ref().expect("error");
        assert_eq!(err.short_kind(), "deploy-failure");
        assert_eq!(err.corrected_name().as_deref(), Some("nothere"));
        assert!(err.msg.contains("'nothere' cannot be found in any source"));
    }

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
    fn status_with_queued_and_deploying_of_one_environment() {
        let s = full_status("deploys-status/cmdash-large-02-deploy-status-multiple.json");
        assert!(s.new.is_empty());
        assert_eq!(s.queued.len(), 1);
        assert_eq!(s.deploying.len(), 1);
        assert_eq!(s.queued[0].environment, "combined_minor_changes");
        assert_eq!(
            s.queued[0].queued_at.as_deref(),
            Some("2018-11-16T01:53:30.081Z")
        );
        assert_eq!(s.deploying[0].environment, "combined_minor_changes");
        assert_eq!(
            s.deploying[0].queued_at.as_deref(),
            Some("2018-11-16T01:52:44.645Z")
        );
        assert!(s.queued[0].id.is_none(), "PE 2018 has no ids");
        assert!(s.in_progress("combined_minor_changes"));
        assert!(!s.in_progress("production"));
        let f = s.last_failure("win_profile_metadata").expect("failure");
        let err = f.error.as_ref().expect("error");
        assert_eq!(
            err.corrected_name().as_deref(),
            Some("win_profile_metadata")
        );
        assert!(err.msg.contains("Object not found - no match for id"));
        assert_eq!(s.deployed.len(), 39);
        assert_eq!(
            s.deployed("production")
                .map(|d| d.deploy_signature.as_str()),
            Some("998201c251a9b6432780ab51bbe1d83cb38314d1")
        );
        // Storage is ahead of the compilers while syncing.
        assert_eq!(
            s.deployed("combined_minor_changes")
                .map(|d| d.deploy_signature.as_str()),
            Some("deb98deb2f6753d5fe18c2702cb34b7394756ea8")
        );
        assert_eq!(s.all_synced, Some(false));
        assert_eq!(s.clients.len(), 7);
        let mom = &s.clients["pe-mom1-prod.ops.puppetlabs.net"];
        assert_eq!(
            mom.last_check_in_time.as_deref(),
            Some("2018-11-16T01:53:33.231Z")
        );
        assert_eq!(mom.synced, Some(false));
        assert_eq!(mom.deployed.len(), 39);
        let on_mom = mom
            .deployed
            .iter()
            .find(|d| d.environment == "combined_minor_changes")
            .expect("env");
        assert_eq!(
            on_mom.deploy_signature,
            "3f809d0eaad1458bc1f0cf681cb225985cd6dc64"
        );
        assert!(s.clients.values().all(|c| c.synced == Some(false)));
    }

    #[test]
    fn status_after_deleted_branches() {
        let s = full_status("deploys-status/cmdash-large-05-deploy-status-deleted.json");
        assert!(s.new.is_empty() && s.queued.is_empty() && s.deploying.is_empty());
        assert_eq!(
            s.failed
                .iter()
                .map(|e| e.environment.as_str())
                .collect::<Vec<_>>(),
            ["combined_minor_changes", "p9openstack_designate"]
        );
        for f in &s.failed {
            let err = f.error.as_ref().expect("error");
            assert_eq!(
                err.corrected_name().as_deref(),
                Some(f.environment.as_str())
            );
            assert!(err.msg.contains("cannot be found in any source"));
        }
        assert_eq!(s.all_synced, Some(true));
        assert!(s.clients.values().all(|c| c.synced == Some(true)));
        assert_eq!(s.deployed.len(), 39);
    }

    #[test]
    fn status_while_updating() {
        let s = full_status("deploys-status/cmdash-large-07-deploy-status-updating.json");
        assert_eq!(s.deploying.len(), 1);
        assert_eq!(s.deploying[0].environment, "allusers_win_hyperv");
        assert!(s.in_progress("allusers_win_hyperv"));
        assert_eq!(s.failed.len(), 3);
        assert_eq!(
            s.last_failure("allusers_gene_account_update")
                .and_then(|f| f.queued_at.as_deref()),
            Some("2018-11-17T09:25:37.815Z")
        );
        assert_eq!(s.all_synced, Some(true));
        assert_eq!(s.clients.len(), 7);
    }

    #[test]
    fn small_status_bodies() {
        let s = full_status("deploys-status/cmdash-small-01-multiple-in-progress.json");
        assert_eq!(s.queued.len(), 1);
        assert_eq!(s.deploying.len(), 1);
        assert!(s.failed.is_empty());
        assert_eq!(s.deployed.len(), 1);
        assert_eq!(
            s.deployed[0].deploy_signature,
            "deb98deb2f6753d5fe18c2702cb34b7394756ea8"
        );
        assert_eq!(s.all_synced, Some(false));

        let done = full_status("deploys-status/cmdash-small-02-done.json");
        assert!(done.new.is_empty() && done.queued.is_empty());
        assert!(done.deploying.is_empty() && done.failed.is_empty());
        assert!(!done.in_progress("combined_minor_changes"));
        assert_eq!(
            done.deployed("combined_minor_changes"),
            Some(&Deployed {
                environment: "combined_minor_changes".into(),
                date: "2018-11-16T01:55:00.000Z".into(),
                deploy_signature: "09f2520f56cbfa415d0310908a37009eecfa202a".into(),
            })
        );
        assert_eq!(done.all_synced, Some(true));
        assert!(done.clients.values().all(|c| c.synced == Some(true)));
    }

    #[test]
    fn status_serializes_back_to_the_wire_shape() {
        let s = full_status("deploys-status/cmdash-large-02-deploy-status-multiple.json");
        let wire = serde_json::to_value(&s).expect("encode");
        assert!(wire["deploys-status"]["queued"].is_array());
        assert_eq!(wire["file-sync-client-status"]["all-synced"], false);
        assert_eq!(deploys_status(wire).expect("decode"), s);
    }

    // -- pure units ----------------------------------------------------------------------------

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

    #[test]
    fn deploy_states_parse_and_judge() {
        for (text, state) in [
            ("new", DeployState::New),
            ("queued", DeployState::Queued),
            ("deploying", DeployState::Deploying),
            ("failed", DeployState::Failed),
            ("syncing", DeployState::Syncing),
            ("synced", DeployState::Synced),
            ("complete", DeployState::Complete),
            ("pending", DeployState::Other("pending".into())),
        ] {
            let parsed: DeployState =
                serde_json::from_value(Value::String(text.into())).expect(text);
            assert_eq!(parsed, state);
            assert_eq!(serde_json::to_value(&state).expect("encode"), text);
            assert_eq!(state.to_string(), text);
        }
        let terminal = [
            DeployState::Failed,
            DeployState::Synced,
            DeployState::Complete,
        ];
        for s in &terminal {
            assert!(s.is_terminal(), "{s}");
        }
        for s in [
            DeployState::New,
            DeployState::Queued,
            DeployState::Deploying,
            DeployState::Syncing,
            DeployState::Other("pending".into()),
        ] {
            assert!(!s.is_terminal() && !s.is_success(), "{s}");
        }
        assert!(DeployState::Synced.is_success() && DeployState::Complete.is_success());
        assert!(!DeployState::Failed.is_success());
    }

    #[test]
    fn corrected_names_from_every_details_key() {
        for key in ["corrected-name", "corrected-env-name", "env-name"] {
            let e = CmError {
                kind: "puppetlabs.code-manager/deploy-failure".into(),
                msg: "x".into(),
                details: Some(serde_json::json!({ key: "feature_x" })),
            };
            assert_eq!(e.corrected_name().as_deref(), Some("feature_x"), "{key}");
        }
        let text = CmError {
            kind: "k".into(),
            msg: String::new(),
            details: Some(Value::String("ERROR".into())),
        };
        assert_eq!(text.corrected_name(), None);
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
    fn deploy_requests_use_hyphenated_keys_and_omit_unset_ones() {
        let full = DeployRequest {
            environments: vec!["production".into(), "feature_x".into()],
            deploy_all: false,
            deploy_modules: Some(false),
            modules: Some(vec!["apache".into(), "nginx".into()]),
            wait: true,
            dry_run: false,
        };
        assert_eq!(
            serde_json::to_value(&full).expect("encode"),
            serde_json::json!({
                "environments": ["production", "feature_x"],
                "deploy-modules": false,
                "modules": ["apache", "nginx"],
                "wait": true,
            })
        );
        let dry = DeployRequest {
            deploy_all: true,
            wait: true,
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&dry).expect("encode"),
            serde_json::json!({"deploy-all": true, "wait": true, "dry-run": true})
        );
        assert_eq!(
            serde_json::to_value(DeployRequest::default()).expect("encode"),
            serde_json::json!({})
        );
        // Read back (for simulators), including PE 2017's `dry_run`.
        let back: DeployRequest =
            serde_json::from_value(serde_json::json!({"deploy-all": true, "dry_run": true}))
                .expect("decode");
        assert!(back.deploy_all && back.dry_run && !back.wait);
        assert_eq!(
            serde_json::from_value::<DeployRequest>(serde_json::to_value(&full).expect("e"))
                .expect("d"),
            full
        );
    }

    #[test]
    fn status_by_id_accepts_project_and_refuses_old_servers() {
        let s = deploy_status_by_id(serde_json::json!({
            "project": "cd4pe_proj", "id": 7, "status": "syncing", "queued-at": "2021-01-01T00:00:00Z"
        }))
        .expect("decode");
        assert_eq!(s.environment, "cd4pe_proj");
        assert_eq!(s.id, Some(7));
        assert_eq!(s.status, DeployState::Syncing);
        assert_eq!(s.queued_at.as_deref(), Some("2021-01-01T00:00:00Z"));
        let old = answer("deploys-status/cmdash-small-02-done.json", 200).expect("body");
        let e = deploy_status_by_id(old).expect_err("old PE");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("2019.8.3"));
    }

    #[test]
    fn dry_run_lists_environment_names() {
        let body = classify(
            StatusCode::OK,
            r#"[{"environment":"development"},{"environment":"production"}]"#,
        )
        .expect("ok");
        assert_eq!(
            dry_run_environments(body).expect("names"),
            ["development", "production"]
        );
    }

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

    fn connection(endpoint: &str, secret: &str) -> Connection {
        Connection {
            platform: PlatformType::PuppetCodeManager,
            endpoint: endpoint.to_owned(),
            credential: Credential::new(secret),
            ca_pem: None,
            defaults: Default::default(),
            budget: Arc::new(RateBudget::new(6000, 100)),
            metrics: crate::core::metrics::Metrics::new(),
            dry_run: None,
        }
    }

    fn client(endpoint: &str, secret: &str) -> CodeManager {
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
