//! In-memory simulator of the Spheron API (`bosun sim`, default `http://127.0.0.1:18083`).
//!
//! Follows `shared/research/spheron.md` (rebuilt from Spheron's official SDK and Terraform
//! provider; there is no published spec): singular `/v1/...` paths, camelCase JSON, Mongo
//! `_id`s (24 hex digits), `skip`/`limit` paging, errors as `{message}`, and each endpoint's own
//! wrapper (`{deployment}`, `{domain}`, `{domains}`, `{instance}`, `{result}`, bare objects, a
//! bare array for a project's deployments).
//!
//! Implemented: token scope, organizations (read), static projects (list, get, archive),
//! deployment environments (list), environment variables (add, update, delete), site
//! deployments (start, get, list, redeploy, authorize, cancel), project domains (CRUD, verify,
//! CDN records), compute projects (list, get, delete), compute instances (create, get, list,
//! update, close, delete), compute deployments (get) and compute-instance domains (list,
//! create, update, verify, delete).
//!
//! The simulator starts with one organization, [`DEFAULT_ORGANIZATION_ID`] ("Acme"), and the
//! configured token scoped to it. More tokens (and organizations) come from
//! [`SpheronSim::add_token`] or `POST /_sim/tokens`, so a test can hold "a token of another
//! organization".
//!
//! Time is simulated lazily (no background tasks):
//! - a site deployment is `PreQueue`, `Queued` and `Pending` for one step each (default
//!   300 ms, [`SpheronSim::set_step_time`]) and then `Deployed`, or `Failed`/`TimedOut` when
//!   [`SpheronSim::fail_next_deployment`] asked for it; one made with
//!   [`SpheronSim::require_authorization_next`] waits in `AuthorizationNeeded` until
//!   authorized; a canceled one is `Killing` for one step, then `Canceled`;
//! - a compute deployment is `Queued` and `Pending` for one compute step each, then `Deployed`
//!   (or `Failed`, [`SpheronSim::fail_next_compute_deployment`]); once a newer deployment of the
//!   instance is `Deployed`, the older one reads `Deprecated`. The instance is `Starting` until
//!   a deployment is `Deployed` (then `Active`), `Failed-start` if it never got one, `Closed`
//!   once closed;
//! - a domain starts unverified; `verify` succeeds once its DNS is "in place": after the DNS
//!   delay (default 2 s, [`SpheronSim::set_dns_delay`], `None` = never) or at once after
//!   [`SpheronSim::set_dns_ready`] / `POST /_sim/domains/dns-ready`.
//!
//! Control routes (no token, no faults, no rate limit), next to the framework's
//! `/_sim/stats`, `/_sim/faults`, `/_sim/reset-stats`:
//! - `POST /_sim/tokens` `{token, organization}`: scope `token` to the organization named
//!   `organization` (created if new; calls add up) → `{organizationId, organizationName}`;
//! - `POST /_sim/timing` `{deploymentStepMs?, computeStepMs?, dnsDelayMs?}` (`dnsDelayMs: null`
//!   = DNS never propagates by itself) → the timing now in force;
//! - `POST /_sim/deployments/fail-next` `{status?: "Failed"|"TimedOut", reason?, count?}`;
//! - `POST /_sim/deployments/require-authorization` `{count?}`;
//! - `POST /_sim/compute/fail-next` `{reason?, count?}`;
//! - `POST /_sim/domains/dns-ready` `{name}`;
//! - `POST /_sim/organizations/overdue` `{organizationId?, overdue}`.
//!
//! Where the notes are silent (inferred; each also noted at the code):
//! - an unknown or missing token is `401 {message}`; a token not scoped to the organization
//!   owning a resource is `403` (the docs say failed authentication is 403 and also list 401);
//! - unknown ids are `404`, invalid bodies `400` with one class-validator-style message
//!   (`"<field> must be ..."`), a concurrent compute update `409`;
//! - an overdue organization gets `400` with a balance message on every start, redeploy,
//!   create and update (and its deployment environments read `PAYMENT_PENDING`);
//! - `limit` defaults to 20 and may be at most 100 (`0` means no limit, as in MongoDB);
//! - a project is keyed by its organization and repository URL; its environments are
//!   "Production" (the first deployment's branch) and "Development" (no branches); a deployment
//!   of a branch no environment lists has no environment name;
//! - env-var `environments` and domain `deploymentEnvironments` accept names or ids, and a
//!   domain identifier is its id or its name; domain names are unique across the simulator;
//!   renaming a domain unverifies it;
//! - a compute instance is named after its compute project; `serviceCount` is 1 to 20; plans
//!   are the sim's own [`PLANS`]; closing twice is fine; a compute project with instances that
//!   are not closed cannot be deleted; deleting an instance removes its deployments and domains;
//! - the single organization serves both site and compute products (`appType` is not
//!   enforced).

