//! In-memory simulator of the Puppet Enterprise Code Manager API (`bosun sim`).
//!
//! Follows `shared/research/puppet-code-manager.md` and the real bodies in
//! `shared/specs/puppet-code-manager/`: HTTPS only, with a CA generated at start (see
//! [`CodeManagerSim::ca_pem`]), the API under `/code-manager/v1` and the RBAC token endpoint
//! under `/rbac-api/v1` on the same port (real PE serves RBAC on the console's port 4433).
//!
//! Implemented:
//! - `POST /code-manager/v1/deploys` (`environments` or `deploy-all`, `wait`, `dry-run` and the
//!   legacy `dry_run`; `deploy-modules` and `modules` are validated and recorded only);
//! - `GET /code-manager/v1/deploys/status` (full object, or `?id=N` as on PE ≥ 2019.8.3);
//! - `POST /code-manager/v1/webhook?type=..&prefix=..&token=..` (GitHub/GitLab `ref`, Bitbucket
//!   Server `changes[].refId`, Bitbucket Cloud `push.changes[].new.name`, TFS
//!   `resource.refUpdates[].name`);
//! - `POST /rbac-api/v1/auth/token` (`{login, password, lifetime?, label?}` → `{token}`).
//!
//! Every Code Manager route needs a token in `X-Authentication` (or, when that header is
//! absent or empty, the `token` query parameter), answered as the RBAC client middleware does:
//! 401 with the RBAC error map (`user-unauthenticated`, `invalid-token`, `token-expired`,
//! `token-revoked`). The configured [`SimConfig::token`] never expires by itself; minted tokens
//! expire after their lifetime; [`CodeManagerSim::expire_token`] and
//! [`CodeManagerSim::revoke_token`] act on either kind.
//!
//! The control repository is one git source without a prefix, with branches `production` and
//! `staging` at start, both already deployed (in file-sync storage and on the clients). An
//! environment is its branch name with every non-word character replaced by `_`
//! (`invalid_branches: correct`).
//!
//! Time is simulated lazily (no background tasks): each deploy gets its schedule when it is
//! queued — `new` for one step (default 300 ms), `queued` for one step or until the previous
//! deploy of the same environment has finished deploying (deploys of one environment run one
//! at a time, which is how the real status shows one environment both `queued` and
//! `deploying`), `deploying` for one step, then `syncing` for one step and `synced`, or
//! `failed`. What a deploy deploys is decided from the state of the control repository at the
//! instant it starts deploying (pushes, deletions and reachability are kept as a history), as
//! r10k fetches at that moment. A step-duration change applies to deploys queued afterwards.
//! Finished deploys are forgotten `deploy_ttl` (default 1 h) after they finished; ids keep
//! growing from the configured first id and are never reused.
//!
//! Where the research notes say the real behaviour is undocumented, the simulator chooses (and
//! marks the bodies as synthetic):
//! - status codes of Code Manager's own errors: `unrecognized-webhook-type` and malformed
//!   requests `400`, `collect-failed` `500`, an unknown or expired `?id=` `404` with
//!   `{kind: "puppetlabs.code-manager/not-found", msg}`;
//! - malformed bodies answer `{kind: "puppetlabs.code-manager/malformed-request", msg}` (RBAC:
//!   `puppetlabs.rbac/malformed-request`);
//! - `?id=` of a failed deploy has no `error` (fetch the full status for it);
//! - a deploy of a branch that does not exist removes that environment from file-sync storage
//!   (and, one step later, from the clients), as the real status bodies suggest after branches
//!   were deleted; a deploy that fails because the repository is unreachable changes nothing;
//! - `deploy-all` while the repository is unreachable answers `collect-failed` like a dry run;
//! - `wait` has no server-side timeout;
//! - there is one deploy worker per environment and no global pool (`deploy_pool_size`);
//! - token labels must be unique among a user's live tokens (`400` otherwise).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_rustls::rustls;

use crate::sim::{bind_tls, with_sim, SimConfig, SimControl, SimServer};

/// Where `bosun sim` serves Code Manager unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:18170";

/// The path prefix of the API (clients append `/v1/...`).
pub const API_PREFIX: &str = "/code-manager";

/// The RBAC user that can mint tokens unless configured otherwise.
pub const DEFAULT_LOGIN: &str = "deployer";

/// That user's password unless configured otherwise.
pub const DEFAULT_PASSWORD: &str = "sim-password";

/// How long each deploy phase lasts unless changed.
pub const DEFAULT_STEP_DURATION: Duration = Duration::from_millis(300);

/// How long finished deploys are remembered unless changed (PE's `deploy_ttl`).
pub const DEFAULT_DEPLOY_TTL: Duration = Duration::from_secs(3600);

/// The id of the first deploy unless configured otherwise.
pub const DEFAULT_FIRST_DEPLOY_ID: u64 = 100;

/// The environments (branches) the control repository starts with.
pub const INITIAL_BRANCHES: [&str; 2] = ["production", "staging"];

/// The file-sync clients listed in the status (the primary's own puppetserver and a compiler).
pub const FILE_SYNC_CLIENTS: [&str; 2] = ["primary.bosun-sim.local", "compiler-1.bosun-sim.local"];

/// Webhook types Code Manager accepts (`stash` is the old name of `bitbucket-server`).
pub const WEBHOOK_TYPES: [&str; 6] = [
    "github",
    "gitlab",
    "bitbucket-server",
    "bitbucket",
    "tfs-git",
    "stash",
];

/// RBAC's default token lifetime (`rbac_token_auth_lifetime`).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// RBAC's maximum token lifetime (`rbac_token_maximum_lifetime`), also what `"0"` asks for.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Phase durations are capped at this, so instant arithmetic cannot overflow.
const MAX_STEP_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The control repository's remote, as error messages name it.
const CONTROL_REPO: &str = "git@git.bosun-sim.local:puppet/control-repo.git";

const CM_KIND: &str = "puppetlabs.code-manager/";
const RBAC_KIND: &str = "puppetlabs.rbac/";

/// Settings of a Code Manager simulator beyond the shared [`SimConfig`].
#[derive(Clone)]
pub struct CodeManagerSettings {
    /// The RBAC user that can mint tokens.
    pub login: String,
    pub password: String,
    /// The id of the first deploy; later ones count up from it.
    pub first_deploy_id: u64,
    /// Duration of each deploy phase (capped at one day).
    pub step_duration: Duration,
    /// How long finished deploys stay visible (PE's `deploy_ttl`).
    pub deploy_ttl: Duration,
}

impl Default for CodeManagerSettings {
    fn default() -> Self {
        Self {
            login: DEFAULT_LOGIN.to_owned(),
            password: DEFAULT_PASSWORD.to_owned(),
            first_deploy_id: DEFAULT_FIRST_DEPLOY_ID,
            step_duration: DEFAULT_STEP_DURATION,
            deploy_ttl: DEFAULT_DEPLOY_TTL,
        }
    }
}

// Hand-written so the password never lands in a log line.
impl std::fmt::Debug for CodeManagerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeManagerSettings")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .field("first_deploy_id", &self.first_deploy_id)
            .field("step_duration", &self.step_duration)
            .field("deploy_ttl", &self.deploy_ttl)
            .finish()
    }
}

/// The state of one deploy as `GET /deploys/status?id=N` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStatus {
    New,
    Queued,
    Deploying,
    Failed,
    Syncing,
    Synced,
}

impl DeployStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Queued => "queued",
            Self::Deploying => "deploying",
            Self::Failed => "failed",
            Self::Syncing => "syncing",
            Self::Synced => "synced",
        }
    }

    /// Whether the deploy is over (`failed` or `synced`).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Failed | Self::Synced)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: Code Manager's and RBAC's `{kind, msg, details?}`.
#[derive(Debug)]
struct ApiError {
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

    fn rbac(status: StatusCode, kind: &str, msg: impl Into<String>) -> Self {
        Self::new(status, format!("{RBAC_KIND}{kind}"), msg)
    }

    fn code_manager(status: StatusCode, kind: &str, msg: impl Into<String>) -> Self {
        Self::new(status, format!("{CM_KIND}{kind}"), msg)
    }

    fn with_details(mut self, details: Value) -> Self {
        if let Value::Object(map) = &mut self.body {
            map.insert("details".to_owned(), details);
        }
        self
    }

