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

mod render;
mod routes;
mod state;
#[cfg(test)]
mod tests;
mod tls;
mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_rustls::rustls;

use crate::sim::{SimConfig, SimControl};

use render::{ApiError, ApiResult};
use state::{random_sha, Clock, Data, Stored};
use tls::{generate_tls, Tls};
use tokens::TokenRecord;

pub use render::render_error;
pub use routes::{router, serve};
pub use state::environment_name;
pub use tls::unrelated_ca_pem;

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