mod render;
mod routes;
#[cfg(test)]
mod tests;

use render::{fake_hash, iso, normalize_git_url};
pub use routes::router;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::sim::{bearer_token, with_sim, SimConfig, SimControl};

/// Where `bosun sim` serves the Spheron simulator unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:18083";
/// The organization every simulator starts with (scoped to the configured token).
pub const DEFAULT_ORGANIZATION_ID: &str = "65f000000000000000000001";
/// The name of [`DEFAULT_ORGANIZATION_ID`].
pub const DEFAULT_ORGANIZATION_NAME: &str = "Acme";
/// How long each phase of a site deployment lasts unless changed.
pub const DEFAULT_STEP_TIME: Duration = Duration::from_millis(300);
/// How long each phase of a compute deployment lasts unless changed.
pub const DEFAULT_COMPUTE_STEP_TIME: Duration = Duration::from_millis(300);
/// How long a domain's DNS takes to "propagate" unless changed.
pub const DEFAULT_DNS_DELAY: Duration = Duration::from_secs(2);
/// The `A` record target of `cdn-records` (a documentation address).
pub const CDN_IPV4: &str = "192.0.2.10";
/// The `CNAME` target of `cdn-records`.
pub const CDN_CNAME: &str = "cname.sim.spheron.invalid";

/// A compute plan (`akashMachineImageName`). The names are the simulator's own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub name: &'static str,
    pub cpu: f64,
    pub memory: &'static str,
    pub storage: &'static str,
}

/// The plans the simulator accepts.
pub const PLANS: &[Plan] = &[
    Plan {
        name: "Ventus Nano 1",
        cpu: 1.0,
        memory: "2Gi",
        storage: "10Gi",
    },
    Plan {
        name: "Ventus Small 1",
        cpu: 2.0,
        memory: "4Gi",
        storage: "20Gi",
    },
    Plan {
        name: "Ventus Medium 1",
        cpu: 4.0,
        memory: "8Gi",
        storage: "40Gi",
    },
];

const SIM_USER_ID: &str = "65f0000000000000000000ff";
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
const MAX_SERVICE_COUNT: u64 = 20;
const DOMAIN_TYPES: &[&str] = &[
    "domain",
    "subdomain",
    "handshake-domain",
    "handshake-subdomain",
    "ens-domain",
];
const PROTOCOLS: &[&str] = &["ipfs", "ipfs-filecoin", "arweave"];
const PROVIDERS: &[&str] = &["GITHUB", "GITLAB", "BITBUCKET"];
const NODE_VERSIONS: &[&str] = &["V_12", "V_14", "V_16"];
const FRAMEWORKS: &[&str] = &[
    "static",
    "vue",
    "react",
    "next",
    "angular",
    "preact",
    "nuxt2",
    "svelte",
    "gatsby",
    "eleventy",
    "docusaurus",
    "sanity",
    "hugo",
    "ionicreact",
    "vite",
    "scully",
    "stencil",
    "brunch",
    "ionicangular",
];
const OVERDUE_MESSAGE: &str =
    "Insufficient balance: the organization's payment is overdue. Add funds to continue.";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: `{message}`, the only documented error field.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    Forbidden,
    NotFound(String),
    BadRequest(String),
    Conflict(String),
}