    /// The exact body of the RBAC client middleware (`wrap-block-anonymous-access`).
    fn unauthenticated() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "user-unauthenticated",
            "Route requires authentication",
        )
    }

    // Synthetic message: the real one comes from the closed-source RBAC service. It must not
    // echo the token.
    fn invalid_token() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "The provided token is not valid.",
        )
    }

    /// The real body (fixture `errors/jenkins-pe2016.4-deploys-expired_token.json`).
    fn token_expired() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "token-expired",
            "The provided token has expired.",
        )
    }

    /// The body the research notes quote for a revoked token.
    fn token_revoked() -> Self {
        Self::rbac(
            StatusCode::UNAUTHORIZED,
            "token-revoked",
            "Authentication token has been revoked.",
        )
    }

    fn malformed(msg: impl Into<String>) -> Self {
        Self::code_manager(StatusCode::BAD_REQUEST, "malformed-request", msg)
    }

    fn rbac_malformed(msg: impl Into<String>) -> Self {
        Self::rbac(StatusCode::BAD_REQUEST, "malformed-request", msg)
    }

    /// The dry-run failure body of the PE 2017.3 docs (`details` is a string there).
    fn collect_failed() -> Self {
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

type ApiResult<T> = Result<T, ApiError>;

fn unreachable_cause() -> String {
    format!(
        "Unable to determine current branches for Git source 'puppet' \
         (/etc/puppetlabs/code-staging/environments)\nOriginal exception:\n\
         Failed to connect to {CONTROL_REPO}: Connection timed out (simulated)"
    )
}

// ---------------------------------------------------------------------------------------------
// State

/// Wall-clock rendering of simulator instants.
struct Clock {
    instant: Instant,
    wall: jiff::Timestamp,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: jiff::Timestamp::now(),
        }
    }

    fn wall(&self, at: Instant) -> jiff::Timestamp {
        let since = at.saturating_duration_since(self.instant);
        self.wall.checked_add(since).unwrap_or(self.wall)
    }

    /// `2018-11-16T01:53:30.081Z`, as `queued-at` and `last_check_in_time` are rendered.
    fn render(&self, at: Instant) -> String {
        format!("{:.3}", self.wall(at))
    }

    /// `2018-11-15T19:26:27.000Z`, as file-sync `date`s are rendered (whole seconds).
    fn render_seconds(&self, at: Instant) -> String {
        let wall = self.wall(at);
        let whole = jiff::Timestamp::from_second(wall.as_second()).unwrap_or(wall);
        format!("{whole:.3}")
    }
}

/// What a deploy found when it started deploying.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Deployed { signature: String },
    NotFound,
    Unreachable,
}

#[derive(Clone, Debug)]
struct Deploy {
    id: u64,
    /// The name as requested.
    environment: String,
    /// The environment directory: the name after correction.
    directory: String,
    queued_at: Instant,
    /// `new` until here, then `queued`.
    queued_from: Instant,
    /// `deploying` from here.
    deploy_start: Instant,
    /// Committed to file-sync storage (or failed) here.
    deploy_end: Instant,
    /// On every file-sync client here.
    synced_at: Instant,
    /// Decided at `deploy_start`.
    outcome: Option<Outcome>,
    environment_commit: String,
    code_commit: String,
    storage_applied: bool,
    clients_applied: bool,
}

impl Deploy {
    fn status(&self, now: Instant) -> DeployStatus {
        if now < self.queued_from {
            DeployStatus::New
        } else if now < self.deploy_start {
            DeployStatus::Queued
        } else if now < self.deploy_end {
            DeployStatus::Deploying
        } else {
            match self.outcome {
                Some(Outcome::Deployed { .. }) if now < self.synced_at => DeployStatus::Syncing,
                Some(Outcome::Deployed { .. }) => DeployStatus::Synced,
                // `advance` resolves every outcome before anything reads the status.
                Some(Outcome::NotFound | Outcome::Unreachable) | None => DeployStatus::Failed,
            }
        }
    }

    fn finished_at(&self) -> Instant {
        match self.outcome {
            Some(Outcome::Deployed { .. }) => self.synced_at,
            _ => self.deploy_end,
        }
    }

    /// When the status changes next, or `None` once it is final.
    fn next_change(&self, now: Instant) -> Option<Instant> {
        match self.status(now) {
            DeployStatus::New => Some(self.queued_from),
            DeployStatus::Queued => Some(self.deploy_start),
            DeployStatus::Deploying => Some(self.deploy_end),
            DeployStatus::Syncing => Some(self.synced_at),
            DeployStatus::Failed | DeployStatus::Synced => None,
        }
    }

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

/// One environment in file-sync storage or on a client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    date: String,
    signature: String,
}

#[derive(Clone, Debug)]
struct TokenRecord {
    /// `None` = never expires by itself.
    expires_at: Option<Instant>,
    label: Option<String>,
    expired: bool,
    revoked: bool,
}

impl TokenRecord {
    fn is_expired(&self, now: Instant) -> bool {
        self.expired || self.expires_at.is_some_and(|at| now >= at)
    }
}

struct Data {
    settings: CodeManagerSettings,
    tokens: HashMap<String, TokenRecord>,
    minted: usize,
    /// Current head of each branch.
    branches: BTreeMap<String, String>,
    /// Every push (`Some(sha)`) and deletion (`None`), oldest first.
    branch_events: Vec<(Instant, String, Option<String>)>,
    /// Every reachability change, oldest first (reachable before the first).
    reachability_events: Vec<(Instant, bool)>,
    next_id: u64,
    deploys: BTreeMap<u64, Deploy>,
    /// Deploys a `wait` request still has to answer for (never garbage-collected).
    pinned: BTreeSet<u64>,
    /// File-sync storage (the staging code dir), by environment.
    storage: BTreeMap<String, Stored>,
    /// What every file-sync client has, by environment (all clients sync together).
    clients: BTreeMap<String, Stored>,
    /// Bodies received by `POST /deploys`.
    requests: Vec<Value>,
}

impl Data {
    fn unreachable_at(&self, at: Instant) -> bool {
        self.reachability_events
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .is_some_and(|(_, unreachable)| *unreachable)
    }

    /// The environments of the current branches, sorted and without duplicates.
    fn current_environments(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.branches.keys().map(|b| environment_name(b)).collect();
        set.into_iter().collect()
    }

    /// What a deploy of `directory` starting at `at` finds in the control repository.
    fn resolve(&self, directory: &str, at: Instant) -> Outcome {
        if self.unreachable_at(at) {
            return Outcome::Unreachable;
        }
        let mut heads: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (t, branch, sha) in &self.branch_events {
            if *t > at {
                break;
            }
            heads.insert(branch, sha.as_deref());
        }
        heads
            .into_iter()
            .find_map(|(branch, sha)| {
                sha.filter(|_| environment_name(branch) == directory)
                    .map(str::to_owned)
            })
            .map_or(Outcome::NotFound, |signature| Outcome::Deployed {
                signature,
            })
    }

    fn enqueue(&mut self, environment: &str, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let step = self.settings.step_duration;
        let directory = environment_name(environment);
        let previous_end = self
            .deploys
            .values()
            .filter(|d| d.directory == directory)
            .map(|d| d.deploy_end)
            .max();
        let queued_from = now + step;
        let deploy_start = (queued_from + step).max(previous_end.unwrap_or(now));
        let deploy_end = deploy_start + step;
        self.deploys.insert(
            id,
            Deploy {
                id,
                environment: environment.to_owned(),
                directory,
                queued_at: now,
                queued_from,
                deploy_start,
                deploy_end,
                synced_at: deploy_end + step,
                outcome: None,
                environment_commit: random_sha(),
                code_commit: random_sha(),
                storage_applied: false,
                clients_applied: false,
            },
        );
        id
    }

    /// Applies everything that has happened up to `now`, in the order it happened.
    fn advance(&mut self, now: Instant, clock: &Clock) {
        let starting: Vec<(u64, String, Instant)> = self
            .deploys
            .values()
            .filter(|d| d.outcome.is_none() && d.deploy_start <= now)
            .map(|d| (d.id, d.directory.clone(), d.deploy_start))
            .collect();
        for (id, directory, at) in starting {
            let outcome = self.resolve(&directory, at);
            if let Some(deploy) = self.deploys.get_mut(&id) {
                deploy.outcome = Some(outcome);
            }
        }

        // (when, 0 = storage / 1 = clients, id): storage commits before clients sync.
        let mut events: Vec<(Instant, u8, u64)> = Vec::new();
        for d in self.deploys.values() {
            if !d.storage_applied && d.deploy_end <= now {
                events.push((d.deploy_end, 0, d.id));
            }
            if !d.clients_applied && d.synced_at <= now {
                events.push((d.synced_at, 1, d.id));
            }
        }
        events.sort();
        for (at, kind, id) in events {
            let Some(deploy) = self.deploys.get_mut(&id) else {
                continue;
            };
            if kind == 0 {
                deploy.storage_applied = true;
                match &deploy.outcome {
                    Some(Outcome::Deployed { signature }) => {
                        let stored = Stored {
                            date: clock.render_seconds(at),
                            signature: signature.clone(),
                        };
                        let directory = deploy.directory.clone();
                        self.storage.insert(directory, stored);
                    }
                    Some(Outcome::NotFound) => {
                        let directory = deploy.directory.clone();
                        self.storage.remove(&directory);
                    }
                    Some(Outcome::Unreachable) | None => {}
                }
            } else {
                deploy.clients_applied = true;
                self.clients = self.storage.clone();
            }
        }
    }

    /// Forgets deploys that finished more than `deploy_ttl` ago.
    fn collect_garbage(&mut self, now: Instant) {
        let ttl = self.settings.deploy_ttl;
        let pinned = &self.pinned;
        self.deploys.retain(|id, d| {
            pinned.contains(id)
                || !d.clients_applied
                || d.finished_at().checked_add(ttl).is_none_or(|end| now < end)
        });
    }

