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

// ---------------------------------------------------------------------------------------------
// Rendering

fn iso(ts: jiff::Timestamp) -> String {
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    )
}

fn iso_after(ts: jiff::Timestamp, after: Duration) -> String {
    let offset = jiff::SignedDuration::try_from(after).unwrap_or_default();
    iso(ts.checked_add(offset).unwrap_or(ts))
}

/// A stable hex string of `len` digits from some text.
fn fake_hash(parts: &[&str], len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    let mut round = 0u8;
    while out.len() < len {
        for b in parts
            .iter()
            .flat_map(|p| p.bytes().chain([0]))
            .chain([round])
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        round = round.wrapping_add(1);
    }
    out.truncate(len);
    out
}

fn normalize_git_url(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_owned()
}

fn org_json(o: &Org) -> Value {
    json!({ "_id": o.id, "profile": { "name": o.name, "username": o.username, "image": "" },
        "users": [SIM_USER_ID], "registries": [], "overdue": o.overdue, "appType": "compute",
        "createdAt": o.created_at, "updatedAt": o.created_at })
}

fn env_json(e: &EnvRec, overdue: bool) -> Value {
    let status = if overdue { "PAYMENT_PENDING" } else { "ACTIVE" };
    json!({ "_id": e.id, "name": e.name, "branches": e.branches, "status": status,
        "protocol": e.protocol, "isFree": true })
}

fn var_json(p: &ProjectRec, v: &VarRec, overdue: bool) -> Value {
    let envs: Vec<Value> = p
        .envs
        .iter()
        .filter(|e| v.env_ids.contains(&e.id))
        .map(|e| env_json(e, overdue))
        .collect();
    json!({ "_id": v.id, "name": v.name, "value": v.value, "deploymentEnvironments": envs })
}

fn project_json(d: &Data, p: &ProjectRec) -> Value {
    let overdue = d.overdue(&p.org_id);
    let domains: Vec<&str> = d
        .domains
        .values()
        .filter(|x| x.owned_by(Owner::Project(&p.id)))
        .map(|x| x.id.as_str())
        .collect();
    json!({ "_id": p.id, "name": p.name, "type": "STANDARD", "url": p.url,
        "environmentVariables": p.vars.iter().map(|v| var_json(p, v, overdue)).collect::<Vec<_>>(),
        "deploymentEnvironments": p.envs.iter().map(|e| env_json(e, overdue)).collect::<Vec<_>>(),
        "organization": p.org_id, "state": if p.archived { "ARCHIVED" } else { "MAINTAINED" },
        "hookId": p.hook_id, "provider": p.provider, "prCommentIds": [],
        "configuration": p.configuration,
        "passwordProtection": { "enabled": false, "credentials": [] },
        "createdAt": p.created_at, "updatedAt": p.updated_at, "domains": domains })
}

fn site_preview(dep: &SiteDeployment) -> String {
    format!("https://{}.ipfs.sphn.link", fake_hash(&[&dep.id], 12))
}

fn deployment_json(d: &Data, dep: &SiteDeployment, now: Instant) -> Value {
    let status = dep.status(now);
    let project = d.projects.get(&dep.project_id);
    let repo = project.map(|p| p.name.clone()).unwrap_or_default();
    let url = project.map(|p| p.url.clone()).unwrap_or_default();
    let config = &dep.configuration;
    // Phase `n` began `n` steps after progress started (creation, or authorization).
    let lead = dep.started.saturating_duration_since(dep.created);
    let at = |steps: u32| iso_after(dep.created_ts, lead + dep.step * steps);
    let mut logs = vec![json!({ "time": at(0),
        "log": format!("Deployment of {repo}@{} received", dep.branch) })];
    if dep.needs_auth && !dep.authorized {
        logs.push(json!({ "time": at(0),
            "log": "Waiting for authorization: the repository's owner must authorize this deployment" }));
    } else {
        // A cancel stops the build where it was.
        let until = dep.canceled_at.map_or(now, |c| c.min(now));
        let elapsed = until.saturating_duration_since(dep.started);
        if elapsed >= dep.step {
            logs.push(json!({ "time": at(1), "log": "Queued for a build worker" }));
        }
        if elapsed >= dep.step * 2 {
            logs.push(
                json!({ "time": at(2), "log": format!("Cloning {url} at {}", dep.commit_id) }),
            );
            logs.push(json!({ "time": at(2), "log": format!("Running {}",
                config["installCommand"].as_str().unwrap_or("install")) }));
            logs.push(json!({ "time": at(2), "log": format!("Running {}",
                config["buildCommand"].as_str().unwrap_or("build")) }));
        }
    }
    let (failed_message, end_log) = match (status, &dep.outcome) {
        ("Failed", Outcome::Failed(r)) => (r.clone(), Some(r.clone())),
        ("TimedOut", Outcome::TimedOut(r)) => (r.clone(), Some(format!("Build timed out: {r}"))),
        ("Deployed", _) => (
            String::new(),
            Some(format!("Deployed to {}", site_preview(dep))),
        ),
        ("Canceled", _) => (String::new(), Some("Deployment canceled".to_owned())),
        _ => (String::new(), None),
    };
    if let Some(line) = end_log {
        logs.push(json!({ "time": at(3), "log": line }));
    }
    let done = matches!(status, "Deployed" | "Failed" | "TimedOut" | "Canceled");
    let updated = if done {
        at(3)
    } else {
        iso(jiff::Timestamp::now())
    };
    let preview = if status == "Deployed" {
        site_preview(dep)
    } else {
        String::new()
    };
    json!({ "_id": dep.id, "sitePreview": preview, "commitId": dep.commit_id,
        "commitMessage": format!("Commit {}", &dep.commit_id[..7]),
        "logs": logs, "buildDirectory": [],
        "contentHash": if status == "Deployed" { format!("bafy{}", fake_hash(&[&dep.id, "cid"], 40)) } else { String::new() },
        "topic": dep.topic, "status": status, "paymentId": "",
        "buildTime": if done { dep.step.as_secs_f64() } else { 0.0 },
        "memoryUsed": 0, "env": dep.env,
        "project": project.map(|p| project_json(d, p)).unwrap_or(Value::Null),
        "branch": dep.branch, "externalRepositoryName": repo, "protocol": dep.protocol,
        "deploymentEnvironmentName": dep.env_name, "failedMessage": failed_message,
        "isFromRequest": false, "configuration": dep.configuration,
        "pickedUpByDeployerAt": Value::Null, "encrypted": false,
        "createdAt": iso(dep.created_ts), "updatedAt": updated })
}

fn domain_json(x: &DomainRec) -> Value {
    json!({ "_id": x.id, "name": x.name, "link": x.link, "type": x.kind,
        "verified": x.verified, "projectId": x.owner,
        "deploymentEnvironmentIds": x.env_ids, "version": "1", "credentials": [],
        "appType": if x.compute { 2 } else { 1 },
        "createdAt": x.created_at, "updatedAt": x.updated_at })
}

fn compute_project_json(p: &ComputeProjectRec) -> Value {
    json!({ "_id": p.id, "name": p.name, "description": p.description,
        "proivder": "DOCKERHUB", "state": "MAINTAINED", "organization": p.org_id,
        "createdAt": p.created_at, "updatedAt": p.created_at })
}

fn instance_json(d: &Data, i: &InstanceRec, now: Instant, extended: bool) -> Value {
    let mut v = json!({ "_id": i.id, "state": d.instance_state(i, now), "name": i.name,
        "deployments": i.deployments, "computeProject": i.project_id,
        "activeDeployment": d.active_deployment(i, now), "retrievableAkt": 0,
        "withdrawnAkt": 0, "scalableRunningCostUpdatedAt": i.updated_at,
        "scalableRunningCost": 0, "type": if i.scalable { "ON_DEMAND" } else { "SPOT" },
        "region": i.region, "createdAt": i.created_at, "updatedAt": i.updated_at });
    if extended {
        v["defaultDailyTopup"] = json!(0);
        v["leasePricePerBlock"] = json!(0);
    }
    v
}

fn compute_deployment_json(d: &Data, c: &ComputeDeploymentRec, now: Instant) -> Value {
    let status = d.compute_status(c, now);
    let at = |steps: u32| iso_after(c.created_ts, c.step * steps);
    let mut lines = vec![format!("{} requested", c.kind)];
    let e = now.saturating_duration_since(c.started);
    if e >= c.step {
        lines.push("Lease created with a provider; pulling images".to_owned());
    }
    match (status, &c.fail) {
        ("Failed", Some(reason)) => lines.push(reason.clone()),
        ("Deployed" | "Deprecated", _) => lines.push("All services are running".to_owned()),
        _ => {}
    }
    let health = |s: &Value| {
        let port = s["healthCheck"]["port"].as_u64();
        s.get("healthCheck").filter(|h| !h.is_null()).map(|h| {
            json!({ "path": h["path"], "status": if status == "Deployed" { "Active" } else { "Pending" },
                "port": port.map(|p| json!({ "containerPort": p, "exposedPort": p })) })
        })
    };
    let services: Vec<Value> = c
        .services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s["healthCheck"] = health(&s).unwrap_or(Value::Null);
            s
        })
        .collect();
    let url = services
        .first()
        .and_then(|s| s["urlPrewiew"].as_str())
        .unwrap_or_default()
        .to_owned();
    json!({ "_id": c.id, "type": c.kind, "commitId": "", "status": status,
        "buildTime": 0, "topic": c.topic, "env": {},
        "logs": [{ "time": at(0), "log": lines }], "topups": [], "closingLogs": [],
        "instanceLogs": [], "instanceEvents": [], "computeInstance": c.instance_id,
        "services": services, "lastTopup": Value::Null, "deploymentConfigBase64": "",
        "protocolData": { "providerHost": "provider.sim.spheron.invalid",
            "dseq": c.created_ts.as_millisecond() },
        "urlPrewiew": url, "akashWalletId": "", "deploymentInitiator": SIM_USER_ID,
        "createdAt": at(0), "updatedAt": at(2) })
}

// ---------------------------------------------------------------------------------------------
// Requests: bodies and paging

fn parse_body(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad("The request body must be a JSON object")),
        Err(e) => Err(bad(format!("Unexpected token in JSON: {e}"))),
    }
}

/// Reads fields of one JSON object; `prefix` names nested objects in messages
/// (`services.0.`), the way class-validator does.
struct Fields<'a> {
    o: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn new(o: &'a Map<String, Value>, prefix: &str) -> Self {
        Fields {
            o,
            prefix: prefix.to_owned(),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.o.get(key).filter(|v| !v.is_null())
    }

    fn opt_str(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{} must be a string", self.name(key)))),
        }
    }

    fn str(&self, key: &str) -> ApiResult<String> {
        match self.opt_str(key)? {
            None => Err(bad(format!("{} must be a string", self.name(key)))),
            Some(s) if s.trim().is_empty() => {
                Err(bad(format!("{} should not be empty", self.name(key))))
            }
            Some(s) => Ok(s),
        }
    }

    fn one_of(&self, key: &str, allowed: &[&str]) -> ApiResult<String> {
        let s = self.opt_str(key)?.unwrap_or_default();
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(bad(format!(
                "{} must be one of the following values: {}",
                self.name(key),
                allowed.join(", ")
            )))
        }
    }

    fn opt_bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(format!("{} must be a boolean value", self.name(key)))),
        }
    }

    fn bool(&self, key: &str) -> ApiResult<bool> {
        self.opt_bool(key)?
            .ok_or_else(|| bad(format!("{} must be a boolean value", self.name(key))))
    }

    fn uint(&self, key: &str, min: u64, max: u64) -> ApiResult<u64> {
        let n = self
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("{} must be an integer number", self.name(key))))?;
        if n < min {
            return Err(bad(format!(
                "{} must not be less than {min}",
                self.name(key)
            )));
        }
        if n > max {
            return Err(bad(format!(
                "{} must not be greater than {max}",
                self.name(key)
            )));
        }
        Ok(n)
    }

    fn array(&self, key: &str) -> ApiResult<&'a [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(bad(format!("{} must be an array", self.name(key)))),
        }
    }

    fn strings(&self, key: &str) -> ApiResult<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    bad(format!("each value in {} must be a string", self.name(key)))
                })
            })
            .collect()
    }

    fn object(&self, key: &str) -> ApiResult<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(bad(format!("{} must be an object", self.name(key)))),
        }
    }
}