type ApiResult<T> = Result<T, ApiError>;

fn message(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// Error renderer for the shared middleware (outages, injected errors, 429).
pub fn render_error(status: StatusCode, text: &str) -> Response {
    message(status, text)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => message(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: the API token is invalid or expired.",
            ),
            Self::Forbidden => message(
                StatusCode::FORBIDDEN,
                "The API token is not scoped to the organization that owns this resource.",
            ),
            Self::NotFound(m) => message(StatusCode::NOT_FOUND, &m),
            Self::BadRequest(m) => message(StatusCode::BAD_REQUEST, &m),
            Self::Conflict(m) => message(StatusCode::CONFLICT, &m),
        }
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::BadRequest(m.into())
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("{what} not found"))
}

// ---------------------------------------------------------------------------------------------
// State

struct Org {
    id: String,
    name: String,
    username: String,
    overdue: bool,
    created_at: String,
}

struct EnvRec {
    id: String,
    name: String,
    branches: Vec<String>,
    protocol: String,
}

struct VarRec {
    id: String,
    name: String,
    value: String,
    env_ids: Vec<String>,
}

struct ProjectRec {
    id: String,
    org_id: String,
    name: String,
    url: String,
    provider: String,
    archived: bool,
    configuration: Value,
    hook_id: String,
    envs: Vec<EnvRec>,
    vars: Vec<VarRec>,
    created_at: String,
    updated_at: String,
}

/// How a site deployment ends if nobody cancels it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Deployed,
    Failed(String),
    TimedOut(String),
}

/// The terminal status a failing site deployment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Failed,
    TimedOut,
}

struct SiteDeployment {
    id: String,
    project_id: String,
    branch: String,
    commit_id: String,
    protocol: String,
    env: BTreeMap<String, String>,
    /// The `env` of the start request (redeploys merge the latest variables over it).
    request_env: BTreeMap<String, String>,
    configuration: Value,
    topic: String,
    env_name: Option<String>,
    created: Instant,
    /// When progress started: creation, or authorization.
    started: Instant,
    created_ts: jiff::Timestamp,
    step: Duration,
    outcome: Outcome,
    needs_auth: bool,
    authorized: bool,
    canceled_at: Option<Instant>,
}