    fn status_body(&self, now: Instant, clock: &Clock) -> Value {
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

    fn wait_entry(&self, id: u64, now: Instant) -> Value {
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

/// r10k's environment name of a branch with `invalid_branches: correct`: every character
/// outside `[A-Za-z0-9_]` becomes `_`.
pub fn environment_name(branch: &str) -> String {
    branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn random_sha() -> String {
    format!(
        "{:032x}{:08x}",
        rand::random::<u128>(),
        rand::random::<u32>()
    )
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
fn parse_lifetime(raw: &str) -> Option<Duration> {
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

// ---------------------------------------------------------------------------------------------
// The simulator

/// TLS material generated at start.
struct Tls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

/// A new self-signed CA named `common_name`.
fn new_ca(
    common_name: &str,
) -> Result<(rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert, rcgen::Issuer::new(params, key)))
}

fn generate_tls() -> std::io::Result<Tls> {
    let (ca, issuer) = new_ca("Puppet CA: bosun-sim").map_err(std::io::Error::other)?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(std::io::Error::other)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    // Puppet agent certificates are good for both ends.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(std::io::Error::other)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca.pem(),
        config: Arc::new(config),
    })
}

/// The PEM of a freshly generated CA that signed nothing the simulator serves, for tests that
/// check a wrong CA is refused. Empty if generation failed (which does not happen with ring).
pub fn unrelated_ca_pem() -> String {
    new_ca("Unrelated CA")
        .map(|(cert, _)| cert.pem())
        .unwrap_or_default()
}

/// The Code Manager simulator's state. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CodeManagerSim {
    inner: Arc<Inner>,
    control: SimControl,
}

struct Inner {
    tls: Tls,
    clock: Clock,
    data: Mutex<Data>,
}

impl CodeManagerSim {
    /// A simulator with the default [`CodeManagerSettings`].
    ///
    /// # Errors
    ///
    /// When the TLS material cannot be generated.
    pub fn new(config: &SimConfig) -> std::io::Result<Self> {
        Self::with_settings(config, CodeManagerSettings::default())
    }

    /// A simulator with branches `production` and `staging`, both deployed, and a fresh CA.
    ///
    /// # Errors
    ///
    /// When the TLS material cannot be generated.
    pub fn with_settings(
        config: &SimConfig,
        settings: CodeManagerSettings,
    ) -> std::io::Result<Self> {
        let tls = generate_tls()?;
        let clock = Clock::now();
        let now = clock.instant;
        let mut settings = settings;
        settings.step_duration = settings.step_duration.min(MAX_STEP_DURATION);
        let mut branches = BTreeMap::new();
        let mut branch_events = Vec::new();
        let mut storage = BTreeMap::new();
        for branch in INITIAL_BRANCHES {
            let sha = random_sha();
            branches.insert(branch.to_owned(), sha.clone());
            branch_events.push((now, branch.to_owned(), Some(sha.clone())));
            storage.insert(
                environment_name(branch),
                Stored {
                    date: clock.render_seconds(now),
                    signature: sha,
                },
            );
        }
        let tokens = HashMap::from([(
            config.token.clone(),
            TokenRecord {
                expires_at: None,
                label: None,
                expired: false,
                revoked: false,
            },
        )]);
        let next_id = settings.first_deploy_id;
        Ok(Self {
            inner: Arc::new(Inner {
                tls,
                clock,
                data: Mutex::new(Data {
                    settings,
                    tokens,
                    minted: 0,
                    branches,
                    branch_events,
                    reachability_events: Vec::new(),
                    next_id,
                    deploys: BTreeMap::new(),
                    pinned: BTreeSet::new(),
                    clients: storage.clone(),
                    storage,
                    requests: Vec::new(),
                }),
            }),
            control: SimControl::new(config),
        })
    }

    /// Faults and counters of this simulator.
    pub fn control(&self) -> &SimControl {
        &self.control
    }

    /// The PEM certificate of the CA that signed the server certificate (for 127.0.0.1, ::1
    /// and localhost).
    pub fn ca_pem(&self) -> String {
        self.inner.tls.ca_pem.clone()
    }

    /// The server's TLS configuration, for [`bind_tls`].
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.inner.tls.config)
    }

    /// Creates `branch` or advances it to a new commit; returns the commit's SHA.
    pub fn push_branch(&self, branch: &str) -> String {
        let sha = random_sha();
        let mut data = self.data();
        data.branches.insert(branch.to_owned(), sha.clone());
        data.branch_events
            .push((Instant::now(), branch.to_owned(), Some(sha.clone())));
        sha
    }

    /// Deletes `branch`; returns false if there was no such branch.
    pub fn delete_branch(&self, branch: &str) -> bool {
        let mut data = self.data();
        if data.branches.remove(branch).is_none() {
            return false;
        }
        data.branch_events
            .push((Instant::now(), branch.to_owned(), None));
        true
    }

    /// The head commit of `branch`, if it exists.
    pub fn branch(&self, branch: &str) -> Option<String> {
        self.data().branches.get(branch).cloned()
    }

    /// Makes the control repository unreachable (dry runs and `deploy-all` answer
    /// `collect-failed`, deploys that start meanwhile fail) or reachable again.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.data()
            .reachability_events
            .push((Instant::now(), unreachable));
    }

    /// Makes a token (minted or the configured one) expired; false if unknown.
    pub fn expire_token(&self, token: &str) -> bool {
        self.data()
            .tokens
            .get_mut(token)
            .map(|record| record.expired = true)
            .is_some()
    }

    /// Makes every token minted with a finite lifetime expired (what a lifetime running out
    /// looks like); returns how many. The configured token never expires by itself and stays.
    pub fn expire_minted_tokens(&self) -> usize {
        let mut data = self.data();
        let mut n = 0;
        for record in data.tokens.values_mut() {
            if record.expires_at.is_some() && !record.expired {
                record.expired = true;
                n += 1;
            }
        }
        n
    }

    /// Revokes a token (minted or the configured one); false if unknown.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.data()
            .tokens
            .get_mut(token)
            .map(|record| record.revoked = true)
            .is_some()
    }

    /// Duration of each phase of deploys queued from now on (capped at one day).
    pub fn set_step_duration(&self, step: Duration) {
        self.data().settings.step_duration = step.min(MAX_STEP_DURATION);
    }

    /// How long finished deploys stay visible (applies at once, to all of them).
    pub fn set_deploy_ttl(&self, ttl: Duration) {
        self.data().settings.deploy_ttl = ttl;
    }

    /// The bodies `POST /deploys` received (after authentication), oldest first.
    pub fn deploy_requests(&self) -> Vec<Value> {
        self.data().requests.clone()
    }

    /// The signature (commit) of `environment` in file-sync storage, if it is deployed there.
    pub fn deployed(&self, environment: &str) -> Option<String> {
        let mut data = self.data();
        data.advance(Instant::now(), &self.inner.clock);
        data.storage.get(environment).map(|s| s.signature.clone())
    }

    /// The status of a deploy as `?id=` reports it (`None` if unknown or forgotten).
    pub fn deploy_status(&self, id: u64) -> Option<DeployStatus> {
        let now = Instant::now();
        let mut data = self.data();
        data.advance(now, &self.inner.clock);
        data.collect_garbage(now);
        data.deploys.get(&id).map(|d| d.status(now))
    }

    /// How many tokens `POST /rbac-api/v1/auth/token` has minted.
    pub fn minted_tokens(&self) -> usize {
        self.data().minted
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // Handlers never panic while holding the lock with half-applied changes.
        self.inner
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The RBAC client middleware: header first, then the `token` query parameter.
    fn authenticate(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> ApiResult<()> {
        let token = headers
            .get("x-authentication")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .or_else(|| query.get("token").map(String::as_str))
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        let data = self.data();
        match data.tokens.get(token) {
            None => Err(ApiError::invalid_token()),
            Some(record) if record.revoked => Err(ApiError::token_revoked()),
            Some(record) if record.is_expired(Instant::now()) => Err(ApiError::token_expired()),
            Some(_) => Ok(()),
        }
    }
}

/// Unpins the deploys of a `wait` request when it ends (also when the client goes away).
struct Pins {
    sim: CodeManagerSim,
    ids: Vec<u64>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut data = self.sim.data();
        for id in &self.ids {
            data.pinned.remove(id);
        }
    }
}

/// The simulator's HTTP API with the shared middleware and `/_sim/` endpoints.
pub fn router(sim: CodeManagerSim) -> Router {
    let control = sim.control.clone();
    let api = Router::new()
        .route("/code-manager/v1/deploys", post(deploys))
        .route("/code-manager/v1/deploys/status", get(deploys_status))
        .route("/code-manager/v1/webhook", post(webhook))
        .route("/rbac-api/v1/auth/token", post(mint_token))
        .with_state(sim);
    with_sim(api, control, render_error).layer(middleware::from_fn(rate_limit_key))
}

/// Serves `sim` over HTTPS on `addr` (port 0 picks a free port).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, sim: &CodeManagerSim) -> std::io::Result<SimServer> {
    bind_tls(addr, router(sim.clone()), sim.tls_config()).await
}

/// The shared rate limiter keys on `Authorization: Bearer`; Code Manager's credential is
/// `X-Authentication` or `?token=`, so present that as the key. Handlers never read
/// `Authorization`.
async fn rate_limit_key(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-authentication")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("token="))
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            })
        });
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// Handlers