/// `skip` and `limit` (inferred: limit defaults to 20, at most 100, 0 = all).
fn paging(q: &HashMap<String, String>) -> ApiResult<(usize, usize)> {
    let read = |key: &str| -> ApiResult<Option<usize>> {
        q.get(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("{key} must be a non-negative integer")))
            })
            .transpose()
    };
    let skip = read("skip")?.unwrap_or(0);
    let limit = match read("limit")? {
        None => DEFAULT_LIMIT,
        Some(0) => usize::MAX,
        Some(n) if n > MAX_LIMIT => {
            return Err(bad(format!("limit must not be greater than {MAX_LIMIT}")))
        }
        Some(n) => n,
    };
    Ok((skip, limit))
}

fn page<T>(items: impl Iterator<Item = T>, (skip, limit): (usize, usize)) -> Vec<T> {
    items.skip(skip).take(limit).collect()
}

fn valid_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn ok_json(v: Value) -> ApiResult<Response> {
    Ok(Json(v).into_response())
}

// ---------------------------------------------------------------------------------------------
// Routes

/// The simulator's HTTP API with the shared middleware, the framework's `/_sim/` endpoints and
/// the Spheron control routes.
pub fn router(sim: SpheronSim) -> Router {
    let control = sim.control.clone();
    let api = Router::new()
        .route("/v1/api-keys/scope", get(token_scope))
        .route("/v1/organization/{org_id}", get(get_organization))
        .route("/v1/organization/{org_id}/projects", get(list_projects))
        .route(
            "/v1/organization/{org_id}/compute-projects",
            get(list_compute_projects),
        )
        .route("/v1/project/{project_id}", get(get_project))
        .route("/v1/project/{project_id}/state", patch(set_project_state))
        .route(
            "/v1/project/{project_id}/deployments",
            get(list_project_deployments),
        )
        .route(
            "/v1/project/{project_id}/deployment-environments",
            get(list_environments),
        )
        .route(
            "/v1/project/{project_id}/environment-variables",
            post(add_variables),
        )
        .route(
            "/v1/project/{project_id}/environment-variables/{var_id}",
            put(update_variable).delete(delete_variable),
        )
        .route(
            "/v1/project/{project_id}/domains",
            get(list_project_domains).post(create_project_domain),
        )
        .route(
            "/v1/project/{project_id}/domains/cdn-records",
            get(cdn_records),
        )
        .route(
            "/v1/project/{project_id}/domains/{domain}",
            get(get_project_domain)
                .patch(update_project_domain)
                .delete(delete_project_domain),
        )
        .route(
            "/v1/project/{project_id}/domains/{domain}/verify",
            patch(verify_project_domain),
        )
        .route("/v1/deployment", post(start_deployment))
        .route("/v1/deployment/{deployment_id}", get(get_deployment))
        .route(
            "/v1/deployment/{deployment_id}/authorize",
            post(authorize_deployment),
        )
        .route(
            "/v1/deployment/{deployment_id}/cancel",
            post(cancel_deployment),
        )
        .route(
            "/v1/deployment/{deployment_id}/redeploy",
            post(redeploy_deployment),
        )
        .route("/v1/compute-instance", get(list_instances))
        .route("/v1/compute-instance/create", post(create_instance))
        .route(
            "/v1/compute-instance/deployment/{deployment_id}",
            get(get_compute_deployment),
        )
        .route(
            "/v1/compute-instance/{instance_id}",
            get(get_instance).delete(delete_instance),
        )
        .route(
            "/v1/compute-instance/{instance_id}/update",
            patch(update_instance),
        )
        .route(
            "/v1/compute-instance/{instance_id}/close",
            post(close_instance),
        )
        .route(
            "/v1/compute-instance/{instance_id}/domains",
            get(list_instance_domains).post(create_instance_domain),
        )
        .route(
            "/v1/compute-instance/{instance_id}/domains/{domain}",
            patch(update_instance_domain).delete(delete_instance_domain),
        )
        .route(
            "/v1/compute-instance/{instance_id}/domains/{domain}/verify",
            patch(verify_instance_domain),
        )
        .route(
            "/v1/compute-project/{project_id}",
            get(get_compute_project).delete(delete_compute_project),
        )
        .with_state(sim.clone());
    let admin = Router::new()
        .route("/_sim/tokens", post(admin_tokens))
        .route("/_sim/timing", post(admin_timing))
        .route("/_sim/deployments/fail-next", post(admin_fail_next))
        .route(
            "/_sim/deployments/require-authorization",
            post(admin_require_authorization),
        )
        .route("/_sim/compute/fail-next", post(admin_compute_fail_next))
        .route("/_sim/domains/dns-ready", post(admin_dns_ready))
        .route("/_sim/organizations/overdue", post(admin_overdue))
        .with_state(sim);
    // Merged after the middleware: control routes bypass auth, faults and the rate limit.
    with_sim(api, control, render_error).merge(admin)
}

type Q = Query<HashMap<String, String>>;

// ----- identity and organizations --------------------------------------------------------------

async fn token_scope(State(sim): State<SpheronSim>, headers: HeaderMap) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let orgs: Vec<Value> = scope
        .iter()
        .filter_map(|id| d.orgs.get(id))
        .map(
            |o| json!({ "id": o.id, "name": o.name, "username": o.username, "appType": "compute" }),
        )
        .collect();
    ok_json(json!({
        "user": { "id": SIM_USER_ID, "username": "sim-user", "name": "Sim User",
            "email": "sim@example.com" },
        "organizations": orgs,
    }))
}

async fn get_organization(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    ok_json(org_json(d.org(&scope, &id)?))
}

async fn list_projects(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let org = d.org(&scope, &id)?.id.clone();
    let paging = paging(&q)?;
    let state = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s @ ("MAINTAINED" | "ARCHIVED")) => Some(s == "ARCHIVED"),
        Some(_) => {
            return Err(bad(
                "state must be one of the following values: MAINTAINED, ARCHIVED",
            ))
        }
    };
    let projects = page(
        d.projects
            .values()
            .filter(|p| p.org_id == org && state.is_none_or(|a| a == p.archived))
            .map(|p| project_json(&d, p)),
        paging,
    );
    ok_json(json!({ "projects": projects }))
}

async fn list_compute_projects(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let org = d.org(&scope, &id)?.id.clone();
    let paging = paging(&q)?;
    let items = page(
        d.compute_projects
            .values()
            .filter(|p| p.org_id == org)
            .map(compute_project_json),
        paging,
    );
    ok_json(json!({ "computeProjects": items }))
}

// ----- projects ----------------------------------------------------------------------------------

async fn get_project(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    // Bare, unlike most answers.
    ok_json(project_json(&d, d.project(&scope, &id)?))
}

async fn set_project_state(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let o = parse_body(&body)?;
    let state = Fields::new(&o, "").one_of("state", &["MAINTAINED", "ARCHIVED"])?;
    let now = iso(jiff::Timestamp::now());
    if let Some(p) = d.projects.get_mut(&id) {
        p.archived = state == "ARCHIVED";
        p.updated_at = now;
    }
    ok_json(json!({ "message": format!("Project state updated to {state}") }))
}

async fn list_project_deployments(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Q,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let paging = paging(&q)?;
    let status = q.get("status").filter(|s| !s.is_empty()).cloned();
    let now = Instant::now();
    let items = page(
        d.deployments
            .values()
            .rev()
            .filter(|dep| dep.project_id == id)
            .filter(|dep| status.as_deref().is_none_or(|s| dep.status(now) == s))
            .map(|dep| deployment_json(&d, dep, now)),
        paging,
    );
    // A bare array: the SDK reads this endpoint's answer as `Deployment[]`.
    ok_json(Value::Array(items))
}

async fn list_environments(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let p = d.project(&scope, &id)?;
    let overdue = d.overdue(&p.org_id);
    let result: Vec<Value> = p.envs.iter().map(|e| env_json(e, overdue)).collect();
    ok_json(json!({ "result": result }))
}

/// Resolves environment names or ids of a project (inferred: both are accepted).
fn resolve_envs(p: &ProjectRec, given: &[String], field: &str) -> ApiResult<Vec<String>> {
    given
        .iter()
        .map(|g| {
            p.envs
                .iter()
                .find(|e| &e.id == g || e.name.eq_ignore_ascii_case(g))
                .map(|e| e.id.clone())
                .ok_or_else(|| {
                    bad(format!(
                        "{field} must name environments of the project; unknown: {g}"
                    ))
                })
        })
        .collect()
}

fn check_var_unique(
    p: &ProjectRec,
    name: &str,
    env_ids: &[String],
    except: Option<&str>,
    field: &str,
) -> ApiResult<()> {
    let clash = p.vars.iter().find(|v| {
        v.name == name
            && Some(v.id.as_str()) != except
            && v.env_ids.iter().any(|e| env_ids.contains(e))
    });
    match clash {
        Some(_) => Err(bad(format!(
            "{field} must be unique per environment: {name} already exists"
        ))),
        None => Ok(()),
    }
}

struct VarInput {
    name: String,
    value: String,
    env_ids: Vec<String>,
}

fn var_input(p: &ProjectRec, o: &Map<String, Value>, prefix: &str) -> ApiResult<VarInput> {
    let f = Fields::new(o, prefix);
    let name = f.str("name")?;
    if !valid_var_name(&name) {
        return Err(bad(format!(
            "{} must be a valid variable name (letters, digits and _)",
            f.name("name")
        )));
    }
    let value = f.opt_str("value")?.unwrap_or_default();
    let envs = f.strings("environments")?;
    if envs.is_empty() {
        return Err(bad(format!(
            "{} should not be empty",
            f.name("environments")
        )));
    }
    let env_ids = resolve_envs(p, &envs, &f.name("environments"))?;
    Ok(VarInput {
        name,
        value,
        env_ids,
    })
}