impl SiteDeployment {
    fn status(&self, now: Instant) -> &'static str {
        if let Some(c) = self.canceled_at {
            return if now < c + self.step {
                "Killing"
            } else {
                "Canceled"
            };
        }
        if self.needs_auth && !self.authorized {
            return "AuthorizationNeeded";
        }
        let e = now.saturating_duration_since(self.started);
        if e < self.step {
            "PreQueue"
        } else if e < self.step * 2 {
            "Queued"
        } else if e < self.step * 3 {
            "Pending"
        } else {
            match self.outcome {
                Outcome::Deployed => "Deployed",
                Outcome::Failed(_) => "Failed",
                Outcome::TimedOut(_) => "TimedOut",
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner<'a> {
    Project(&'a str),
    Instance(&'a str),
}

struct DomainRec {
    id: String,
    name: String,
    link: String,
    kind: String,
    verified: bool,
    /// A compute-instance domain (else a project domain).
    compute: bool,
    /// The project or instance id.
    owner: String,
    env_ids: Vec<String>,
    created: Instant,
    created_at: String,
    updated_at: String,
}

impl DomainRec {
    fn owned_by(&self, owner: Owner<'_>) -> bool {
        match owner {
            Owner::Project(p) => !self.compute && self.owner == p,
            Owner::Instance(i) => self.compute && self.owner == i,
        }
    }
}

struct ComputeProjectRec {
    id: String,
    org_id: String,
    name: String,
    description: String,
    created_at: String,
}

struct InstanceRec {
    id: String,
    org_id: String,
    project_id: String,
    name: String,
    region: String,
    scalable: bool,
    deployments: Vec<String>,
    closed: bool,
    created_at: String,
    updated_at: String,
}

struct ComputeDeploymentRec {
    id: String,
    instance_id: String,
    kind: &'static str,
    services: Vec<Value>,
    started: Instant,
    created_ts: jiff::Timestamp,
    step: Duration,
    fail: Option<String>,
    topic: String,
}

impl ComputeDeploymentRec {
    /// The status ignoring newer deployments (`Deprecated` needs the instance's view).
    fn base_status(&self, now: Instant) -> &'static str {
        let e = now.saturating_duration_since(self.started);
        if e < self.step {
            "Queued"
        } else if e < self.step * 2 {
            "Pending"
        } else if self.fail.is_some() {
            "Failed"
        } else {
            "Deployed"
        }
    }

    fn in_progress(&self, now: Instant) -> bool {
        matches!(self.base_status(now), "Queued" | "Pending")
    }
}

struct Data {
    tokens: BTreeMap<String, Vec<String>>,
    orgs: BTreeMap<String, Org>,
    projects: BTreeMap<String, ProjectRec>,
    deployments: BTreeMap<String, SiteDeployment>,
    domains: BTreeMap<String, DomainRec>,
    compute_projects: BTreeMap<String, ComputeProjectRec>,
    instances: BTreeMap<String, InstanceRec>,
    compute_deployments: BTreeMap<String, ComputeDeploymentRec>,
    /// Pushes per (repository URL, branch); the head commit is derived from the count.
    heads: BTreeMap<(String, String), u32>,
    next_id: u64,
    step: Duration,
    compute_step: Duration,
    dns_delay: Option<Duration>,
    fail_next: VecDeque<(Ending, String)>,
    require_auth: u32,
    compute_fail_next: VecDeque<String>,
    dns_ready: BTreeSet<String>,
}

fn object_id(n: u64) -> String {
    format!("65f0{n:020x}")
}

impl Data {
    fn next(&mut self) -> String {
        self.next_id += 1;
        object_id(self.next_id)
    }

    fn add_org(&mut self, name: &str) -> String {
        if let Some(o) = self.orgs.values().find(|o| o.name == name) {
            return o.id.clone();
        }
        let id = self.next();
        let username = name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.orgs.insert(
            id.clone(),
            Org {
                id: id.clone(),
                name: name.to_owned(),
                username,
                overdue: false,
                created_at: iso(jiff::Timestamp::now()),
            },
        );
        id
    }

    /// The organization, if the token may see it (404 before 403: unknown ids are unknown).
    fn org(&self, scope: &[String], id: &str) -> ApiResult<&Org> {
        let org = self.orgs.get(id).ok_or_else(|| not_found("Organization"))?;
        allowed(scope, &org.id)?;
        Ok(org)
    }

    fn project(&self, scope: &[String], id: &str) -> ApiResult<&ProjectRec> {
        let p = self.projects.get(id).ok_or_else(|| not_found("Project"))?;
        allowed(scope, &p.org_id)?;
        Ok(p)
    }

    fn deployment(&self, scope: &[String], id: &str) -> ApiResult<&SiteDeployment> {
        let dep = self
            .deployments
            .get(id)
            .ok_or_else(|| not_found("Deployment"))?;
        self.project(scope, &dep.project_id)?;
        Ok(dep)
    }

    fn instance(&self, scope: &[String], id: &str) -> ApiResult<&InstanceRec> {
        let i = self
            .instances
            .get(id)
            .ok_or_else(|| not_found("Compute instance"))?;
        allowed(scope, &i.org_id)?;
        Ok(i)
    }

    fn compute_project(&self, scope: &[String], id: &str) -> ApiResult<&ComputeProjectRec> {
        let p = self
            .compute_projects
            .get(id)
            .ok_or_else(|| not_found("Compute project"))?;
        allowed(scope, &p.org_id)?;
        Ok(p)
    }

    /// A domain of `owner` by id or (case-insensitive) name.
    fn domain_id(&self, owner: Owner<'_>, ident: &str) -> ApiResult<String> {
        let lower = ident.to_ascii_lowercase();
        self.domains
            .values()
            .find(|d| d.owned_by(owner) && (d.id == ident || d.name == lower))
            .map(|d| d.id.clone())
            .ok_or_else(|| not_found("Domain"))
    }

    fn dns_in_place(&self, d: &DomainRec, now: Instant) -> bool {
        self.dns_ready.contains(&d.name)
            || self.dns_delay.is_some_and(|delay| now >= d.created + delay)
    }

    /// The deployment an instance runs: its newest `Deployed` one, else its newest one.
    fn active_deployment(&self, i: &InstanceRec, now: Instant) -> Option<String> {
        i.deployments
            .iter()
            .rev()
            .find(|id| {
                self.compute_deployments
                    .get(*id)
                    .is_some_and(|c| c.base_status(now) == "Deployed")
            })
            .or_else(|| i.deployments.last())
            .cloned()
    }

    fn compute_status(&self, c: &ComputeDeploymentRec, now: Instant) -> &'static str {
        let base = c.base_status(now);
        if base != "Deployed" {
            return base;
        }
        let superseded = self.instances.get(&c.instance_id).is_some_and(|i| {
            i.deployments
                .iter()
                .skip_while(|id| **id != c.id)
                .skip(1)
                .any(|id| {
                    self.compute_deployments
                        .get(id)
                        .is_some_and(|n| n.base_status(now) == "Deployed")
                })
        });
        if superseded {
            "Deprecated"
        } else {
            "Deployed"
        }
    }

    fn instance_state(&self, i: &InstanceRec, now: Instant) -> &'static str {
        if i.closed {
            return "Closed";
        }
        let deps: Vec<&ComputeDeploymentRec> = i
            .deployments
            .iter()
            .filter_map(|id| self.compute_deployments.get(id))
            .collect();
        if deps.iter().any(|c| c.base_status(now) == "Deployed") {
            "Active"
        } else if deps.last().is_some_and(|c| c.in_progress(now)) {
            "Starting"
        } else {
            "Failed-start"
        }
    }

    fn overdue(&self, org_id: &str) -> bool {
        self.orgs.get(org_id).is_some_and(|o| o.overdue)
    }
}

fn allowed(scope: &[String], org: &str) -> ApiResult<()> {
    // Inferred: a token of another organization is refused with 403.
    if scope.iter().any(|s| s == org) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

struct Inner {
    data: Mutex<Data>,
}

/// The Spheron simulator's state. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SpheronSim {
    inner: Arc<Inner>,
    control: SimControl,
}

impl SpheronSim {
    /// A simulator with organization [`DEFAULT_ORGANIZATION_ID`] ("Acme"), the configured token
    /// scoped to it, and nothing else.
    pub fn new(config: &SimConfig) -> Self {
        let mut data = Data {
            tokens: BTreeMap::new(),
            orgs: BTreeMap::new(),
            projects: BTreeMap::new(),
            deployments: BTreeMap::new(),
            domains: BTreeMap::new(),
            compute_projects: BTreeMap::new(),
            instances: BTreeMap::new(),
            compute_deployments: BTreeMap::new(),
            heads: BTreeMap::new(),
            next_id: 0,
            step: DEFAULT_STEP_TIME,
            compute_step: DEFAULT_COMPUTE_STEP_TIME,
            dns_delay: Some(DEFAULT_DNS_DELAY),
            fail_next: VecDeque::new(),
            require_auth: 0,
            compute_fail_next: VecDeque::new(),
            dns_ready: BTreeSet::new(),
        };
        let org = data.add_org(DEFAULT_ORGANIZATION_NAME);
        debug_assert_eq!(org, DEFAULT_ORGANIZATION_ID);
        // Resource ids start high so they never look like the organization's.
        data.next_id = 0x1000;
        data.tokens.insert(config.token.clone(), vec![org]);
        Self {
            inner: Arc::new(Inner {
                data: Mutex::new(data),
            }),
            control: SimControl::new(config),
        }
    }