enum Target {
    All,
    Environments(Vec<String>),
}

struct DeployRequest {
    target: Target,
    wait: bool,
    dry_run: bool,
}

impl DeployRequest {
    fn parse(body: &Value) -> ApiResult<Self> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::malformed("The request body must be a JSON object."))?;
        let flag = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::malformed(format!("'{key}' must be a boolean."))),
        };
        let dry_run = match flag("dry-run")? {
            Some(b) => b,
            None => flag("dry_run")?.unwrap_or(false),
        };
        let wait = flag("wait")?.unwrap_or(false);
        let deploy_all = flag("deploy-all")?.unwrap_or(false);
        flag("deploy-modules")?;
        match obj.get("modules") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => return Err(ApiError::malformed(
                "'modules' must be a list of module names or a comma- or space-separated string.",
            )),
        }
        let environments = match obj.get("environments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ApiError::malformed("'environments' must be a list of strings.")
                    })?,
            ),
            Some(_) => {
                return Err(ApiError::malformed(
                    "'environments' must be a list of strings.",
                ))
            }
        };
        let target = match (deploy_all, environments) {
            (true, _) => Target::All,
            (false, Some(envs)) => Target::Environments(envs),
            // The CLI's `--dry-run` implies `--all`.
            (false, None) if dry_run => Target::All,
            (false, None) => {
                return Err(ApiError::malformed(
                    "Either 'deploy-all' or 'environments' must be supplied.",
                ))
            }
        };
        Ok(Self {
            target,
            wait,
            dry_run,
        })
    }
}