async fn add_variables(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let p = d.project(&scope, &id)?;
    let o = parse_body(&body)?;
    let items = Fields::new(&o, "").array("environmentVariables")?;
    if items.is_empty() {
        return Err(bad("environmentVariables should not be empty"));
    }
    let mut inputs: Vec<VarInput> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("environmentVariables.{i}.");
        let obj = item
            .as_object()
            .ok_or_else(|| bad(format!("environmentVariables.{i} must be an object")))?;
        let input = var_input(p, obj, &prefix)?;
        check_var_unique(
            p,
            &input.name,
            &input.env_ids,
            None,
            &format!("{prefix}name"),
        )?;
        if inputs
            .iter()
            .any(|x| x.name == input.name && x.env_ids.iter().any(|e| input.env_ids.contains(e)))
        {
            return Err(bad(format!(
                "{prefix}name must be unique per environment: {} is given twice",
                input.name
            )));
        }
        inputs.push(input);
    }
    let ids: Vec<String> = inputs.iter().map(|_| d.next()).collect();
    let now = iso(jiff::Timestamp::now());
    let Some(p) = d.projects.get_mut(&id) else {
        return Err(not_found("Project"));
    };
    for (input, vid) in inputs.into_iter().zip(ids.iter()) {
        p.vars.push(VarRec {
            id: vid.clone(),
            name: input.name,
            value: input.value,
            env_ids: input.env_ids,
        });
    }
    p.updated_at = now;
    let p = &d.projects[&id];
    let overdue = d.overdue(&p.org_id);
    let created: Vec<Value> = p
        .vars
        .iter()
        .filter(|v| ids.contains(&v.id))
        .map(|v| var_json(p, v, overdue))
        .collect();
    ok_json(json!({ "environmentVariables": created }))
}

async fn update_variable(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, var_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let p = d.project(&scope, &id)?;
    if !p.vars.iter().any(|v| v.id == var_id) {
        return Err(not_found("Environment variable"));
    }
    let o = parse_body(&body)?;
    let input = var_input(p, &o, "")?;
    check_var_unique(p, &input.name, &input.env_ids, Some(&var_id), "name")?;
    let now = iso(jiff::Timestamp::now());
    let Some(p) = d.projects.get_mut(&id) else {
        return Err(not_found("Project"));
    };
    if let Some(v) = p.vars.iter_mut().find(|v| v.id == var_id) {
        v.name = input.name;
        v.value = input.value;
        v.env_ids = input.env_ids;
    }
    p.updated_at = now;
    let p = &d.projects[&id];
    let overdue = d.overdue(&p.org_id);
    let updated = p
        .vars
        .iter()
        .find(|v| v.id == var_id)
        .map(|v| var_json(p, v, overdue))
        .unwrap_or(Value::Null);
    ok_json(json!({ "updated": updated }))
}

async fn delete_variable(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, var_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let Some(p) = d.projects.get_mut(&id) else {
        return Err(not_found("Project"));
    };
    let before = p.vars.len();
    p.vars.retain(|v| v.id != var_id);
    if p.vars.len() == before {
        return Err(not_found("Environment variable"));
    }
    ok_json(json!({ "success": true }))
}

// ----- domains (shared by projects and instances) --------------------------------------------------

fn unique_domain(d: &Data, name: &str, except: Option<&str>) -> ApiResult<()> {
    if d.domains
        .values()
        .any(|x| x.name == name && Some(x.id.as_str()) != except)
    {
        Err(bad(format!(
            "name must be unique: {name} is already in use"
        )))
    } else {
        Ok(())
    }
}

fn domain_name(f: &Fields<'_>) -> ApiResult<String> {
    let name = f.str("name")?.trim().to_ascii_lowercase();
    if valid_domain(&name) {
        Ok(name)
    } else {
        Err(bad(format!(
            "{} must be a valid domain name",
            f.name("name")
        )))
    }
}

fn insert_domain(
    d: &mut Data,
    compute: bool,
    owner: &str,
    name: String,
    kind: String,
    link: String,
    env_ids: Vec<String>,
) -> Value {
    let id = d.next();
    let now = iso(jiff::Timestamp::now());
    let rec = DomainRec {
        id: id.clone(),
        name,
        link,
        kind,
        verified: false,
        compute,
        owner: owner.to_owned(),
        env_ids,
        created: Instant::now(),
        created_at: now.clone(),
        updated_at: now,
    };
    let body = domain_json(&rec);
    d.domains.insert(id, rec);
    body
}

/// Checks DNS and marks the domain verified when it is in place: `{success, domain}`.
fn verify_domain(d: &mut Data, domain_id: &str) -> Value {
    let now = Instant::now();
    let ready = d
        .domains
        .get(domain_id)
        .is_some_and(|x| d.dns_in_place(x, now));
    let Some(x) = d.domains.get_mut(domain_id) else {
        return json!({ "success": false, "domain": Value::Null });
    };
    if ready && !x.verified {
        x.verified = true;
        x.updated_at = iso(jiff::Timestamp::now());
    }
    json!({ "success": ready, "domain": domain_json(x) })
}

async fn list_project_domains(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let domains: Vec<Value> = d
        .domains
        .values()
        .filter(|x| x.owned_by(Owner::Project(&id)))
        .map(domain_json)
        .collect();
    ok_json(json!({ "domains": domains }))
}

async fn cdn_records(State(sim): State<SpheronSim>, headers: HeaderMap) -> ApiResult<Response> {
    // The project id is required in the path but not used (SDK comment).
    drop(sim.begin(&headers)?);
    ok_json(json!({ "records": { "recordIpv4V2": CDN_IPV4, "recordCnameV2": CDN_CNAME } }))
}

async fn get_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    ok_json(json!({ "domain": domain_json(&d.domains[&did]) }))
}

async fn create_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let p = d.project(&scope, &id)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let name = domain_name(&f)?;
    let kind = f.one_of("type", DOMAIN_TYPES)?;
    let link = f.opt_str("link")?.unwrap_or_default();
    let envs = f.strings("deploymentEnvironments")?;
    let env_ids = resolve_envs(p, &envs, "deploymentEnvironments")?;
    unique_domain(&d, &name, None)?;
    let body = insert_domain(&mut d, false, &id, name, kind, link, env_ids);
    ok_json(json!({ "domain": body }))
}

async fn update_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let p = d.project(&scope, &id)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let name = domain_name(&f)?;
    let link = f.opt_str("link")?;
    let env_ids = match f.get("deploymentEnvironments") {
        Some(_) => Some(resolve_envs(
            p,
            &f.strings("deploymentEnvironments")?,
            "deploymentEnvironments",
        )?),
        None => None,
    };
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    unique_domain(&d, &name, Some(&did))?;
    let Some(x) = d.domains.get_mut(&did) else {
        return Err(not_found("Domain"));
    };
    if x.name != name {
        // Inferred: a new name needs its own DNS check.
        x.name = name;
        x.verified = false;
        x.created = Instant::now();
    }
    if let Some(l) = link {
        x.link = l;
    }
    if let Some(e) = env_ids {
        x.env_ids = e;
    }
    x.updated_at = iso(jiff::Timestamp::now());
    ok_json(json!({ "domain": domain_json(x) }))
}

async fn verify_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    ok_json(verify_domain(&mut d, &did))
}

async fn delete_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    d.domains.remove(&did);
    ok_json(json!({ "message": "Domain deleted" }))
}

// ----- site deployments --------------------------------------------------------------------------

/// Takes the failure and authorization knobs for one new deployment.
fn next_outcome(d: &mut Data) -> (Outcome, bool) {
    let outcome = match d.fail_next.pop_front() {
        Some((Ending::Failed, r)) => Outcome::Failed(r),
        Some((Ending::TimedOut, r)) => Outcome::TimedOut(r),
        None => Outcome::Deployed,
    };
    let needs_auth = d.require_auth > 0;
    d.require_auth = d.require_auth.saturating_sub(1);
    (outcome, needs_auth)
}

/// The deployment's environment (by branch) and its variables merged under the request's.
fn env_for(
    p: &ProjectRec,
    branch: &str,
    request_env: &BTreeMap<String, String>,
) -> (Option<String>, BTreeMap<String, String>) {
    let env = p
        .envs
        .iter()
        .find(|e| e.branches.iter().any(|b| b == branch));
    let mut vars: BTreeMap<String, String> = env
        .map(|e| {
            p.vars
                .iter()
                .filter(|v| v.env_ids.contains(&e.id))
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    vars.extend(request_env.clone());
    (env.map(|e| e.name.clone()), vars)
}

fn started_json(d: &Data, dep_id: &str, message: &str) -> Value {
    let dep = &d.deployments[dep_id];
    json!({ "success": true, "message": message, "topic": dep.topic,
        "deploymentId": dep.id, "projectId": dep.project_id,
        "deployment": deployment_json(d, dep, Instant::now()) })
}

fn build_configuration(f: &Fields<'_>) -> ApiResult<Value> {
    let c = f
        .object("configuration")?
        .ok_or_else(|| bad("configuration must be an object"))?;
    let c = Fields::new(c, "configuration.");
    Ok(json!({
        "buildCommand": c.opt_str("buildCommand")?.unwrap_or_default(),
        "installCommand": c.opt_str("installCommand")?.unwrap_or_default(),
        "workspace": c.opt_str("workspace")?.unwrap_or_default(),
        "publishDir": c.opt_str("publishDir")?.unwrap_or_default(),
        "framework": c.one_of("framework", FRAMEWORKS)?,
        "nodeVersion": c.one_of("nodeVersion", NODE_VERSIONS)?,
    }))
}

async fn start_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let org = f.str("organizationId")?;
    d.org(&scope, &org)?;
    let git_url = normalize_git_url(&f.str("gitUrl")?);
    let repo = f.str("repoName")?;
    let branch = f.str("branch")?;
    let protocol = f.one_of("protocol", PROTOCOLS)?;
    let provider = f.one_of("provider", PROVIDERS)?;
    f.bool("createDefaultWebhook")?;
    let mut configuration = build_configuration(&f)?;
    let mut request_env = BTreeMap::new();
    if let Some(env) = f.object("env")? {
        for (k, v) in env {
            let v = v
                .as_str()
                .ok_or_else(|| bad(format!("env.{k} must be a string")))?;
            request_env.insert(k.clone(), v.to_owned());
        }
    }
    let topic = f
        .opt_str("uniqueTopicId")?
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| fake_hash(&[&git_url, &branch, &d.next_id.to_string()], 32));
    if d.overdue(&org) {
        // Inferred: the balance check answers 400 with a balance message.
        return Err(bad(OVERDUE_MESSAGE));
    }
    let existing = d
        .projects
        .values()
        .find(|p| p.org_id == org && p.url == git_url)
        .map(|p| (p.id.clone(), p.archived));
    let project_id = match existing {
        Some((_, true)) => {
            return Err(bad(
                "The project is archived; set its state to MAINTAINED to deploy it",
            ))
        }
        Some((id, false)) => {
            let now = iso(jiff::Timestamp::now());
            if let Some(p) = d.projects.get_mut(&id) {
                // A deployment carries the build settings; the project keeps the latest.
                configuration["_id"] = p.configuration["_id"].clone();
                p.configuration = configuration.clone();
                p.updated_at = now;
            }
            id
        }
        None => {
            let id = d.next();
            let prod = d.next();
            let dev = d.next();
            let config_id = d.next();
            configuration["_id"] = json!(config_id);
            let now = iso(jiff::Timestamp::now());
            d.projects.insert(
                id.clone(),
                ProjectRec {
                    id: id.clone(),
                    org_id: org.clone(),
                    name: repo.clone(),
                    url: git_url.clone(),
                    provider,
                    archived: false,
                    configuration: configuration.clone(),
                    hook_id: fake_hash(&[&id, "hook"], 8),
                    envs: vec![
                        EnvRec {
                            id: prod,
                            name: "Production".into(),
                            branches: vec![branch.clone()],
                            protocol: protocol.clone(),
                        },
                        EnvRec {
                            id: dev,
                            name: "Development".into(),
                            branches: vec![],
                            protocol: protocol.clone(),
                        },
                    ],
                    vars: vec![],
                    created_at: now.clone(),
                    updated_at: now,
                },
            );
            id
        }
    };
    let head = d
        .heads
        .get(&(git_url.clone(), branch.clone()))
        .copied()
        .unwrap_or(0);
    let commit_id = fake_hash(&[&git_url, &branch, &head.to_string()], 40);
    let (env_name, env) = env_for(&d.projects[&project_id], &branch, &request_env);
    let (outcome, needs_auth) = next_outcome(&mut d);
    let id = d.next();
    let dep = SiteDeployment {
        id: id.clone(),
        project_id,
        branch,
        commit_id,
        protocol,
        env,
        request_env,
        configuration,
        topic,
        env_name,
        created: Instant::now(),
        started: Instant::now(),
        created_ts: jiff::Timestamp::now(),
        step: d.step,
        outcome,
        needs_auth,
        authorized: false,
        canceled_at: None,
    };
    d.deployments.insert(id.clone(), dep);
    ok_json(started_json(&d, &id, "Deployment started"))
}