    /// Faults and counters of this simulator.
    pub fn control(&self) -> &SimControl {
        &self.control
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.inner.data)
    }

    /// Scopes `token` to the organization named `organization` (created if new) and returns
    /// that organization's id. Calls add up: a token may be scoped to several organizations.
    pub fn add_token(&self, token: &str, organization: &str) -> String {
        let mut d = self.data();
        let org = d.add_org(organization);
        let scope = d.tokens.entry(token.to_owned()).or_default();
        if !scope.contains(&org) {
            scope.push(org.clone());
        }
        org
    }

    /// How long each phase of site deployments started from now on lasts.
    pub fn set_step_time(&self, step: Duration) {
        self.data().step = step;
    }

    /// How long each phase of compute deployments started from now on lasts.
    pub fn set_compute_step_time(&self, step: Duration) {
        self.data().compute_step = step;
    }

    /// How long after creation a domain's DNS is in place; `None`: only
    /// [`SpheronSim::set_dns_ready`] puts it in place.
    pub fn set_dns_delay(&self, delay: Option<Duration>) {
        self.data().dns_delay = delay;
    }

    /// Puts the DNS records of domain `name` in place: the next verify succeeds. May be called
    /// before the domain exists.
    pub fn set_dns_ready(&self, name: &str) {
        self.data().dns_ready.insert(name.to_ascii_lowercase());
    }