async fn deploys(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::malformed(format!("The request body is not valid JSON: {err}")))?;
    sim.data().requests.push(body.clone());
    let request = DeployRequest::parse(&body)?;
    let clock = &sim.inner.clock;

    let ids = {
        let now = Instant::now();
        let mut data = sim.data();
        data.advance(now, clock);
        data.collect_garbage(now);
        if request.dry_run {
            if data.unreachable_at(now) {
                return Err(ApiError::collect_failed());
            }
            let listed: Vec<Value> = data
                .current_environments()
                .into_iter()
                .map(|environment| json!({ "environment": environment }))
                .collect();
            return Ok(Json(listed).into_response());
        }
        let environments = match request.target {
            Target::All => {
                if data.unreachable_at(now) {
                    return Err(ApiError::collect_failed());
                }
                data.current_environments()
            }
            Target::Environments(envs) => envs,
        };
        let ids: Vec<u64> = environments
            .iter()
            .map(|environment| data.enqueue(environment, now))
            .collect();
        if !request.wait {
            let entries: Vec<Value> = ids
                .iter()
                .filter_map(|id| data.deploys.get(id))
                .map(|d| {
                    json!({
                        "environment": d.environment,
                        "id": d.id,
                        "status": d.status(now),
                    })
                })
                .collect();
            return Ok(Json(entries).into_response());
        }
        data.pinned.extend(ids.iter().copied());
        ids
    };

    let pins = Pins {
        sim: sim.clone(),
        ids: ids.clone(),
    };
    loop {
        let next = {
            let now = Instant::now();
            let mut data = sim.data();
            data.advance(now, clock);
            let next = ids
                .iter()
                .filter_map(|id| data.deploys.get(id))
                .filter_map(|d| d.next_change(now))
                .max();
            match next {
                Some(next) => next,
                None => {
                    let entries: Vec<Value> =
                        ids.iter().map(|id| data.wait_entry(*id, now)).collect();
                    drop(data);
                    drop(pins);
                    return Ok(Json(entries).into_response());
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

async fn deploys_status(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let clock = &sim.inner.clock;
    let now = Instant::now();
    let mut data = sim.data();
    data.advance(now, clock);
    data.collect_garbage(now);
    let Some(raw) = query.get("id") else {
        return Ok(Json(data.status_body(now, clock)).into_response());
    };
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::malformed(format!("'id' must be an integer, got '{raw}'.")))?;
    // What real PE answers for an unknown or garbage-collected id is undocumented; the
    // simulator says 404 with a Code Manager error body.
    let deploy = data.deploys.get(&id).ok_or_else(|| {
        ApiError::code_manager(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("No deploy with id {id} is known (it may have been garbage-collected)."),
        )
    })?;
    Ok(Json(json!({
        "environment": deploy.environment,
        "id": deploy.id,
        "status": deploy.status(now),
        "queued-at": clock.render(deploy.queued_at),
    }))
    .into_response())
}

/// The branches a push event of webhook `kind` names (`refs/heads/` stripped; tags skipped), or
/// `None` when the payload has none of the fields that kind uses.
fn pushed_branches(kind: &str, payload: &Value) -> Option<Vec<String>> {
    fn branch(reference: &str) -> Option<String> {
        if reference.starts_with("refs/") {
            reference.strip_prefix("refs/heads/").map(str::to_owned)
        } else {
            Some(reference.to_owned())
        }
    }
    let refs: Vec<&str> = match kind {
        "github" | "gitlab" => vec![payload.get("ref")?.as_str()?],
        "bitbucket-server" | "stash" => payload
            .get("changes")
            .or_else(|| payload.get("refChanges"))?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("refId").and_then(Value::as_str))
            .collect(),
        "bitbucket" => payload
            .pointer("/push/changes")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("new"))
            .filter(|n| n.get("type").and_then(Value::as_str) != Some("tag"))
            .filter_map(|n| n.get("name").and_then(Value::as_str))
            .collect(),
        "tfs-git" => payload
            .pointer("/resource/refUpdates")?
            .as_array()?
            .iter()
            .filter_map(|u| u.get("name").and_then(Value::as_str))
            .collect(),
        _ => return None,
    };
    Some(refs.into_iter().filter_map(branch).collect())
}

async fn webhook(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let kind = query.get("type").map_or("", String::as_str);
    if !WEBHOOK_TYPES.contains(&kind) {
        // The real body (docs and fixture `errors/pejava-puppet_general_fail.json`).
        return Err(ApiError::code_manager(
            StatusCode::BAD_REQUEST,
            "unrecognized-webhook-type",
            format!("Unrecognized webhook type: '{kind}'"),
        )
        .with_details(Value::String(
            "Currently supported valid webhook types include: github gitlab stash tfs-git bitbucket"
                .to_owned(),
        )));
    }
    let payload: Value = serde_json::from_slice(&body).map_err(|err| {
        ApiError::malformed(format!("The webhook payload is not valid JSON: {err}"))
    })?;
    let branches = pushed_branches(kind, &payload)
        .ok_or_else(|| ApiError::malformed(format!("The payload is not a {kind} push event.")))?;
    let prefix = query.get("prefix").filter(|p| !p.is_empty());
    let now = Instant::now();
    let mut data = sim.data();
    data.advance(now, &sim.inner.clock);
    data.collect_garbage(now);
    for branch in branches {
        let environment = match prefix {
            Some(prefix) => environment_name(&format!("{prefix}_{branch}")),
            None => environment_name(&branch),
        };
        tracing::debug!(kind, %environment, "sim: webhook queues a deploy");
        data.enqueue(&environment, now);
    }
    Ok(Json(json!({ "status": "OK" })).into_response())
}

async fn mint_token(State(sim): State<CodeManagerSim>, body: Bytes) -> ApiResult<Response> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    const TOKEN: &str = "test-token";

    fn fixtures_dir() -> String {
        format!(
            "{}/../shared/specs/puppet-code-manager",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn fixture(rel: &str) -> Value {
        let path = format!("{}/{rel}", fixtures_dir());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn fixtures_in(dir: &str) -> Vec<Value> {
        let path = format!("{}/{dir}", fixtures_dir());
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        assert!(!names.is_empty(), "no fixtures in {path}");
        names
            .iter()
            .map(|n| fixture(&format!("{dir}/{n}")))
            .collect()
    }

    fn client(ca_pem: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("PEM"))
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
    }

    struct Harness {
        server: SimServer,
        sim: CodeManagerSim,
        http: reqwest::Client,
        base: String,
    }

    impl Harness {
        async fn start(settings: CodeManagerSettings, config: SimConfig) -> Self {
            let sim = CodeManagerSim::with_settings(&config, settings).expect("sim");
            let server = serve("127.0.0.1:0".parse().expect("addr"), &sim)
                .await
                .expect("bind");
            let base = server.base_url();
            Self {
                http: client(&sim.ca_pem()),
                server,
                sim,
                base,
            }
        }

        async fn with_step(step: Duration) -> Self {
            Self::start(
                CodeManagerSettings {
                    step_duration: step,
                    ..CodeManagerSettings::default()
                },
                SimConfig {
                    token: TOKEN.to_owned(),
                    ..SimConfig::default()
                },
            )
            .await
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// A request to `/code-manager/v1{path}` with `X-Authentication: token` (if any).
        async fn send(
            &self,
            method: Method,
            path: &str,
            token: Option<&str>,
            body: Option<&Value>,
        ) -> (u16, Value) {
            let mut req = self
                .http
                .request(method, self.url(&format!("/code-manager/v1{path}")));
            if let Some(token) = token {
                req = req.header("X-Authentication", token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
            (status, value)
        }

        async fn deploy(&self, body: Value) -> (u16, Value) {
            self.send(Method::POST, "/deploys", Some(TOKEN), Some(&body))
                .await
        }

        async fn status(&self) -> Value {
            let (status, body) = self
                .send(Method::GET, "/deploys/status", Some(TOKEN), None)
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }

        async fn status_of(&self, id: u64) -> (u16, Value) {
            self.send(
                Method::GET,
                &format!("/deploys/status?id={id}"),
                Some(TOKEN),
                None,
            )
            .await
        }

        async fn mint(&self, body: Value) -> (u16, Value) {
            let resp = self
                .http
                .post(self.url("/rbac-api/v1/auth/token"))
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json().await.expect("json"))
        }

        /// Polls `?id=` until the deploy is final; returns every status seen, in order.
        async fn poll_until_final(&self, id: u64) -> Vec<String> {
            let mut seen: Vec<String> = Vec::new();
            for _ in 0..500 {
                let (code, body) = self.status_of(id).await;
                assert_eq!(code, 200, "{body}");
                let status = body["status"].as_str().expect("status").to_owned();
                if seen.last() != Some(&status) {
                    seen.push(status.clone());
                }
                if status == "synced" || status == "failed" {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("deploy {id} never finished; saw {seen:?}");
        }
    }

    fn keys(v: &Value) -> BTreeSet<&str> {
        v.as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn is_sha(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    // -----------------------------------------------------------------------------------------
    // Shape comparison against the real fixtures

    fn json_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    struct ShapeRules<'a> {
        /// `(path, key)`: keys the simulator may add at that path (fixtures older than the
        /// API version the simulator follows lack them).
        extra_keys: &'a [(&'a str, &'a str)],
        /// Paths of objects keyed by names (e.g. certnames) rather than fields.
        name_maps: &'a [&'a str],
        /// `(path, key, other)`: compare `key` of the object at `path` with the fixtures'
        /// `other` (for lists the real bodies never caught non-empty but documented alike).
        same_as: &'a [(&'a str, &'a str, &'a str)],
    }

    /// Checks that `sim` has the key sets and JSON types of at least one of `examples` at every
    /// level; array elements are matched against every example element (so variants such as
    /// `complete` and `failed` entries each need a matching fixture element).
    fn check_shape(
        sim: &Value,
        examples: &[&Value],
        path: &str,
        rules: &ShapeRules<'_>,
        errors: &mut Vec<String>,
    ) {
        let same_type: Vec<&Value> = examples
            .iter()
            .copied()
            .filter(|e| json_type(e) == json_type(sim))
            .collect();
        if same_type.is_empty() {
            let types: BTreeSet<&str> = examples.iter().map(|e| json_type(e)).collect();
            errors.push(format!(
                "{path}: the simulator has {} where the fixtures have {types:?}",
                json_type(sim)
            ));
            return;
        }
        match sim {
            Value::Object(map) if rules.name_maps.contains(&path) => {
                let values: Vec<&Value> = same_type
                    .iter()
                    .filter_map(|e| e.as_object())
                    .flat_map(|m| m.values())
                    .collect();
                if values.is_empty() && !map.is_empty() {
                    errors.push(format!("{path}: no fixture example to compare with"));
                    return;
                }
                let child = format!("{path}.*");
                for value in map.values() {
                    check_shape(value, &values, &child, rules, errors);
                }
            }
            Value::Object(map) => {
                let extra = |k: &str| rules.extra_keys.contains(&(path, k));
                let own: BTreeSet<&str> = map
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !extra(k))
                    .collect();
                let matching: Vec<&Value> = same_type
                    .iter()
                    .copied()
                    .filter(|e| {
                        let theirs: BTreeSet<&str> =
                            keys(e).into_iter().filter(|k| !extra(k)).collect();
                        theirs == own
                    })
                    .collect();
                if matching.is_empty() {
                    let theirs: BTreeSet<BTreeSet<&str>> =
                        same_type.iter().map(|e| keys(e)).collect();
                    errors.push(format!(
                        "{path}: keys {own:?} match no fixture; the fixtures have {theirs:?}"
                    ));
                    return;
                }
                for (key, value) in map {
                    let source = rules
                        .same_as
                        .iter()
                        .find(|(p, k, _)| *p == path && k == key)
                        .map_or(key.as_str(), |(_, _, other)| *other);
                    let sub: Vec<&Value> = matching.iter().filter_map(|e| e.get(source)).collect();
                    if sub.is_empty() && extra(key) {
                        continue;
                    }
                    check_shape(value, &sub, &format!("{path}.{key}"), rules, errors);
                }
            }
            Value::Array(items) => {
                let elements: Vec<&Value> = same_type
                    .iter()
                    .filter_map(|e| e.as_array())
                    .flatten()
                    .collect();
                if elements.is_empty() && !items.is_empty() {
                    errors.push(format!("{path}: no fixture example to compare with"));
                    return;
                }
                let child = format!("{path}[]");
                for item in items {
                    check_shape(item, &elements, &child, rules, errors);
                }
            }
            _ => {}
        }
    }

    const STATUS_RULES: ShapeRules<'static> = ShapeRules {
        // Ids in status entries came with PE 2019.8.3; the fixtures are from 2018.
        extra_keys: &[
            ("$.deploys-status.new[]", "id"),
            ("$.deploys-status.queued[]", "id"),
            ("$.deploys-status.deploying[]", "id"),
            ("$.deploys-status.failed[]", "id"),
        ],
        name_maps: &["$.file-sync-client-status.file-sync-clients"],
        // No real body caught a `new` entry; the docs give all four lists one entry shape.
        same_as: &[("$.deploys-status", "new", "queued")],
    };

    const STRICT: ShapeRules<'static> = ShapeRules {
        extra_keys: &[],
        name_maps: &[],
        same_as: &[],
    };

    fn shape_errors(sim: &Value, examples: &[Value], rules: &ShapeRules<'_>) -> Vec<String> {
        let refs: Vec<&Value> = examples.iter().collect();
        let mut errors = Vec::new();
        check_shape(sim, &refs, "$", rules, &mut errors);
        errors
    }

    #[test]
    fn shape_check_detects_differences() {
        let statuses = fixtures_in("deploys-status");
        // Every real body matches the set (so the check is not too strict).
        for body in &statuses {
            assert_eq!(
                shape_errors(body, &statuses, &STATUS_RULES),
                Vec::<String>::new()
            );
        }
        let base = fixture("deploys-status/cmdash-large-02-deploy-status-multiple.json");

        let mut missing = base.clone();
        missing["file-sync-client-status"]
            .as_object_mut()
            .expect("object")
            .remove("all-synced");
        assert!(!shape_errors(&missing, &statuses, &STATUS_RULES).is_empty());

        let mut retyped = base.clone();
        retyped["file-sync-storage-status"]["deployed"][0]["date"] = json!(1_542_333_187);
        let errors = shape_errors(&retyped, &statuses, &STATUS_RULES);
        assert!(
            errors.iter().any(|e| e.contains("deployed[].date")),
            "{errors:?}"
        );

        let mut renamed = base.clone();
        renamed["deploys-status"]["failed"][0]["error"]["details"] =
            json!({ "corrected-name": "x" });
        assert!(!shape_errors(&renamed, &statuses, &STATUS_RULES).is_empty());

        let mut extra = base.clone();
        extra["deploys-status"]["queued"][0]["priority"] = json!(1);
        assert!(!shape_errors(&extra, &statuses, &STATUS_RULES).is_empty());
        // `id` is allowed only where the rules say so.
        let mut with_id = base.clone();
        with_id["deploys-status"]["queued"][0]["id"] = json!(7);
        assert!(shape_errors(&with_id, &statuses, &STATUS_RULES).is_empty());
        with_id["file-sync-storage-status"]["deployed"][0]["id"] = json!(7);
        assert!(!shape_errors(&with_id, &statuses, &STATUS_RULES).is_empty());

        let mut null_time = base.clone();
        null_time["file-sync-client-status"]["file-sync-clients"]
            ["pe-compiler3-prod.ops.puppetlabs.net"]["last_check_in_time"] = Value::Null;
        assert!(!shape_errors(&null_time, &statuses, &STATUS_RULES).is_empty());

        // A `wait` entry without `file-sync` matches neither `complete` nor `failed`.
        let deploys = fixtures_in("deploys");
        let bad = json!([{"environment": "x", "id": 1, "status": "complete",
                          "deploy-signature": "abc"}]);
        assert!(!shape_errors(&bad, &deploys, &STRICT).is_empty());
        assert!(shape_errors(&deploys[0], &deploys, &STRICT).is_empty());
    }

    #[tokio::test]
    async fn responses_match_the_real_fixtures() {
        let h = Harness::with_step(Duration::from_millis(600)).await;
        let statuses = fixtures_in("deploys-status");

        // Three deploys of one environment run one after the other; the fourth fails.
        let (code, accepted) = h
            .deploy(
                json!({"environments": ["production", "production", "production", "nosuchenv"]}),
            )
            .await;
        assert_eq!(code, 200, "{accepted}");
        let mut body = Value::Null;
        for _ in 0..300 {
            body = h.status().await;
            let ds = &body["deploys-status"];
            let non_empty = |k: &str| ds[k].as_array().is_some_and(|a| !a.is_empty());
            if non_empty("failed") && non_empty("deploying") && non_empty("queued") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The same environment is queued and deploying at once, as in the real data.
        assert_eq!(
            body["deploys-status"]["deploying"][0]["environment"],
            "production"
        );
        assert_eq!(
            body["deploys-status"]["queued"][0]["environment"],
            "production"
        );
        let (code, _) = h.deploy(json!({"environments": ["staging"]})).await;
        assert_eq!(code, 200);
        let busy = h.status().await;
        for list in ["new", "queued", "deploying", "failed"] {
            assert!(
                busy["deploys-status"][list]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()),
                "{list} is empty: {busy}"
            );
        }
        assert_eq!(busy["file-sync-client-status"]["all-synced"], false);
        assert_eq!(
            shape_errors(&busy, &statuses, &STATUS_RULES),
            Vec::<String>::new()
        );

        // Once everything is done: empty lists, all synced.
        h.sim.set_step_duration(Duration::from_millis(20));
        let mut done = Value::Null;
        for _ in 0..300 {
            done = h.status().await;
            let ds = &done["deploys-status"];
            let idle = ["new", "queued", "deploying"]
                .iter()
                .all(|k| ds[*k].as_array().is_some_and(Vec::is_empty));
            if idle && done["file-sync-client-status"]["all-synced"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            done["file-sync-client-status"]["all-synced"], true,
            "{done}"
        );
        assert_eq!(
            shape_errors(&done, &statuses, &STATUS_RULES),
            Vec::<String>::new()
        );

        // `wait` results: complete and failed entries.
        let (code, waited) = h
            .deploy(json!({"environments": ["staging", "nosuchenv"], "wait": true}))
            .await;
        assert_eq!(code, 200);
        let statuses_seen: Vec<&str> = waited
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|e| e["status"].as_str())
            .collect();
        assert_eq!(statuses_seen, ["complete", "failed"]);
        assert_eq!(
            shape_errors(&waited, &fixtures_in("deploys"), &STRICT),
            Vec::<String>::new()
        );

        // Error bodies equal the real ones.
        let minted = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD}))
            .await
            .1["token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert!(h.sim.expire_token(&minted));
        let (code, expired) = h
            .send(Method::GET, "/deploys/status", Some(&minted), None)
            .await;
        assert_eq!(code, 401);
        assert_eq!(
            expired,
            fixture("errors/jenkins-pe2016.4-deploys-expired_token.json")
        );
        let (code, bad_type) = h
            .send(
                Method::POST,
                &format!("/webhook?type=githubby&token={TOKEN}"),
                None,
                Some(&json!({"ref": "refs/heads/production"})),
            )
            .await;
        assert_eq!(code, 400);
        assert_eq!(bad_type, fixture("errors/pejava-puppet_general_fail.json"));
    }

    #[tokio::test]
    async fn tls_is_trusted_only_through_the_sim_ca() {
        let h = Harness::with_step(DEFAULT_STEP_DURATION).await;
        assert!(h.base.starts_with("https://127.0.0.1:"), "{}", h.base);
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some(TOKEN), None)
            .await;
        assert_eq!(code, 200);

        // The certificate also names localhost (and ::1).
        let by_name = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(h.sim.ca_pem().as_bytes()).expect("PEM"),
            )
            .tls_built_in_root_certs(false)
            .resolve("localhost", h.server.local_addr)
            .build()
            .expect("client");
        let resp = by_name
            .get(format!(
                "https://localhost:{}/code-manager/v1/deploys/status",
                h.server.local_addr.port()
            ))
            .header("X-Authentication", TOKEN)
            .send()
            .await
            .expect("trusted by name");
        assert_eq!(resp.status(), 200);

        let before = h.sim.control().stats().requests_total;
        let other = unrelated_ca_pem();
        assert!(other.starts_with("-----BEGIN CERTIFICATE-----"), "{other}");
        assert_ne!(other, h.sim.ca_pem());
        let err = client(&other)
            .get(h.url("/code-manager/v1/deploys/status"))
            .header("X-Authentication", TOKEN)
            .send()
            .await
            .expect_err("a server signed by another CA must be refused");
        assert!(err.is_connect(), "{err:?}");
        // Without trusting any extra CA the handshake fails too.
        let plain = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .build()
            .expect("client");
        assert!(plain
            .get(h.url("/code-manager/v1/deploys/status"))
            .send()
            .await
            .is_err());
        // Plain HTTP is not served.
        let http_url = h
            .url("/code-manager/v1/deploys/status")
            .replacen("https", "http", 1);
        let plain_http = reqwest::Client::new()
            .get(http_url)
            .header("X-Authentication", TOKEN)
            .send()
            .await;
        assert!(plain_http.is_err() || plain_http.is_ok_and(|r| r.status() != 200));
        assert_eq!(
            h.sim.control().stats().requests_total,
            before,
            "no refused connection reached the API"
        );
    }

    #[tokio::test]
    async fn tls_server_stops_on_drop() {
        let h = Harness::with_step(DEFAULT_STEP_DURATION).await;
        let addr = h.server.local_addr;
        let Harness { server, .. } = h;
        drop(server);
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "server still accepting after drop");
    }

    #[tokio::test]
    async fn deploy_without_wait_is_polled_by_id_to_synced() {
        let h = Harness::with_step(Duration::from_millis(150)).await;
        let sha = h.sim.push_branch("production");
        assert_ne!(h.sim.deployed("production"), Some(sha.clone()));
        let (code, body) = h
            .deploy(
                json!({"environments": ["production"], "deploy-modules": false,
                           "modules": ["apache", "nginx"]}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body,
            json!([{"environment": "production", "id": DEFAULT_FIRST_DEPLOY_ID, "status": "new"}])
        );
        let (code, one) = h.status_of(DEFAULT_FIRST_DEPLOY_ID).await;
        assert_eq!(code, 200);
        assert_eq!(
            keys(&one),
            BTreeSet::from(["environment", "id", "status", "queued-at"])
        );
        let queued_at = one["queued-at"].as_str().expect("queued-at");
        assert!(
            queued_at.ends_with('Z') && queued_at.len() == "2018-11-16T01:53:30.081Z".len(),
            "{queued_at}"
        );
        assert!(queued_at.parse::<jiff::Timestamp>().is_ok(), "{queued_at}");

        let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID).await;
        let order = ["new", "queued", "deploying", "syncing", "synced"];
        let positions: Vec<usize> = seen
            .iter()
            .map(|s| order.iter().position(|o| o == s).expect("known status"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("synced"));
        assert!(
            seen.len() >= 3,
            "polling every 10 ms sees most phases: {seen:?}"
        );
        assert_eq!(h.sim.deployed("production"), Some(sha.clone()));

        let status = h.status().await;
        let stored: Vec<&Value> = status["file-sync-storage-status"]["deployed"]
            .as_array()
            .expect("deployed")
            .iter()
            .filter(|e| e["environment"] == "production")
            .collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["deploy-signature"], sha.as_str());
        assert!(stored[0]["date"]
            .as_str()
            .is_some_and(|d| d.ends_with(".000Z")));
        assert_eq!(h.sim.deploy_requests().len(), 1);
        assert_eq!(
            h.sim.deploy_requests()[0]["modules"],
            json!(["apache", "nginx"])
        );
    }

    #[tokio::test]
    async fn wait_returns_complete_entries_with_the_branch_signature() {
        let step = Duration::from_millis(40);
        let h = Harness::with_step(step).await;
        let staging = h.sim.push_branch("staging");
        let production = h.sim.branch("production").expect("production");
        let started = std::time::Instant::now();
        let (code, body) = h
            .deploy(json!({"environments": ["staging", "production"], "wait": true}))
            .await;
        assert!(started.elapsed() >= 4 * step, "wait returns once synced");
        assert_eq!(code, 200, "{body}");
        let entries = body.as_array().expect("array");
        assert_eq!(entries.len(), 2);
        for (entry, (env, sha, id)) in entries.iter().zip([
            ("staging", &staging, DEFAULT_FIRST_DEPLOY_ID),
            ("production", &production, DEFAULT_FIRST_DEPLOY_ID + 1),
        ]) {
            assert_eq!(entry["environment"], env);
            assert_eq!(entry["id"], id);
            assert_eq!(entry["status"], "complete");
            assert_eq!(entry["deploy-signature"], sha.as_str());
            assert!(is_sha(&entry["file-sync"]["environment-commit"]), "{entry}");
            assert!(is_sha(&entry["file-sync"]["code-commit"]), "{entry}");
        }
        assert_eq!(h.sim.deployed("staging"), Some(staging));
        // Synced means every client has it.
        let status = h.status().await;
        assert_eq!(status["file-sync-client-status"]["all-synced"], true);
        assert_eq!(
            h.sim.deploy_status(DEFAULT_FIRST_DEPLOY_ID),
            Some(DeployStatus::Synced)
        );
    }

    #[tokio::test]
    async fn deploy_of_a_missing_branch_fails_with_the_real_error_shape() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        let (code, body) = h
            .deploy(json!({"environments": ["nosuchenv"], "wait": true}))
            .await;
        assert_eq!(code, 200);
        // The real answer of PE 2016.4 for the same request, apart from the id.
        let mut expected = fixture("deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json");
        expected[0]["id"] = json!(DEFAULT_FIRST_DEPLOY_ID);
        assert_eq!(body, expected);

        // A deleted branch fails the same way and leaves storage.
        assert!(h.sim.deployed("staging").is_some());
        assert!(h.sim.delete_branch("staging"));
        assert!(!h.sim.delete_branch("staging"));
        let (_, body) = h.deploy(json!({"environments": ["staging"]})).await;
        let id = body[0]["id"].as_u64().expect("id");
        assert_eq!(id, DEFAULT_FIRST_DEPLOY_ID + 1);
        let seen = h.poll_until_final(id).await;
        assert_eq!(seen.last().map(String::as_str), Some("failed"));
        assert!(!seen.iter().any(|s| s == "syncing"), "{seen:?}");
        assert_eq!(h.sim.deployed("staging"), None);

        let status = h.status().await;
        let failed = status["deploys-status"]["failed"]
            .as_array()
            .expect("failed");
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[1]["environment"], "staging");
        assert_eq!(failed[1]["id"], id);
        assert_eq!(
            failed[1]["error"]["kind"],
            "puppetlabs.code-manager/deploy-failure"
        );
        assert_eq!(
            failed[1]["error"]["details"],
            json!({"corrected-env-name": "staging"})
        );
        assert_eq!(
            failed[1]["error"]["msg"],
            "Errors while deploying environment 'staging' (exit code: 1):\nERROR\t -> \
             Environment(s) 'staging' cannot be found in any source and will not be deployed.\n"
        );
        // `?id=` of a failed deploy carries no error (undocumented; see module docs).
        let (_, one) = h.status_of(id).await;
        assert_eq!(one["status"], "failed");
        assert!(one.get("error").is_none());
    }

    #[tokio::test]
    async fn dry_run_lists_branches_and_reports_collect_failure() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        h.sim.push_branch("feature/JIRA-12.x");
        let expected = json!([
            {"environment": "feature_JIRA_12_x"},
            {"environment": "production"},
            {"environment": "staging"},
        ]);
        let (code, body) = h.deploy(json!({"dry-run": true, "deploy-all": true})).await;
        assert_eq!(code, 200);
        assert_eq!(body, expected);
        let (code, body) = h.deploy(json!({"dry_run": true, "deploy-all": true})).await;
        assert_eq!(code, 200, "legacy spelling");
        assert_eq!(body, expected);
        let (_, body) = h.deploy(json!({"dry-run": true})).await;
        assert_eq!(body, expected, "--dry-run implies --all");
        assert_eq!(
            h.sim.deploy_status(DEFAULT_FIRST_DEPLOY_ID),
            None,
            "nothing queued"
        );

        h.sim.set_unreachable(true);
        let (code, body) = h.deploy(json!({"dry-run": true, "deploy-all": true})).await;
        assert_eq!(code, 500);
        assert_eq!(body["kind"], "puppetlabs.code-manager/collect-failed");
        assert_eq!(
            body["msg"],
            "Errors while collecting a list of environments to deploy (exit code: 1)"
        );
        assert!(body["details"]
            .as_str()
            .is_some_and(|d| d.starts_with("ERROR\t -> Unable to determine current branches")));
        let (code, body) = h.deploy(json!({"deploy-all": true})).await;
        assert_eq!(code, 500);
        assert_eq!(body["kind"], "puppetlabs.code-manager/collect-failed");
        // A named deploy is queued, then fails when it cannot fetch.
        let (code, body) = h
            .deploy(json!({"environments": ["production"], "wait": true}))
            .await;
        assert_eq!(code, 200);
        assert_eq!(body[0]["status"], "failed");
        assert_eq!(
            body[0]["error"]["kind"],
            "puppetlabs.code-manager/deploy-failure"
        );
        assert!(h.sim.deployed("production").is_some(), "unchanged");

        h.sim.set_unreachable(false);
        let (code, body) = h.deploy(json!({"deploy-all": true, "wait": true})).await;
        assert_eq!(code, 200);
        let envs: Vec<&str> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["environment"].as_str().expect("env"))
            .collect();
        assert_eq!(envs, ["feature_JIRA_12_x", "production", "staging"]);
        assert!(body
            .as_array()
            .expect("array")
            .iter()
            .all(|e| e["status"] == "complete"));
        assert_eq!(
            h.sim.deployed("feature_JIRA_12_x"),
            h.sim.branch("feature/JIRA-12.x")
        );
    }

    #[tokio::test]
    async fn malformed_deploy_requests_are_rejected() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        for body in [
            json!({}),
            json!([]),
            json!({"environments": "production"}),
            json!({"environments": [1]}),
            json!({"environments": ["production"], "wait": "yes"}),
            json!({"environments": ["production"], "modules": 3}),
        ] {
            let (code, answer) = h.deploy(body.clone()).await;
            assert_eq!(code, 400, "{body} → {answer}");
            assert_eq!(answer["kind"], "puppetlabs.code-manager/malformed-request");
        }
        let (code, body) = h.deploy(json!({"environments": []})).await;
        assert_eq!((code, body), (200, json!([])));
        let (code, _) = h.status_of(7).await;
        assert_eq!(code, 404);
        let (code, body) = h
            .send(Method::GET, "/deploys/status?id=x", Some(TOKEN), None)
            .await;
        assert_eq!(code, 400, "{body}");
    }

    #[tokio::test]
    async fn webhook_queues_a_deploy_of_the_pushed_branch() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        let sha = h.sim.push_branch("feature/login");
        let push = json!({
            "ref": "refs/heads/feature/login",
            "after": sha,
            "repository": {"full_name": "acme/control-repo"},
        });
        let (code, body) = h
            .send(
                Method::POST,
                &format!("/webhook?type=github&token={TOKEN}"),
                None,
                Some(&push),
            )
            .await;
        assert_eq!((code, body), (200, json!({"status": "OK"})));
        assert!(
            h.sim.deploy_requests().is_empty(),
            "only /deploys bodies are recorded"
        );
        let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID).await;
        assert_eq!(seen.last().map(String::as_str), Some("synced"));
        assert_eq!(h.sim.deployed("feature_login"), Some(sha));

        // With a prefix the environment is `<prefix>_<branch>`, which this source lacks.
        let (code, _) = h
            .send(
                Method::POST,
                &format!("/webhook?type=gitlab&prefix=acme&token={TOKEN}"),
                None,
                Some(&push),
            )
            .await;
        assert_eq!(code, 200);
        let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID + 1).await;
        assert_eq!(seen.last().map(String::as_str), Some("failed"));
        let status = h.status().await;
        assert_eq!(
            status["deploys-status"]["failed"][0]["environment"],
            "acme_feature_login"
        );

        // Other hosts' payloads.
        let (code, _) = h
            .send(
                Method::POST,
                "/webhook?type=bitbucket-server",
                Some(TOKEN),
                Some(&json!({"changes": [{"refId": "refs/heads/staging", "type": "UPDATE"}]})),
            )
            .await;
        assert_eq!(code, 200);
        let (_, one) = h.status_of(DEFAULT_FIRST_DEPLOY_ID + 2).await;
        assert_eq!(one["environment"], "staging");

        // Errors: missing type, not a push, no token.
        let (code, body) = h
            .send(
                Method::POST,
                &format!("/webhook?token={TOKEN}"),
                None,
                Some(&push),
            )
            .await;
        assert_eq!(code, 400);
        assert_eq!(body["msg"], "Unrecognized webhook type: ''");
        let (code, body) = h
            .send(
                Method::POST,
                &format!("/webhook?type=github&token={TOKEN}"),
                None,
                Some(&json!({"zen": "ping"})),
            )
            .await;
        assert_eq!(code, 400);
        assert_eq!(body["kind"], "puppetlabs.code-manager/malformed-request");
        let (code, body) = h
            .send(Method::POST, "/webhook?type=github", None, Some(&push))
            .await;
        assert_eq!(code, 401);
        assert_eq!(body["kind"], "puppetlabs.rbac/user-unauthenticated");
    }

    #[tokio::test]
    async fn auth_errors_have_the_rbac_kinds() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        let cases: [(Option<&str>, Value); 2] = [
            (
                None,
                json!({"kind": "puppetlabs.rbac/user-unauthenticated",
                       "msg": "Route requires authentication"}),
            ),
            (
                Some(""),
                json!({"kind": "puppetlabs.rbac/user-unauthenticated",
                       "msg": "Route requires authentication"}),
            ),
        ];
        for (token, expected) in cases {
            for (method, path) in [
                (Method::GET, "/deploys/status"),
                (Method::POST, "/deploys"),
                (Method::POST, "/webhook?type=github"),
            ] {
                let (code, body) = h
                    .send(
                        method.clone(),
                        path,
                        token,
                        Some(&json!({"environments": []})),
                    )
                    .await;
                assert_eq!((code, &body), (401, &expected), "{method} {path}");
            }
        }
        let (code, body) = h
            .send(Method::GET, "/deploys/status", Some("not-a-token"), None)
            .await;
        assert_eq!(code, 401);
        assert_eq!(body["kind"], "puppetlabs.rbac/invalid-token");
        assert!(
            !body.to_string().contains("not-a-token"),
            "never echo tokens"
        );

        let mint = || h.mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD}));
        let expired = mint().await.1["token"].as_str().expect("token").to_owned();
        let revoked = mint().await.1["token"].as_str().expect("token").to_owned();
        assert!(h.sim.expire_token(&expired));
        assert!(h.sim.revoke_token(&revoked));
        assert!(!h.sim.revoke_token("nope"));
        let (code, body) = h
            .send(Method::GET, "/deploys/status", Some(&expired), None)
            .await;
        assert_eq!(
            (code, body),
            (
                401,
                json!({"kind": "puppetlabs.rbac/token-expired",
                       "msg": "The provided token has expired."})
            )
        );
        let (code, body) = h
            .send(Method::GET, "/deploys/status", Some(&revoked), None)
            .await;
        assert_eq!(
            (code, body),
            (
                401,
                json!({"kind": "puppetlabs.rbac/token-revoked",
                       "msg": "Authentication token has been revoked."})
            )
        );

        // The query parameter works when the header is absent or empty.
        let (code, _) = h
            .send(
                Method::GET,
                &format!("/deploys/status?token={TOKEN}"),
                None,
                None,
            )
            .await;
        assert_eq!(code, 200);
        let (code, _) = h
            .send(
                Method::GET,
                &format!("/deploys/status?token={TOKEN}"),
                Some(""),
                None,
            )
            .await;
        assert_eq!(code, 200);
        // The header wins over the query parameter.
        let (code, body) = h
            .send(
                Method::GET,
                &format!("/deploys/status?token={TOKEN}"),
                Some(&revoked),
                None,
            )
            .await;
        assert_eq!(code, 401);
        assert_eq!(body["kind"], "puppetlabs.rbac/token-revoked");
        let resp = h
            .http
            .get(h.url("/code-manager/v1/deploys/status"))
            .send()
            .await
            .expect("send");
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json; charset=utf-8")
        );
    }

    #[tokio::test]
    async fn tokens_are_minted_and_expire() {
        let h = Harness::with_step(Duration::from_millis(20)).await;
        assert_eq!(h.sim.minted_tokens(), 0);
        let (code, body) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                         "lifetime": "1s", "label": "bosun-1"}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(keys(&body), BTreeSet::from(["token"]));
        let short = body["token"].as_str().expect("token").to_owned();
        assert_eq!(short.len(), 44);
        assert!(short
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(h.sim.minted_tokens(), 1);
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some(&short), None)
            .await;
        assert_eq!(code, 200);

        // Labels are unique among live tokens.
        let (code, body) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                         "lifetime": "1h", "label": "bosun-1"}))
            .await;
        assert_eq!(code, 400, "{body}");

        let (code, body) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": "wrong"}))
            .await;
        assert_eq!(code, 401);
        assert_eq!(body["kind"], "puppetlabs.rbac/user-unauthenticated");
        let (code, _) = h
            .mint(json!({"login": "someone", "password": DEFAULT_PASSWORD}))
            .await;
        assert_eq!(code, 401);
        for bad in ["5 h", "h", "-1", "1w", ""] {
            let (code, body) = h
                .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                             "lifetime": bad}))
                .await;
            assert_eq!(code, 400, "{bad:?}");
            assert_eq!(body["kind"], "puppetlabs.rbac/malformed-request");
        }
        let (code, _) = h.mint(json!({"login": DEFAULT_LOGIN})).await;
        assert_eq!(code, 400);
        assert_eq!(h.sim.minted_tokens(), 1);

        let (_, body) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "lifetime": "0"}))
            .await;
        let forever = body["token"].as_str().expect("token").to_owned();
        assert_eq!(h.sim.minted_tokens(), 2);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (code, body) = h
            .send(Method::GET, "/deploys/status", Some(&short), None)
            .await;
        assert_eq!(code, 401);
        assert_eq!(body["kind"], "puppetlabs.rbac/token-expired");
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some(&forever), None)
            .await;
        assert_eq!(code, 200);
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some(TOKEN), None)
            .await;
        assert_eq!(code, 200, "the configured token never expires by itself");
        // The label of an expired token is free again.
        let (code, _) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "label": "bosun-1"}))
            .await;
        assert_eq!(code, 200);
    }

    #[test]
    fn lifetimes_parse_like_rbac() {
        assert_eq!(parse_lifetime("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_lifetime("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_lifetime("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_lifetime("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_lifetime("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_lifetime("1y"), Some(Duration::from_secs(31_536_000)));
        assert_eq!(parse_lifetime("0"), Some(MAX_TOKEN_LIFETIME));
        for bad in ["", "h", "1 h", "1w", "-1", "1.5h", "1hh"] {
            assert_eq!(parse_lifetime(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn environment_names_are_corrected_like_r10k() {
        assert_eq!(environment_name("feature/JIRA-12.x"), "feature_JIRA_12_x");
        assert_eq!(environment_name("production"), "production");
        assert_eq!(environment_name("a_b9"), "a_b9");
    }

    #[tokio::test]
    async fn ids_grow_and_expire_after_the_ttl() {
        let h = Harness::start(
            CodeManagerSettings {
                first_deploy_id: 500,
                step_duration: Duration::from_millis(10),
                deploy_ttl: Duration::from_millis(300),
                ..CodeManagerSettings::default()
            },
            SimConfig {
                token: TOKEN.to_owned(),
                ..SimConfig::default()
            },
        )
        .await;
        let (_, body) = h
            .deploy(json!({"environments": ["production", "staging", "nosuchenv"]}))
            .await;
        let ids: Vec<u64> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(ids, [500, 501, 502]);
        for id in &ids {
            h.poll_until_final(*id).await;
        }
        let status = h.status().await;
        assert_eq!(status["deploys-status"]["failed"][0]["id"], 502);

        let mut gone = false;
        for _ in 0..100 {
            if h.status_of(500).await.0 == 404 {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "deploy 500 still known after its TTL");
        let (code, body) = h.status_of(502).await;
        assert_eq!(code, 404);
        assert_eq!(keys(&body), BTreeSet::from(["kind", "msg"]));
        assert_eq!(body["kind"], "puppetlabs.code-manager/not-found");
        let status = h.status().await;
        assert_eq!(status["deploys-status"]["failed"], json!([]), "forgotten");
        // Storage outlives the deploy records.
        assert!(h.sim.deployed("production").is_some());

        let (_, body) = h.deploy(json!({"environments": ["production"]})).await;
        assert_eq!(body[0]["id"], 503, "ids are never reused");
        // A longer TTL applies at once.
        h.sim.set_deploy_ttl(DEFAULT_DEPLOY_TTL);
        h.poll_until_final(503).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(h.status_of(503).await.0, 200);
    }

    #[tokio::test]
    async fn rate_limit_and_faults_answer_code_manager_errors() {
        let h = Harness::start(
            CodeManagerSettings::default(),
            SimConfig {
                token: TOKEN.to_owned(),
                // One request per minute per credential.
                rate_limit_per_minute: Some(1),
                ..SimConfig::default()
            },
        )
        .await;
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some(TOKEN), None)
            .await;
        assert_eq!(code, 200);
        let resp = h
            .http
            .get(h.url("/code-manager/v1/deploys/status"))
            .header("X-Authentication", TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().get(header::RETRY_AFTER).is_some());
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["kind"], "puppetlabs.code-manager/too-many-requests");
        // The limit is per credential: the query-parameter token counts as the same one, and
        // another token has its own budget.
        let (code, _) = h
            .send(
                Method::GET,
                &format!("/deploys/status?token={TOKEN}"),
                None,
                None,
            )
            .await;
        assert_eq!(code, 429);
        let (code, _) = h
            .send(Method::GET, "/deploys/status", Some("other-token"), None)
            .await;
        assert_eq!(code, 401, "not rate-limited, but unknown");

        h.sim.control().set_outage(true);
        let (code, body) = h
            .send(Method::GET, "/deploys/status", Some("third-token"), None)
            .await;
        assert_eq!(code, 503);
        assert_eq!(body["kind"], "puppetlabs.code-manager/service-unavailable");
        assert!(body["msg"].is_string());
        h.sim.control().set_outage(false);
        let (code, body) = h
            .send(Method::GET, "/nope", Some("fourth-token"), None)
            .await;
        assert_eq!(code, 404);
        assert_eq!(body["kind"], "puppetlabs.code-manager/not-found");
    }

    #[tokio::test]
    async fn the_repository_state_is_read_when_the_deploy_starts() {
        let step = Duration::from_millis(100);
        let h = Harness::with_step(step).await;
        let (_, body) = h.deploy(json!({"environments": ["staging"]})).await;
        let id = body[0]["id"].as_u64().expect("id");
        // Pushed while the deploy is still new: r10k fetches when it starts deploying.
        let later = h.sim.push_branch("staging");
        let seen = h.poll_until_final(id).await;
        assert_eq!(seen.last().map(String::as_str), Some("synced"));
        assert_eq!(h.sim.deployed("staging"), Some(later));
    }
}