async fn get_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let dep = d.deployment(&scope, &id)?;
    ok_json(json!({ "deployment": deployment_json(&d, dep, Instant::now()) }))
}

async fn authorize_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let status = d.deployment(&scope, &id)?.status(Instant::now());
    if status != "AuthorizationNeeded" {
        return Err(bad(format!(
            "Deployment does not need authorization (status {status})"
        )));
    }
    if let Some(dep) = d.deployments.get_mut(&id) {
        dep.authorized = true;
        dep.started = Instant::now();
    }
    ok_json(started_json(&d, &id, "Deployment authorized"))
}

async fn cancel_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let now = Instant::now();
    let status = d.deployment(&scope, &id)?.status(now);
    if !matches!(
        status,
        "PreQueue" | "Queued" | "Pending" | "AuthorizationNeeded"
    ) {
        return Err(bad(format!(
            "Deployment can't be canceled in status {status}"
        )));
    }
    if let Some(dep) = d.deployments.get_mut(&id) {
        dep.canceled_at = Some(now);
    }
    ok_json(json!({ "message": "Deployment is being canceled", "canceled": true, "killing": true }))
}

async fn redeploy_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let old = d.deployment(&scope, &id)?;
    let status = old.status(Instant::now());
    if !matches!(status, "Deployed" | "Failed") {
        return Err(bad(format!(
            "Only successful or failed deployments can be redeployed (status {status})"
        )));
    }
    let p = &d.projects[&old.project_id];
    if d.overdue(&p.org_id) {
        return Err(bad(OVERDUE_MESSAGE));
    }
    // The same commit with the latest environment variables [DOC managing-deployments.md].
    let (env_name, env) = env_for(p, &old.branch, &old.request_env);
    let template = (
        old.project_id.clone(),
        old.branch.clone(),
        old.commit_id.clone(),
        old.protocol.clone(),
        old.request_env.clone(),
        old.configuration.clone(),
    );
    let (outcome, needs_auth) = next_outcome(&mut d);
    let new_id = d.next();
    let topic = fake_hash(&[&new_id, "topic"], 32);
    let (project_id, branch, commit_id, protocol, request_env, configuration) = template;
    let dep = SiteDeployment {
        id: new_id.clone(),
        project_id,
        branch,
        commit_id,
        protocol,
        env,
        request_env,
        configuration,
        topic,
        env_name,
        created: Instant::now(),
        started: Instant::now(),
        created_ts: jiff::Timestamp::now(),
        step: d.step,
        outcome,
        needs_auth,
        authorized: false,
        canceled_at: None,
    };
    d.deployments.insert(new_id.clone(), dep);
    ok_json(started_json(&d, &new_id, "Redeployment started"))
}

// ----- compute ------------------------------------------------------------------------------------

/// Validates `services` and returns them in the form deployments report.
fn services(
    f: &Fields<'_>,
    instance_key: &str,
    region: &str,
    scalable: bool,
) -> ApiResult<Vec<Value>> {
    let items = f.array("services")?;
    if items.is_empty() {
        return Err(bad("services should not be empty"));
    }
    let mut out: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("services.{i}.");
        let o = item
            .as_object()
            .ok_or_else(|| bad(format!("services.{i} must be an object")))?;
        let s = Fields::new(o, &prefix);
        let name = s.str("name")?;
        if name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(format!(
                "{prefix}name must contain only lower-case letters, digits and -"
            )));
        }
        if out.iter().any(|x| x["name"] == name.as_str()) {
            return Err(bad(format!(
                "{prefix}name must be unique: {name} is given twice"
            )));
        }
        let image = s.str("image")?;
        let tag = s.str("tag")?;
        let count = s.uint("serviceCount", 1, MAX_SERVICE_COUNT)?;
        let build_image = s.opt_bool("buildImage")?.unwrap_or(false);
        let mut ports = Vec::new();
        for (j, port) in s.array("ports")?.iter().enumerate() {
            let po = port
                .as_object()
                .ok_or_else(|| bad(format!("{prefix}ports.{j} must be an object")))?;
            let pf = Fields::new(po, &format!("{prefix}ports.{j}."));
            let mut pv = json!({ "containerPort": pf.uint("containerPort", 1, 65535)?,
                "exposedPort": pf.uint("exposedPort", 1, 65535)? });
            if let Some(g) = pf.opt_bool("global")? {
                pv["global"] = json!(g);
            }
            if let Some(t) = pf.opt_str("exposeTo")? {
                pv["exposeTo"] = json!(t);
            }
            ports.push(pv);
        }
        let mut env = Vec::new();
        for (j, e) in s.array("env")?.iter().enumerate() {
            let eo = e
                .as_object()
                .ok_or_else(|| bad(format!("{prefix}env.{j} must be an object")))?;
            let ef = Fields::new(eo, &format!("{prefix}env.{j}."));
            let value = ef.str("value")?;
            if !value.contains('=') {
                return Err(bad(format!(
                    "{prefix}env.{j}.value must be in the form KEY=VALUE"
                )));
            }
            env.push(
                json!({ "value": value, "isSecret": ef.opt_bool("isSecret")?.unwrap_or(false) }),
            );
        }
        let command = s.strings("command")?;
        let args = s.strings("args")?;
        let custom = s.object("customServiceSpecs")?.cloned();
        let plan_name = s.opt_str("akashMachineImageName")?.unwrap_or_default();
        let plan = PLANS.iter().find(|p| p.name == plan_name);
        if plan.is_none() && custom.is_none() {
            return Err(bad(format!(
                "{prefix}akashMachineImageName must name an available plan ({}), or customServiceSpecs must be given",
                PLANS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            )));
        }
        let health = match s.object("healthCheck")? {
            Some(h) => {
                let hf = Fields::new(h, &format!("{prefix}healthCheck."));
                Some(json!({ "path": hf.str("path")?, "port": hf.uint("port", 1, 65535)? }))
            }
            None => None,
        };
        let autoscaling = s.object("autoscalingRules")?.cloned();
        let c = custom.clone().unwrap_or_default();
        let agreed = json!({
            "machineId": fake_hash(&[&plan_name], 24),
            "machineType": if plan_name.is_empty() { "custom" } else { plan_name.as_str() },
            "agreementDate": jiff::Timestamp::now().as_millisecond(),
            "cpu": c.get("cpu").cloned().unwrap_or_else(|| json!(plan.map_or(1.0, |p| p.cpu))),
            "memory": c.get("memory").cloned().unwrap_or_else(|| json!(plan.map_or("1Gi", |p| p.memory))),
            "storage": c.get("storage").cloned().unwrap_or_else(|| json!(plan.map_or("5Gi", |p| p.storage))),
            "maxPricePerBlock": 10, "leasePricePerBlock": 5, "defaultDailyTopUp": 1,
            "topupThreashold": 0.5 });
        out.push(json!({
            "name": name, "image": image, "tag": tag, "serviceCount": count,
            "buildImage": build_image, "ports": ports, "env": env, "command": command,
            "args": args, "region": region, "customServiceSpecs": custom,
            "agreedMachineImage": agreed,
            "urlPrewiew": format!("{name}-{}.provider.sim.spheron.invalid", fake_hash(&[instance_key, &name], 8)),
            "scalable": scalable, "autoscalingRules": autoscaling,
            "healthCheck": health, "template": Value::Null,
        }));
    }
    Ok(out)
}

fn new_compute_deployment(
    d: &mut Data,
    instance_id: &str,
    kind: &'static str,
    services: Vec<Value>,
    topic: String,
) -> String {
    let id = d.next();
    let fail = d.compute_fail_next.pop_front();
    let rec = ComputeDeploymentRec {
        id: id.clone(),
        instance_id: instance_id.to_owned(),
        kind,
        services,
        started: Instant::now(),
        created_ts: jiff::Timestamp::now(),
        step: d.compute_step,
        fail,
        topic,
    };
    d.compute_deployments.insert(id.clone(), rec);
    if let Some(i) = d.instances.get_mut(instance_id) {
        i.deployments.push(id.clone());
        i.updated_at = iso(jiff::Timestamp::now());
    }
    id
}

async fn create_instance(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let org = f.str("organizationId")?;
    d.org(&scope, &org)?;
    f.one_of("computeProvider", &["DOCKERHUB"])?;
    let project_name = f.str("computeProjectName")?;
    let description = f.opt_str("computeProjectDescription")?.unwrap_or_default();
    let region = f.str("region")?;
    let scalable = f.bool("scalable")?;
    let instance_id = d.next();
    let services = services(&f, &instance_id, &region, scalable)?;
    let topic = f
        .opt_str("uniqueTopicId")?
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| fake_hash(&[&instance_id, "topic"], 32));
    if d.overdue(&org) {
        return Err(bad(OVERDUE_MESSAGE));
    }
    let now = iso(jiff::Timestamp::now());
    let existing = d
        .compute_projects
        .values()
        .find(|p| p.org_id == org && p.name == project_name)
        .map(|p| p.id.clone());
    let project_id = match existing {
        Some(id) => id,
        None => {
            let id = d.next();
            d.compute_projects.insert(
                id.clone(),
                ComputeProjectRec {
                    id: id.clone(),
                    org_id: org.clone(),
                    name: project_name.clone(),
                    description,
                    created_at: now.clone(),
                },
            );
            id
        }
    };
    d.instances.insert(
        instance_id.clone(),
        InstanceRec {
            id: instance_id.clone(),
            org_id: org,
            project_id: project_id.clone(),
            // Inferred: the instance is named after its compute project.
            name: project_name,
            region,
            scalable,
            deployments: Vec::new(),
            closed: false,
            created_at: now.clone(),
            updated_at: now,
        },
    );
    let dep = new_compute_deployment(&mut d, &instance_id, "DEPLOY", services, topic.clone());
    ok_json(
        json!({ "computeProjectId": project_id, "computeInstanceId": instance_id,
        "computeDeploymentId": dep, "topic": topic }),
    )
}

async fn get_instance(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let i = d.instance(&scope, &id)?;
    ok_json(
        json!({ "success": true, "instance": instance_json(&d, i, Instant::now(), false),
        "topupReport": { "dailyUsage": 0, "usedTillNow": 0 } }),
    )
}