    /// Makes the next site deployment (start or redeploy) end `Failed` or `TimedOut` with
    /// `reason`. Calls add up, in order.
    pub fn fail_next_deployment(&self, ending: Ending, reason: &str) {
        self.data().fail_next.push_back((ending, reason.to_owned()));
    }

    /// Makes the next `count` site deployments wait in `AuthorizationNeeded`.
    pub fn require_authorization_next(&self, count: u32) {
        self.data().require_auth += count;
    }

    /// Makes the next compute deployment (create or update) end `Failed` with `reason`.
    pub fn fail_next_compute_deployment(&self, reason: &str) {
        self.data().compute_fail_next.push_back(reason.to_owned());
    }

    /// Marks an organization overdue (every start and create is refused for lack of balance)
    /// or paid. Returns false if there is no such organization.
    pub fn set_overdue(&self, organization_id: &str, overdue: bool) -> bool {
        match self.data().orgs.get_mut(organization_id) {
            Some(o) => {
                o.overdue = overdue;
                true
            }
            None => false,
        }
    }

    /// Simulates a new commit pushed to `branch` of `git_url`; later deployments of that
    /// branch build it. Returns the commit id.
    pub fn push_commit(&self, git_url: &str, branch: &str) -> String {
        let mut d = self.data();
        let key = (normalize_git_url(git_url), branch.to_owned());
        let n = d.heads.entry(key.clone()).or_insert(0);
        *n += 1;
        let n = *n;
        fake_hash(&[&key.0, &key.1, &n.to_string()], 40)
    }

    /// The status a site deployment has now.
    pub fn deployment_status(&self, id: &str) -> Option<&'static str> {
        let now = Instant::now();
        self.data().deployments.get(id).map(|d| d.status(now))
    }

    /// `serviceCount` per service of the deployment an instance runs now (empty for an
    /// unknown instance).
    pub fn service_counts(&self, instance_id: &str) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let d = self.data();
        let Some(active) = d
            .instances
            .get(instance_id)
            .and_then(|i| d.active_deployment(i, now))
        else {
            return BTreeMap::new();
        };
        d.compute_deployments
            .get(&active)
            .map(|c| {
                c.services
                    .iter()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap_or_default().to_owned(),
                            s["serviceCount"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ids of all compute instances, oldest first.
    pub fn instance_ids(&self) -> Vec<String> {
        self.data().instances.keys().cloned().collect()
    }

    /// Ids of all projects, oldest first.
    pub fn project_ids(&self) -> Vec<String> {
        self.data().projects.keys().cloned().collect()
    }

    /// Checks the token; the lock and the token's organizations on success.
    fn begin(&self, headers: &HeaderMap) -> ApiResult<(MutexGuard<'_, Data>, Vec<String>)> {
        let d = self.data();
        let scope = bearer_token(headers)
            .and_then(|t| d.tokens.get(t))
            .cloned()
            .ok_or(ApiError::Unauthorized)?;
        Ok((d, scope))
    }
}