async fn list_instances(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Query(q): Q,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let org = q
        .get("organizationId")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("organizationId must be a string"))?;
    d.org(&scope, org)?;
    let paging = paging(&q)?;
    let state = q.get("state").filter(|s| !s.is_empty());
    let project = q.get("computeProjectId").filter(|s| !s.is_empty());
    let now = Instant::now();
    let items = page(
        d.instances
            .values()
            .filter(|i| &i.org_id == org)
            .filter(|i| project.is_none_or(|p| &i.project_id == p))
            .filter(|i| state.is_none_or(|s| d.instance_state(i, now) == s))
            .map(|i| instance_json(&d, i, now, true)),
        paging,
    );
    ok_json(json!({ "instances": items }))
}

async fn update_instance(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    let now = Instant::now();
    let i = d.instance(&scope, &id)?;
    let (instance_org, region, scalable, closed, project_id) = (
        i.org_id.clone(),
        i.region.clone(),
        i.scalable,
        i.closed,
        i.project_id.clone(),
    );
    let busy = i
        .deployments
        .last()
        .and_then(|l| d.compute_deployments.get(l))
        .is_some_and(|c| c.in_progress(now));
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let org = f.str("organizationId")?;
    d.org(&scope, &org)?;
    if org != instance_org {
        return Err(bad(
            "organizationId must be the organization of the instance",
        ));
    }
    let services = services(&f, &id, &region, scalable)?;
    if closed {
        return Err(bad("The instance is closed and cannot be updated"));
    }
    if busy {
        // Inferred: one deployment at a time per instance.
        return Err(ApiError::Conflict(
            "A deployment of this instance is still in progress".to_owned(),
        ));
    }
    if d.overdue(&org) {
        return Err(bad(OVERDUE_MESSAGE));
    }
    let topic = f
        .opt_str("uniqueTopicId")?
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| fake_hash(&[&id, &d.next_id.to_string()], 32));
    let dep = new_compute_deployment(&mut d, &id, "UPDATE", services, topic.clone());
    ok_json(
        json!({ "computeProjectId": project_id, "computeInstanceId": id,
        "computeDeploymentId": dep, "topic": topic }),
    )
}

async fn close_instance(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let now = iso(jiff::Timestamp::now());
    if let Some(i) = d.instances.get_mut(&id) {
        // Inferred: closing a closed instance is not an error.
        i.closed = true;
        i.updated_at = now;
    }
    ok_json(json!({ "message": "Instance closed", "success": true }))
}

fn remove_instance(d: &mut Data, id: &str) {
    if let Some(i) = d.instances.remove(id) {
        for dep in i.deployments {
            d.compute_deployments.remove(&dep);
        }
    }
    d.domains.retain(|_, x| !x.owned_by(Owner::Instance(id)));
}

async fn delete_instance(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    remove_instance(&mut d, &id);
    ok_json(json!({ "message": "Instance deleted", "success": true }))
}

async fn get_compute_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let c = d
        .compute_deployments
        .get(&id)
        .ok_or_else(|| not_found("Compute deployment"))?;
    d.instance(&scope, &c.instance_id)?;
    ok_json(
        json!({ "deployment": compute_deployment_json(&d, c, Instant::now()),
        "liveLogs": [] }),
    )
}

async fn list_instance_domains(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let domains: Vec<Value> = d
        .domains
        .values()
        .filter(|x| x.owned_by(Owner::Instance(&id)))
        .map(domain_json)
        .collect();
    ok_json(json!({ "domains": domains }))
}

async fn create_instance_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let name = domain_name(&f)?;
    let kind = f.one_of("type", DOMAIN_TYPES)?;
    let link = f
        .opt_str("link")?
        .ok_or_else(|| bad("link must be a string"))?;
    unique_domain(&d, &name, None)?;
    let body = insert_domain(&mut d, true, &id, name, kind, link, Vec::new());
    ok_json(json!({ "domain": body }))
}

async fn update_instance_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let o = parse_body(&body)?;
    let f = Fields::new(&o, "");
    let name = domain_name(&f)?;
    let kind = f.one_of("type", DOMAIN_TYPES)?;
    let link = f.opt_str("link")?;
    let did = d.domain_id(Owner::Instance(&id), &domain)?;
    unique_domain(&d, &name, Some(&did))?;
    let Some(x) = d.domains.get_mut(&did) else {
        return Err(not_found("Domain"));
    };
    if x.name != name {
        x.name = name;
        x.verified = false;
        x.created = Instant::now();
    }
    x.kind = kind;
    if let Some(l) = link {
        x.link = l;
    }
    x.updated_at = iso(jiff::Timestamp::now());
    ok_json(json!({ "domain": domain_json(x) }))
}

async fn verify_instance_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let did = d.domain_id(Owner::Instance(&id), &domain)?;
    // Inferred: the same `{success, domain}` as a project domain's verify.
    ok_json(verify_domain(&mut d, &did))
}

async fn delete_instance_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.instance(&scope, &id)?;
    let did = d.domain_id(Owner::Instance(&id), &domain)?;
    d.domains.remove(&did);
    ok_json(json!({ "message": "Domain deleted" }))
}

async fn get_compute_project(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    ok_json(compute_project_json(d.compute_project(&scope, &id)?))
}

async fn delete_compute_project(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.compute_project(&scope, &id)?;
    let instances: Vec<String> = d
        .instances
        .values()
        .filter(|i| i.project_id == id)
        .map(|i| i.id.clone())
        .collect();
    if instances.iter().any(|i| !d.instances[i].closed) {
        return Err(bad(
            "Close every instance of the compute project before deleting it",
        ));
    }
    for i in instances {
        remove_instance(&mut d, &i);
    }
    d.compute_projects.remove(&id);
    ok_json(json!({ "message": "Compute project deleted" }))
}

// ----- control routes -------------------------------------------------------------------------------

/// Answers a control route: the JSON on success, `400 {error}` otherwise (like the framework's).
fn admin_answer(result: Result<Value, String>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    }
}

fn admin_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    parse_body(body).map_err(|_| "the body must be a JSON object".to_owned())
}

fn count_of(o: &Map<String, Value>) -> Result<u32, String> {
    match o.get("count") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| "count must be a non-negative integer".to_owned()),
    }
}

async fn admin_tokens(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        let token = o
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("token (a non-empty string) is required")?;
        let name = o
            .get("organization")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("organization (a name) is required")?;
        let id = sim.add_token(token, name);
        Ok(json!({ "organizationId": id, "organizationName": name }))
    })())
}

async fn admin_timing(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        // Absent: unchanged; `null`: none (only meaningful for the DNS delay).
        let ms = |key: &str| -> Result<Option<Option<Duration>>, String> {
            match o.get(key) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(Some(Duration::from_millis(n))))
                    .ok_or_else(|| format!("{key} must be a number of milliseconds")),
            }
        };
        let step = ms("deploymentStepMs")?;
        let compute = ms("computeStepMs")?;
        let dns = ms("dnsDelayMs")?;
        let mut d = sim.data();
        if let Some(Some(s)) = step {
            d.step = s;
        }
        if let Some(Some(s)) = compute {
            d.compute_step = s;
        }
        if let Some(delay) = dns {
            d.dns_delay = delay;
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(json!({ "deploymentStepMs": millis(d.step),
            "computeStepMs": millis(d.compute_step), "dnsDelayMs": d.dns_delay.map(millis) }))
    })())
}

async fn admin_fail_next(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        let ending = match o.get("status").and_then(Value::as_str).unwrap_or("Failed") {
            "Failed" => Ending::Failed,
            "TimedOut" => Ending::TimedOut,
            _ => return Err("status must be Failed or TimedOut".to_owned()),
        };
        let reason = o
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("Build failed (simulated)")
            .to_owned();
        for _ in 0..count_of(&o)? {
            sim.fail_next_deployment(ending, &reason);
        }
        Ok(json!({ "queued": sim.data().fail_next.len() }))
    })())
}

async fn admin_require_authorization(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        sim.require_authorization_next(count_of(&o)?);
        Ok(json!({ "queued": sim.data().require_auth }))
    })())
}

async fn admin_compute_fail_next(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        let reason = o
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("No provider could run the services (simulated)")
            .to_owned();
        for _ in 0..count_of(&o)? {
            sim.fail_next_compute_deployment(&reason);
        }
        Ok(json!({ "queued": sim.data().compute_fail_next.len() }))
    })())
}

async fn admin_dns_ready(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("name (a domain name) is required")?;
        sim.set_dns_ready(name);
        Ok(json!({ "name": name.to_ascii_lowercase(), "dnsReady": true }))
    })())
}

async fn admin_overdue(State(sim): State<SpheronSim>, body: Bytes) -> Response {
    admin_answer((|| {
        let o = admin_body(&body)?;
        let org = o
            .get("organizationId")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_ORGANIZATION_ID)
            .to_owned();
        let overdue = o
            .get("overdue")
            .and_then(Value::as_bool)
            .ok_or("overdue (true or false) is required")?;
        if sim.set_overdue(&org, overdue) {
            Ok(json!({ "organizationId": org, "overdue": overdue }))
        } else {
            Err("no such organization".to_owned())
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PlatformDefaults, PlatformType};
    use crate::core::budget::RateBudget;
    use crate::core::seam::{Connection, Credential, ErrorKind, Platform};
    use crate::platform::spheron::client::*;
    use crate::sim::{bind, SimServer, SimStats};

    const STEP: Duration = Duration::from_millis(80);

    struct Harness {
        sim: SpheronSim,
        base: String,
        _server: SimServer,
    }

    async fn harness(config: SimConfig) -> Harness {
        let sim = SpheronSim::new(&config);
        sim.set_step_time(STEP);
        sim.set_compute_step_time(STEP);
        let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
            .await
            .expect("bind");
        Harness {
            sim,
            base: server.base_url(),
            _server: server,
        }
    }

    async fn default_harness() -> Harness {
        harness(SimConfig::default()).await
    }

    fn connection(base: &str, token: &str, org: Option<&str>) -> Connection {
        Connection {
            platform: PlatformType::Spheron,
            endpoint: base.to_owned(),
            credential: Credential::new(token),
            ca_pem: None,
            defaults: PlatformDefaults {
                organization_id: org.map(str::to_owned),
                ..Default::default()
            },
            budget: Arc::new(RateBudget::new(60_000, 1000)),
            metrics: crate::core::metrics::Metrics::new(),
            dry_run: None,
        }
    }

    fn client_with(h: &Harness, token: &str, org: Option<&str>) -> SpheronClient {
        SpheronClient::new(connection(&h.base, token, org)).expect("client")
    }

    fn client(h: &Harness) -> SpheronClient {
        client_with(h, crate::sim::DEFAULT_TOKEN, None)
    }

    async fn control(h: &Harness, path: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", h.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.expect("json")
    }

    fn start_body(repo: &str) -> StartDeployment {
        StartDeployment {
            organization_id: DEFAULT_ORGANIZATION_ID.into(),
            git_url: format!("https://github.com/acme/{repo}"),
            repo_name: repo.into(),
            branch: "main".into(),
            protocol: "ipfs".into(),
            provider: "GITHUB".into(),
            create_default_webhook: false,
            configuration: BuildConfiguration {
                build_command: "npm run build".into(),
                install_command: "npm ci".into(),
                workspace: String::new(),
                publish_dir: "build".into(),
                framework: "react".into(),
                node_version: "V_16".into(),
            },
            env: None,
            unique_topic_id: None,
        }
    }

    fn service(name: &str, count: u32) -> ComputeService {
        ComputeService {
            name: name.into(),
            image: "nginx".into(),
            tag: "1.27".into(),
            private_image_config: None,
            service_count: count,
            build_image: false,
            ports: vec![Port {
                container_port: 80,
                exposed_port: 80,
                global: None,
                expose_to: None,
            }],
            env: vec![EnvEntry::new("MODE", "prod", false)],
            command: vec![],
            args: vec![],
            akash_machine_image_name: PLANS[0].name.into(),
            custom_service_specs: None,
            health_check: Some(HealthCheck {
                path: "/".into(),
                port: 80,
            }),
            autoscaling_rules: None,
            template_id: None,
        }
    }

    fn create_body(project: &str, services: Vec<ComputeService>) -> CreateComputeInstance {
        CreateComputeInstance {
            organization_id: DEFAULT_ORGANIZATION_ID.into(),
            unique_topic_id: format!("topic-{project}"),
            compute_provider: "DOCKERHUB".into(),
            compute_project_name: project.into(),
            compute_project_description: None,
            region: "any".into(),
            scalable: true,
            services,
        }
    }

    /// Polls a site deployment to its end; the distinct statuses seen, in order.
    async fn until_terminal(c: &SpheronClient, id: &str) -> (Vec<DeploymentStatus>, Deployment) {
        let mut seen: Vec<DeploymentStatus> = Vec::new();
        for _ in 0..1000 {
            let d = c.get_deployment(id).await.expect("get").expect("exists");
            if seen.last() != Some(&d.status) {
                seen.push(d.status.clone());
            }
            if d.status.is_terminal() {
                return (seen, d);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("deployment {id} never ended: {seen:?}");
    }

    async fn until_compute_terminal(c: &SpheronClient, id: &str) -> ComputeDeployment {
        for _ in 0..1000 {
            let d = c
                .get_compute_deployment(id)
                .await
                .expect("get")
                .expect("exists");
            if d.status.is_terminal() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("compute deployment {id} never ended");
    }

    #[tokio::test]
    async fn site_deployment_goes_through_every_status_to_deployed() {
        let h = default_harness().await;
        // Long phases, so a slow poll on a busy machine still sees each one.
        h.sim.set_step_time(Duration::from_millis(150));
        let c = client(&h);
        let started = c
            .start_deployment(&start_body("site"))
            .await
            .expect("start");
        assert!(started.success);
        let project_id = started.project_id.clone().expect("project id");
        let first = started
            .deployment
            .expect("the start answer embeds the deployment");
        assert_eq!(first.status, DeploymentStatus::PreQueue);
        assert_eq!(first.project.as_deref(), Some(project_id.as_str()));
        let (seen, done) = until_terminal(&c, &started.deployment_id).await;
        assert_eq!(
            seen,
            vec![
                DeploymentStatus::PreQueue,
                DeploymentStatus::Queued,
                DeploymentStatus::Pending,
                DeploymentStatus::Deployed
            ]
        );
        assert!(done.status.is_success());
        assert!(done
            .site_preview
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")));
        assert_eq!(
            done.deployment_environment_name.as_deref(),
            Some("Production")
        );
        assert_eq!(done.failure_reason(), None);
        assert_eq!(done.commit_id.as_deref().map(str::len), Some(40));

        // The deployment created the project (there is no create endpoint); a second start of
        // the same repository reuses it, and a new commit is built.
        let p = c
            .get_project(&project_id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (p.name.as_str(), p.state.clone()),
            ("site", ProjectState::Maintained)
        );
        assert_eq!(p.organization.as_deref(), Some(DEFAULT_ORGANIZATION_ID));
        assert_eq!(
            p.configuration.map(|c| c.framework),
            Some("react".to_string())
        );
        let pushed = h
            .sim
            .push_commit("https://github.com/acme/site.git", "main");
        let again = c
            .start_deployment(&start_body("site"))
            .await
            .expect("start");
        assert_eq!(again.project_id.as_deref(), Some(project_id.as_str()));
        let (_, second) = until_terminal(&c, &again.deployment_id).await;
        assert_eq!(second.commit_id.as_deref(), Some(pushed.as_str()));
        let all = c
            .list_project_deployments(&project_id, None)
            .await
            .expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, again.deployment_id, "newest first");
        assert!(c
            .get_deployment("65f0ffffffffffffffffffff")
            .await
            .expect("get")
            .is_none());
    }

    #[tokio::test]
    async fn failed_and_timed_out_deployments_explain_why() {
        let h = default_harness().await;
        let c = client(&h);
        h.sim
            .fail_next_deployment(Ending::Failed, "npm ERR! missing script: build");
        let s = c.start_deployment(&start_body("web")).await.expect("start");
        let (seen, failed) = until_terminal(&c, &s.deployment_id).await;
        assert_eq!(seen.last(), Some(&DeploymentStatus::Failed));
        assert_eq!(
            failed.failure_reason().as_deref(),
            Some("Failed: npm ERR! missing script: build")
        );
        assert!(!failed.status.is_success());

        // Through the control route: the next one times out.
        let queued = control(
            &h,
            "/_sim/deployments/fail-next",
            json!({"status": "TimedOut", "reason": "build exceeded 15 minutes"}),
        )
        .await;
        assert_eq!(queued["queued"], 1);
        let project = s.project_id.clone().expect("project");
        let env = c
            .add_environment_variables(
                &project,
                &[NewEnvironmentVariable {
                    name: "API_URL".into(),
                    value: "https://api.acme.dev".into(),
                    environments: vec!["Production".into()],
                }],
            )
            .await
            .expect("add variable");
        assert_eq!(env.len(), 1);
        // A redeploy of the failed deployment: same commit, latest variables.
        let r = c.redeploy(&s.deployment_id).await.expect("redeploy");
        let (_, timed_out) = until_terminal(&c, &r.deployment_id).await;
        assert_eq!(timed_out.status, DeploymentStatus::TimedOut);
        assert!(timed_out
            .failure_reason()
            .is_some_and(|m| m.contains("exceeded 15 minutes")));
        assert_eq!(timed_out.commit_id, failed.commit_id);
        assert_eq!(
            h.sim.data().deployments[&r.deployment_id]
                .env
                .get("API_URL")
                .map(String::as_str),
            Some("https://api.acme.dev")
        );
        assert_eq!(
            c.list_project_deployments(&project, Some(&DeploymentStatus::Failed))
                .await
                .expect("filtered")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn authorization_and_cancel_paths() {
        let h = default_harness().await;
        let c = client(&h);
        h.sim.require_authorization_next(1);
        let s = c
            .start_deployment(&start_body("gated"))
            .await
            .expect("start");
        tokio::time::sleep(STEP * 4).await;
        let d = c
            .get_deployment(&s.deployment_id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(d.status, DeploymentStatus::AuthorizationNeeded);
        assert!(d.status.needs_authorization() && !d.status.is_terminal());
        let a = c
            .authorize_deployment(&s.deployment_id)
            .await
            .expect("authorize");
        assert_eq!(a.deployment_id, s.deployment_id);
        let (seen, done) = until_terminal(&c, &s.deployment_id).await;
        assert_eq!(seen.first(), Some(&DeploymentStatus::PreQueue), "{seen:?}");
        assert!(done.status.is_success());
        let e = c
            .authorize_deployment(&s.deployment_id)
            .await
            .expect_err("not needed");
        assert_eq!(e.kind, ErrorKind::Invalid);

        // Cancel: Killing, then Canceled.
        let s = c
            .start_deployment(&start_body("gated"))
            .await
            .expect("start");
        let e = c
            .redeploy(&s.deployment_id)
            .await
            .expect_err("still running");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("redeployed"), "{}", e.message);
        let canceled = c.cancel_deployment(&s.deployment_id).await.expect("cancel");
        assert!(canceled.canceled && canceled.killing);
        let (seen, done) = until_terminal(&c, &s.deployment_id).await;
        assert_eq!(
            seen,
            vec![DeploymentStatus::Killing, DeploymentStatus::Canceled]
        );
        assert!(!done.status.is_success());
        assert!(done.failure_reason().is_some());
        let e = c
            .cancel_deployment(&s.deployment_id)
            .await
            .expect_err("ended");
        assert_eq!(e.kind, ErrorKind::Invalid);

        // An authorization-needed deployment can be canceled too.
        control(
            &h,
            "/_sim/deployments/require-authorization",
            json!({"count": 1}),
        )
        .await;
        let s = c
            .start_deployment(&start_body("gated"))
            .await
            .expect("start");
        c.cancel_deployment(&s.deployment_id).await.expect("cancel");
        let (_, done) = until_terminal(&c, &s.deployment_id).await;
        assert_eq!(done.status, DeploymentStatus::Canceled);
    }

    #[tokio::test]
    async fn projects_are_paged_and_archived() {
        let h = default_harness().await;
        let c = client(&h);
        let n = PAGE_LIMIT as usize + 5;
        for i in 0..n {
            c.start_deployment(&start_body(&format!("site-{i:02}")))
                .await
                .expect("start");
        }
        let all = c
            .list_projects(DEFAULT_ORGANIZATION_ID, None)
            .await
            .expect("list");
        assert_eq!(all.len(), n, "every page was read");
        let names: BTreeSet<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), n, "no project twice");
        let tail = c
            .list_projects_page(DEFAULT_ORGANIZATION_ID, PAGE_LIMIT, PAGE_LIMIT, None)
            .await
            .expect("page");
        assert_eq!(tail.len(), 5);
        let e = c
            .list_projects_page(DEFAULT_ORGANIZATION_ID, 0, 101, None)
            .await
            .expect_err("limit too big");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("limit"));

        let victim = all[0].id.clone();
        assert_eq!(
            c.archive_project(&victim).await.expect("archive"),
            Deleted::Done
        );
        let archived = c
            .list_projects(DEFAULT_ORGANIZATION_ID, Some(&ProjectState::Archived))
            .await
            .expect("archived");
        assert_eq!(
            archived.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec![victim.as_str()]
        );
        assert_eq!(
            c.list_projects(DEFAULT_ORGANIZATION_ID, Some(&ProjectState::Maintained))
                .await
                .expect("maintained")
                .len(),
            n - 1
        );
        let e = c
            .start_deployment(&start_body("site-00"))
            .await
            .expect_err("archived");
        assert_eq!(e.kind, ErrorKind::Invalid);
        c.set_project_state(&victim, &ProjectState::Maintained)
            .await
            .expect("unarchive");
        c.start_deployment(&start_body("site-00"))
            .await
            .expect("deployable again");
        assert_eq!(
            c.archive_project("65f0ffffffffffffffffffff")
                .await
                .expect("gone"),
            Deleted::AlreadyGone
        );

        // Deployments of a project, paged.
        for _ in 0..2 {
            c.start_deployment(&start_body("site-01"))
                .await
                .expect("start");
        }
        let p1 = all[1].id.clone();
        let page2 = c
            .list_project_deployments_page(&p1, 2, 2, None)
            .await
            .expect("page");
        assert_eq!(page2.len(), 1);
        assert_eq!(
            c.list_project_deployments(&p1, None)
                .await
                .expect("all")
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn environment_variables_per_environment() {
        let h = default_harness().await;
        let c = client(&h);
        let s = c
            .start_deployment(&start_body("vars"))
            .await
            .expect("start");
        let project = s.project_id.expect("project");
        let envs = c
            .list_deployment_environments(&project)
            .await
            .expect("envs");
        let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["Production", "Development"]);
        assert_eq!(envs[0].branches, vec!["main".to_string()]);
        assert_eq!(envs[0].status, Some(DeploymentEnvironmentStatus::Active));
        let ids: Vec<String> = envs.iter().map(|e| e.id.clone()).collect();

        let added = c
            .add_environment_variables(
                &project,
                &[
                    NewEnvironmentVariable {
                        name: "A".into(),
                        value: "1".into(),
                        environments: vec!["Production".into()],
                    },
                    NewEnvironmentVariable {
                        name: "B".into(),
                        value: "2".into(),
                        environments: ids.clone(),
                    },
                ],
            )
            .await
            .expect("add");
        assert_eq!(added.len(), 2);
        assert!(added[1]
            .deployment_environments
            .iter()
            .any(|e| e.matches("Development")));
        let e = c
            .add_environment_variables(
                &project,
                &[NewEnvironmentVariable {
                    name: "A".into(),
                    value: "x".into(),
                    environments: vec![ids[0].clone()],
                }],
            )
            .await
            .expect_err("duplicate");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("environmentVariables.0.name"));
        let e = c
            .add_environment_variables(
                &project,
                &[NewEnvironmentVariable {
                    name: "C".into(),
                    value: "x".into(),
                    environments: vec!["Staging".into()],
                }],
            )
            .await
            .expect_err("unknown environment");
        assert_eq!(
            e.field.as_deref(),
            Some("environmentVariables.0.environments")
        );

        let a = &added[0];
        let updated = c
            .update_environment_variable(
                &project,
                &a.id,
                &NewEnvironmentVariable {
                    name: "A".into(),
                    value: "changed".into(),
                    environments: vec!["Production".into(), "Development".into()],
                },
            )
            .await
            .expect("update");
        assert_eq!(updated.value, "changed");
        assert_eq!(updated.deployment_environments.len(), 2);
        assert_eq!(
            c.delete_environment_variable(&project, &added[1].id)
                .await
                .expect("delete"),
            Deleted::Done
        );
        assert_eq!(
            c.delete_environment_variable(&project, &added[1].id)
                .await
                .expect("gone"),
            Deleted::AlreadyGone
        );
        let vars = c
            .list_environment_variables(&project)
            .await
            .expect("list")
            .expect("project exists");
        assert_eq!(
            vars.iter()
                .map(|v| (v.name.as_str(), v.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("A", "changed")]
        );
        assert!(c
            .list_environment_variables("65f0ffffffffffffffffffff")
            .await
            .expect("none")
            .is_none());
    }

    #[tokio::test]
    async fn project_domains_verify_once_dns_is_in_place() {
        let h = default_harness().await;
        let c = client(&h);
        h.sim.set_dns_delay(None);
        let s = c
            .start_deployment(&start_body("shop"))
            .await
            .expect("start");
        let project = s.project_id.expect("project");
        let apex = c
            .create_project_domain(
                &project,
                &NewDomain {
                    name: "Acme.dev".into(),
                    domain_type: DomainType::Domain,
                    link: None,
                    deployment_environments: Some(vec!["Production".into()]),
                },
            )
            .await
            .expect("create");
        assert_eq!(apex.name, "acme.dev");
        assert!(!apex.verified);
        assert_eq!(apex.app_type, Some(1));
        let records = c.cdn_records().await.expect("cdn records");
        assert_eq!(
            dns_records(&apex, &records),
            vec![DnsRecord {
                record_type: "A",
                name: "acme.dev".into(),
                value: CDN_IPV4.into()
            }]
        );
        let www = c
            .create_project_domain(
                &project,
                &NewDomain {
                    name: "www.acme.dev".into(),
                    domain_type: DomainType::Subdomain,
                    link: None,
                    deployment_environments: None,
                },
            )
            .await
            .expect("create");
        assert_eq!(dns_records(&www, &records)[0].value, CDN_CNAME);

        let v = c
            .verify_project_domain(&project, &apex.id)
            .await
            .expect("verify");
        assert!(!v.success && !v.verified(), "DNS is not there yet");
        control(&h, "/_sim/domains/dns-ready", json!({"name": "acme.dev"})).await;
        let v = c
            .verify_project_domain(&project, "acme.dev")
            .await
            .expect("verify");
        assert!(v.success && v.verified());
        let got = c
            .get_project_domain(&project, "acme.dev")
            .await
            .expect("get")
            .expect("exists");
        assert!(got.verified);
        assert_eq!(
            c.get_project_domain(&project, &apex.id)
                .await
                .expect("by id")
                .map(|d| d.name),
            Some("acme.dev".to_string())
        );
        assert_eq!(
            c.list_project_domains(&project).await.expect("list").len(),
            2
        );

        // DNS that propagates by itself after the delay.
        h.sim.set_dns_delay(Some(Duration::from_millis(400)));
        assert!(
            !c.verify_project_domain(&project, &www.id)
                .await
                .expect("v")
                .success
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(
            c.verify_project_domain(&project, &www.id)
                .await
                .expect("v")
                .success
        );

        // A rename needs a new check.
        let renamed = c
            .update_project_domain(
                &project,
                &www.id,
                &DomainUpdate {
                    name: "app.acme.dev".into(),
                    link: Some("https://x.ipfs.sphn.link".into()),
                    deployment_environments: None,
                },
            )
            .await
            .expect("update");
        assert!(!renamed.verified);
        assert_eq!(renamed.link.as_deref(), Some("https://x.ipfs.sphn.link"));

        let e = c
            .create_project_domain(
                &project,
                &NewDomain {
                    name: "acme.dev".into(),
                    domain_type: DomainType::Domain,
                    link: None,
                    deployment_environments: None,
                },
            )
            .await
            .expect_err("taken");
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Invalid, Some("name"))
        );
        let e = c
            .create_project_domain(
                &project,
                &NewDomain {
                    name: "not a domain".into(),
                    domain_type: DomainType::Domain,
                    link: None,
                    deployment_environments: None,
                },
            )
            .await
            .expect_err("invalid");
        assert_eq!(e.field.as_deref(), Some("name"));
        assert_eq!(
            c.delete_project_domain(&project, &apex.id)
                .await
                .expect("delete"),
            Deleted::Done
        );
        assert_eq!(
            c.delete_project_domain(&project, &apex.id)
                .await
                .expect("gone"),
            Deleted::AlreadyGone
        );
        assert!(c
            .get_project_domain(&project, &apex.id)
            .await
            .expect("get")
            .is_none());
    }

    #[tokio::test]
    async fn compute_update_changes_replicas() {
        let h = default_harness().await;
        let c = client(&h);
        let created = c
            .create_compute_instance(&create_body(
                "shop",
                vec![service("web", 1), service("worker", 1)],
            ))
            .await
            .expect("create");
        assert_eq!(created.topic.as_deref(), Some("topic-shop"));
        let instance = created.compute_instance_id.clone();
        let i = c
            .get_compute_instance(&instance)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(i.state, InstanceState::Starting);
        assert_eq!(i.instance_type.as_deref(), Some("ON_DEMAND"));
        let first = until_compute_terminal(&c, &created.compute_deployment_id).await;
        assert_eq!(first.status, ComputeDeploymentStatus::Deployed);
        assert_eq!(first.deployment_type.as_deref(), Some("DEPLOY"));
        let i = c
            .get_compute_instance(&instance)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(i.state, InstanceState::Active);
        let current = c
            .current_deployment(&instance)
            .await
            .expect("current")
            .expect("one");
        assert_eq!(
            current.replicas(),
            BTreeMap::from([("web".to_string(), 1), ("worker".to_string(), 1)])
        );
        assert!(current.services[0].url_preview.is_some());

        // Scale web to 3: resend the full configuration with a new serviceCount.
        let mut services = current.service_configs();
        services[0].service_count = 3;
        let update = UpdateComputeInstance {
            services: services.clone(),
            organization_id: DEFAULT_ORGANIZATION_ID.into(),
            unique_topic_id: "t-2".into(),
        };
        let u = c
            .update_compute_instance(&instance, &update)
            .await
            .expect("update");
        let e = c
            .update_compute_instance(&instance, &update)
            .await
            .expect_err("one at a time");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(
            c.current_deployment(&instance)
                .await
                .expect("c")
                .expect("one")
                .replicas()["web"],
            1,
            "the running configuration changes only once the update is deployed"
        );
        let second = until_compute_terminal(&c, &u.compute_deployment_id).await;
        assert_eq!(second.deployment_type.as_deref(), Some("UPDATE"));
        assert_eq!(second.replicas()["web"], 3);
        let i = c
            .get_compute_instance(&instance)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            i.active_deployment.as_deref(),
            Some(u.compute_deployment_id.as_str())
        );
        assert_eq!(i.deployments.len(), 2);
        let old = c
            .get_compute_deployment(&created.compute_deployment_id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(old.status, ComputeDeploymentStatus::Deprecated);

        // An out-of-band change (someone scales in the dashboard) is a normal API call.
        let person = client(&h);
        let mut theirs = person
            .current_deployment(&instance)
            .await
            .expect("c")
            .expect("one")
            .service_configs();
        theirs[1].service_count = 5;
        let oob = person
            .update_compute_instance(
                &instance,
                &UpdateComputeInstance {
                    services: theirs,
                    organization_id: DEFAULT_ORGANIZATION_ID.into(),
                    unique_topic_id: "t-oob".into(),
                },
            )
            .await
            .expect("update");
        until_compute_terminal(&person, &oob.compute_deployment_id).await;
        let seen = c
            .current_deployment(&instance)
            .await
            .expect("c")
            .expect("one");
        assert_eq!(
            seen.replicas(),
            BTreeMap::from([("web".to_string(), 3), ("worker".to_string(), 5)])
        );
        assert_eq!(h.sim.service_counts(&instance)["worker"], 5);

        // A failed update leaves the running configuration alone.
        control(
            &h,
            "/_sim/compute/fail-next",
            json!({"reason": "no provider has capacity"}),
        )
        .await;
        let mut bad = seen.service_configs();
        bad[0].service_count = 9;
        let f = c
            .update_compute_instance(
                &instance,
                &UpdateComputeInstance {
                    services: bad,
                    organization_id: DEFAULT_ORGANIZATION_ID.into(),
                    unique_topic_id: "t-3".into(),
                },
            )
            .await
            .expect("update");
        let failed = until_compute_terminal(&c, &f.compute_deployment_id).await;
        assert_eq!(failed.status, ComputeDeploymentStatus::Failed);
        assert!(failed
            .failure_reason()
            .is_some_and(|r| r.contains("no provider has capacity")));
        assert_eq!(h.sim.service_counts(&instance)["web"], 3);

        // Listing by organization and compute project.
        let projects = c
            .list_compute_projects(DEFAULT_ORGANIZATION_ID)
            .await
            .expect("projects");
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0].provider.as_deref(), Some("DOCKERHUB"));
        let listed = c
            .list_compute_instances(DEFAULT_ORGANIZATION_ID, Some(&projects[0].id), None)
            .await
            .expect("instances");
        assert_eq!(
            listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            vec![instance.as_str()]
        );
        assert!(c
            .list_compute_instances(DEFAULT_ORGANIZATION_ID, None, Some(&InstanceState::Closed))
            .await
            .expect("closed")
            .is_empty());

        // Instance domains.
        let link = seen.services[0].url_preview.clone().unwrap_or_default();
        let dom = c
            .create_instance_domain(
                &instance,
                &NewInstanceDomain {
                    link: link.clone(),
                    domain_type: DomainType::Subdomain,
                    name: "api.acme.dev".into(),
                },
            )
            .await
            .expect("create");
        assert_eq!((dom.verified, dom.app_type), (false, Some(2)));
        h.sim.set_dns_ready("api.acme.dev");
        let v = c
            .verify_instance_domain(&instance, &dom.id)
            .await
            .expect("verify");
        assert!(v.success);
        assert!(c
            .get_instance_domain(&instance, "api.acme.dev")
            .await
            .expect("get")
            .is_some_and(|d| d.verified));
        let moved = c
            .update_instance_domain(
                &instance,
                &dom.id,
                &NewInstanceDomain {
                    link,
                    domain_type: DomainType::Subdomain,
                    name: "api2.acme.dev".into(),
                },
            )
            .await
            .expect("update");
        assert!(!moved.verified);
        assert_eq!(
            c.list_instance_domains(&instance)
                .await
                .expect("list")
                .len(),
            1
        );
        assert_eq!(
            c.delete_instance_domain(&instance, &dom.id)
                .await
                .expect("delete"),
            Deleted::Done
        );
        assert_eq!(
            c.delete_instance_domain(&instance, &dom.id)
                .await
                .expect("gone"),
            Deleted::AlreadyGone
        );

        // Close, then delete; the compute project goes last.
        let e = c
            .delete_compute_project(&projects[0].id)
            .await
            .expect_err("open instance");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(
            c.close_compute_instance(&instance).await.expect("close"),
            Deleted::Done
        );
        let i = c
            .get_compute_instance(&instance)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(i.state, InstanceState::Closed);
        let e = c
            .update_compute_instance(&instance, &update)
            .await
            .expect_err("closed");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(
            c.delete_compute_instance(&instance).await.expect("delete"),
            Deleted::Done
        );
        assert_eq!(
            c.delete_compute_instance(&instance).await.expect("gone"),
            Deleted::AlreadyGone
        );
        assert!(c
            .get_compute_instance(&instance)
            .await
            .expect("get")
            .is_none());
        assert_eq!(
            c.delete_compute_project(&projects[0].id)
                .await
                .expect("delete"),
            Deleted::Done
        );
        assert!(c
            .get_compute_project(&projects[0].id)
            .await
            .expect("get")
            .is_none());
    }

    #[tokio::test]
    async fn compute_requests_are_validated() {
        let h = default_harness().await;
        let c = client(&h);
        let mut s = service("web", 1);
        s.akash_machine_image_name = "Huge 9000".into();
        let e = c
            .create_compute_instance(&create_body("x", vec![s]))
            .await
            .expect_err("unknown plan");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("services.0.akashMachineImageName"));
        let e = c
            .create_compute_instance(&create_body("x", vec![service("web", 0)]))
            .await
            .expect_err("no replicas");
        assert_eq!(e.field.as_deref(), Some("services.0.serviceCount"));
        let e = c
            .create_compute_instance(&create_body("x", vec![]))
            .await
            .expect_err("no services");
        assert_eq!(e.field.as_deref(), Some("services"));

        // A first deployment that fails leaves the instance `Failed-start`.
        h.sim.fail_next_compute_deployment("image not found");
        let created = c
            .create_compute_instance(&create_body("broken", vec![service("web", 1)]))
            .await
            .expect("create");
        let d = until_compute_terminal(&c, &created.compute_deployment_id).await;
        assert_eq!(d.status, ComputeDeploymentStatus::Failed);
        let i = c
            .get_compute_instance(&created.compute_instance_id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(i.state, InstanceState::FailedStart);
    }

    #[tokio::test]
    async fn tokens_errors_and_other_organizations() {
        let h = default_harness().await;
        let c = client(&h);
        assert_eq!(
            c.verify().await.expect("verify"),
            format!("organization {DEFAULT_ORGANIZATION_ID} ({DEFAULT_ORGANIZATION_NAME})")
        );
        assert_eq!(
            c.token_organizations().await.expect("scope"),
            vec![DEFAULT_ORGANIZATION_ID.to_string()]
        );
        let org = c
            .get_organization(DEFAULT_ORGANIZATION_ID)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(org.profile.name.as_deref(), Some(DEFAULT_ORGANIZATION_NAME));
        assert!(!org.overdue);
        let s = c
            .start_deployment(&start_body("mine"))
            .await
            .expect("start");
        let mine = s.project_id.expect("project");
        let created = c
            .create_compute_instance(&create_body("mine", vec![service("web", 1)]))
            .await
            .expect("create");

        // 401: a token the platform does not know.
        let bad = client_with(&h, "wrong-s3cr3t", None);
        let e = bad.verify().await.expect_err("401");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.status, Some(401));
        assert!(e.message.contains("token was refused"), "{}", e.message);
        assert!(!e.message.contains("s3cr3t") && !format!("{e:?}").contains("s3cr3t"));
        assert!(!format!("{bad:?}").contains("s3cr3t"));

        // A token of another organization, made through the control route.
        let made = control(
            &h,
            "/_sim/tokens",
            json!({"token": "other-token", "organization": "Globex"}),
        )
        .await;
        let other_org = made["organizationId"].as_str().expect("id").to_owned();
        assert_ne!(other_org, DEFAULT_ORGANIZATION_ID);
        let other = client_with(&h, "other-token", None);
        assert_eq!(
            other.verify().await.expect("verify"),
            format!("organization {other_org} (Globex)")
        );
        for e in [
            other.get_project(&mine).await.expect_err("403"),
            other
                .get_organization(DEFAULT_ORGANIZATION_ID)
                .await
                .expect_err("403"),
            other
                .get_compute_instance(&created.compute_instance_id)
                .await
                .expect_err("403"),
            other
                .list_compute_instances(DEFAULT_ORGANIZATION_ID, None, None)
                .await
                .expect_err("403"),
            other
                .start_deployment(&start_body("theirs"))
                .await
                .expect_err("403"),
        ] {
            assert_eq!(e.kind, ErrorKind::Forbidden, "{}", e.message);
            assert!(e.message.contains("another organization"), "{}", e.message);
        }
        // The Provider names an organization the token is not scoped to.
        let wrong_default = client_with(&h, "other-token", Some(DEFAULT_ORGANIZATION_ID));
        let e = wrong_default.verify().await.expect_err("scope");
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert_eq!(e.field.as_deref(), Some("defaults.organizationId"));
        assert!(!e.message.contains("other-token"));

        // A token scoped to two organizations needs the default.
        h.sim.add_token(crate::sim::DEFAULT_TOKEN, "Globex");
        let e = c.verify().await.expect_err("two organizations");
        assert_eq!(e.kind, ErrorKind::Invalid);
        let chosen = client_with(&h, crate::sim::DEFAULT_TOKEN, Some(&other_org));
        assert!(chosen.verify().await.expect("verify").contains("Globex"));
        assert_eq!(chosen.default_organization(), Some(other_org.as_str()));

        // 404s.
        let e = c
            .update_compute_instance(
                "65f0ffffffffffffffffffff",
                &UpdateComputeInstance {
                    services: vec![service("web", 1)],
                    organization_id: DEFAULT_ORGANIZATION_ID.into(),
                    unique_topic_id: "t".into(),
                },
            )
            .await
            .expect_err("404");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(c
            .get_organization("65f0ffffffffffffffffffff")
            .await
            .expect("none")
            .is_none());

        // An overdue organization: a quota error the user must act on.
        control(&h, "/_sim/organizations/overdue", json!({"overdue": true})).await;
        let e = c
            .start_deployment(&start_body("mine"))
            .await
            .expect_err("overdue");
        assert_eq!(e.kind, ErrorKind::QuotaExceeded, "{}", e.message);
        let e = c
            .create_compute_instance(&create_body("more", vec![service("web", 1)]))
            .await
            .expect_err("overdue");
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        let envs = c.list_deployment_environments(&mine).await.expect("envs");
        assert_eq!(
            envs[0].status,
            Some(DeploymentEnvironmentStatus::PaymentPending)
        );
        assert!(c
            .get_organization(DEFAULT_ORGANIZATION_ID)
            .await
            .expect("get")
            .is_some_and(|o| o.overdue));
    }

    #[tokio::test]
    async fn rate_limits_faults_and_stats() {
        let h = harness(SimConfig {
            rate_limit_per_minute: Some(2),
            ..SimConfig::default()
        })
        .await;
        let c = client(&h);
        c.token_scope().await.expect("1");
        c.token_scope().await.expect("2");
        let e = c.token_scope().await.expect_err("429");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.retry_after.is_some_and(|r| r >= Duration::from_secs(1)));
        let stats: SimStats = reqwest::get(format!("{}/_sim/stats", h.base))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        assert_eq!(stats.requests_for("GET", "/v1/api-keys/scope"), 3);
        assert_eq!(stats.rate_limited_total, 1);

        let h = default_harness().await;
        let c = client(&h);
        h.sim.control().set_outage(true);
        let e = c.token_scope().await.expect_err("outage");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.is_transient());
        h.sim.control().set_outage(false);
        let timing = control(
            &h,
            "/_sim/timing",
            json!({"deploymentStepMs": 5, "computeStepMs": 5, "dnsDelayMs": null}),
        )
        .await;
        assert_eq!(timing["dnsDelayMs"], Value::Null);
        assert_eq!(timing["deploymentStepMs"], 5);
        let s = c
            .start_deployment(&start_body("fast"))
            .await
            .expect("start");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(h.sim.deployment_status(&s.deployment_id), Some("Deployed"));
        // Unknown paths answer 404 in the platform's shape.
        let r = reqwest::get(format!("{}/v1/nothing", h.base))
            .await
            .expect("send");
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.expect("json");
        assert!(body["message"].is_string());
    }

    #[tokio::test]
    async fn wrappers_on_the_wire() {
        // The raw shapes, independent of the client's parsing.
        let h = default_harness().await;
        let http = reqwest::Client::new();
        let get = |path: &str| {
            http.get(format!("{}{path}", h.base))
                .bearer_auth(crate::sim::DEFAULT_TOKEN)
                .send()
        };
        let c = client(&h);
        let s = c
            .start_deployment(&start_body("wire"))
            .await
            .expect("start");
        let project = s.project_id.expect("project");
        let v: Value = get(&format!("/v1/project/{project}"))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(v["_id"], project.as_str(), "a project is bare");
        let v: Value = get(&format!("/v1/deployment/{}", s.deployment_id))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert!(
            v["deployment"]["_id"].is_string(),
            "a deployment is wrapped"
        );
        let v: Value = get(&format!("/v1/project/{project}/deployments?skip=0&limit=5"))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert!(v.is_array(), "a project's deployments are a bare array");
        let v: Value = get(&format!("/v1/organization/{DEFAULT_ORGANIZATION_ID}"))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(v["_id"], DEFAULT_ORGANIZATION_ID, "an organization is bare");
        let v: Value = get(&format!("/v1/project/{project}/deployment-environments"))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert!(v["result"].is_array());
        let v: Value = get("/v1/api-keys/scope")
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(v["organizations"][0]["id"], DEFAULT_ORGANIZATION_ID);
        let r = http
            .get(format!("{}/v1/api-keys/scope", h.base))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.expect("json");
        assert!(v["message"].is_string(), "errors are {{message}}");
    }
}
