//! In-memory simulator of the Codesphere Public API (`bosun sim`).
//!
//! Follows `shared/specs/codesphere-openapi.json`: paths under `/api`, camelCase fields, every
//! success is `200` (mutations without a result answer an empty body), and every error is the
//! problem body `{status, title, detail?, traceId}`. Every API call needs
//! `Authorization: Bearer <token>`.
//!
//! Implemented: teams (read), metadata (datacenters, plans, base images), workspaces (create,
//! get, list by team, update, delete, status), env vars, pipeline stages, landscape (deploy,
//! teardown, scale), git (pull, head) and domains (CRUD, verify, workspace connections). A new
//! workspace reports `isRunning: false` until its start delay (default 2 s) has passed.
//!
//! Time is simulated lazily: a stage's state is computed from the instant it was started, so no
//! background tasks run. `prepare` and `test` run on the server `codesphere-ide` (replica `"0"`):
//! `waiting` for the first quarter of the stage duration (default 1 s), then `running`, then
//! `success` (or `failure`, see [`CodesphereSim::fail_next_stage`]). `run` runs on the
//! landscape's services (one service `web` with one replica unless scaled): each replica is
//! `waiting` for the run delay (default 1 s), then `running` until stopped (`aborted`).
//!
//! Where the spec is silent the simulator makes these choices:
//! - creating or listing workspaces or domains of an unknown team answers `404 "Team not
//!   found."` (the spec declares no 404 for these);
//! - an unknown or deprecated plan, an unknown base image or more replicas than the plan's
//!   `maxReplicas` answer `400`;
//! - `PUT`/`DELETE .../env-vars` need a body (an empty body is `400`); `PUT` upserts the names
//!   given and `DELETE` ignores names that are not set;
//! - starting a stage replaces its previous run at once: the status array is back to `waiting`
//!   the moment `start` returns; stopping a stage that is not active is a no-op `200`;
//! - landscape calls do not need a running workspace (the spec names that reason only for
//!   pipeline and git calls); `run` does not need a prior `landscape/deploy`; scaling accepts new
//!   service names as new services, but a name must be a valid server name (the pattern of the
//!   pipeline status's `server`) and a count must not exceed the plan's `maxReplicas`;
//!   replicas added while `run` is active go through `waiting` again; teardown aborts `run`;
//! - git: the only remote is `origin`; a branch exists upstream if it is a workspace's initial
//!   branch or was pushed with [`CodesphereSim::push_commit`] (else pull is `400`, a git error);
//!   `git/pull/{remote}/{branch}` checks that branch out at its upstream head (no merge);
//!   `gitRef` on create checks out a commit if it is 40 hex digits, else it names the branch;
//! - domains: names are FQDNs (stored lower-case) and unique across teams; creating an
//!   existing domain of the same team returns it; the domain is verified only by
//!   `POST .../verify` once the test has called [`CodesphereSim::verify_domain_dns`], and the
//!   certificate is issued at that moment; negative `customConfig` numbers are `400`;
//!   `PUT .../workspace-connections` answers `409` like `PATCH` while the domain is busy (the
//!   spec declares 409 only for `PATCH`), and `400` for ids that are not workspaces of the team.
//! - deleting a workspace also removes it from every domain's workspace connections (and drops
//!   paths left empty by that). This is an assumption: the research notes (§8) list it as unknown.

mod routes;
#[cfg(test)]
mod tests;

pub use routes::router;
use routes::{fake_commit, stage_status};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::sim::{bearer_token, with_sim, SimConfig, SimControl};

/// How long a new workspace takes to report `isRunning: true` unless changed.
pub const DEFAULT_START_DELAY: Duration = Duration::from_secs(2);

/// The id of the team every simulator starts with.
pub const DEFAULT_TEAM_ID: u64 = 1;

/// The user the simulator's token belongs to (`userId` of created workspaces).
const SIM_USER_ID: u64 = 1;

const SCHEMA_MISMATCH: &str = "Path or request body variable does not match schema.";

/// A workspace as the API returns it (fields and names per the spec's workspace object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: u64,
    pub team_id: u64,
    pub name: String,
    pub plan_id: u64,
    pub is_private_repo: bool,
    pub replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    pub data_center_id: u64,
    pub user_id: u64,
    pub git_url: Option<String>,
    pub initial_branch: Option<String>,
    pub source_workspace_id: Option<u64>,
    pub welcome_message: Option<String>,
    pub vpn_config: Option<String>,
    pub restricted: bool,
    pub collect_traces: bool,
    pub persistent_logs: bool,
    pub dev_domain: String,
    /// RFC 3339 with milliseconds, as the API renders it.
    pub created_at: String,
}

/// An environment variable (`{name, value}` in the API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// What the simulator keeps per workspace besides the API object.
#[derive(Clone, Debug)]
struct WorkspaceRecord {
    workspace: Workspace,
    env: Vec<EnvVar>,
    /// From when `/status` reports `isRunning: true`; `None` = stopped.
    running_at: Option<Instant>,
    // Accepted and kept so later slices (vault, storage) can use them.
    #[allow(dead_code)]
    extra: CreateExtras,
    /// The checked-out repository; `None` for a workspace without one.
    git: Option<Checkout>,
    /// The latest run of each stage that was ever started.
    stages: BTreeMap<Stage, StageRun>,
    stage_starts: BTreeMap<Stage, u32>,
    landscape: Landscape,
}

impl WorkspaceRecord {
    fn is_running(&self, now: Instant) -> bool {
        self.running_at.is_some_and(|at| now >= at)
    }
}

#[derive(Clone, Debug, Default)]
#[allow(dead_code)]
struct CreateExtras {
    clone_depth: Option<u32>,
    storage_mib: Option<u64>,
    shared_vault_name: Option<String>,
    git_ref: Option<String>,
}

/// A workspace's git checkout.
#[derive(Clone, Debug)]
struct Checkout {
    url: String,
    branch: String,
    head: String,
}

/// The landscape of a workspace: its services and whether it was deployed.
#[derive(Clone, Debug)]
struct Landscape {
    /// `Some(profile)` after `landscape/deploy` (`Some(None)` for `ci.yml`), `None` after teardown.
    deployed: Option<Option<String>>,
    /// Per service, the instant each replica was added (the length is the replica count).
    services: BTreeMap<String, Vec<Instant>>,
}

/// The service every landscape starts with.
pub const DEFAULT_SERVICE: &str = "web";

/// The server `prepare` and `test` run on (and that CSGO looks for).
pub const IDE_SERVER: &str = "codesphere-ide";

/// Default duration of `prepare`/`test`, and delay until `run` reports `running`.
pub const DEFAULT_STAGE_DURATION: Duration = Duration::from_secs(1);

/// Stage durations and delays are capped at this, so instant arithmetic cannot overflow.
const MAX_STAGE_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Steps of `prepare` and `test` (as if `ci.yml` had two steps each); `run` has one.
const STEPS: u32 = 2;

/// A pipeline stage (`{stage}` in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Prepare,
    Test,
    Run,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Prepare, Stage::Test, Stage::Run];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Test => "test",
            Self::Run => "run",
        }
    }

    fn parse(raw: &str) -> ApiResult<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                ApiError::Schema(
                    "params/stage must be equal to one of the allowed values: prepare, test, run"
                        .to_owned(),
                )
            })
    }
}

/// State of a stage element or step, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    Waiting,
    Running,
    Success,
    Failure,
    Aborted,
}

/// One element of `GET .../pipeline/{stage}`: a stage on one server and replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub state: StageState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub steps: Vec<StepStatus>,
    pub replica: String,
    pub server: String,
}

/// One step of a [`StageStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub state: StageState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// One start of a stage.
#[derive(Clone, Debug)]
struct StageRun {
    started: Instant,
    /// `prepare`/`test`: the whole duration; `run`: the delay until a replica runs.
    length: Duration,
    fails: bool,
    stopped: Option<Instant>,
    profile: Option<String>,
}

/// Something that waits until `begin`, is `running` until `end` (`None` = until stopped) and
/// then ends in `outcome`, unless it is stopped before.
#[derive(Clone, Copy)]
struct Phase {
    begin: Instant,
    end: Option<Instant>,
    outcome: StageState,
}

impl Phase {
    /// State, start and finish at `now`.
    fn at(
        &self,
        stopped: Option<Instant>,
        now: Instant,
    ) -> (StageState, Option<Instant>, Option<Instant>) {
        if let Some(stop) = stopped.filter(|s| *s <= now) {
            if stop < self.begin {
                return (StageState::Aborted, None, Some(stop));
            }
            if self.end.is_none_or(|end| stop < end) {
                return (StageState::Aborted, Some(self.begin), Some(stop));
            }
        }
        match self.end {
            _ if now < self.begin => (StageState::Waiting, None, None),
            Some(end) if now >= end => (self.outcome, Some(self.begin), Some(end)),
            _ => (StageState::Running, Some(self.begin), None),
        }
    }
}

/// Maps the simulator's monotonic instants to wall-clock timestamps.
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

    /// RFC 3339 with milliseconds, as the API renders it.
    fn render(&self, at: Instant) -> String {
        let since = at.saturating_duration_since(self.instant);
        let wall = self.wall.checked_add(since).unwrap_or(self.wall);
        format!("{wall:.3}")
    }
}

impl StageRun {
    /// The status array of this run at `now`.
    fn render(
        &self,
        stage: Stage,
        services: &BTreeMap<String, Vec<Instant>>,
        clock: &Clock,
        now: Instant,
    ) -> Vec<StageStatus> {
        let element = |phase: &Phase, steps: &[Phase], replica: String, server: String| {
            let (state, started, finished) = phase.at(self.stopped, now);
            let steps = steps
                .iter()
                .map(|step| {
                    let (state, started, finished) = step.at(self.stopped, now);
                    StepStatus {
                        state,
                        started_at: started.map(|t| clock.render(t)),
                        finished_at: finished.map(|t| clock.render(t)),
                    }
                })
                .collect();
            StageStatus {
                state,
                started_at: started.map(|t| clock.render(t)),
                finished_at: finished.map(|t| clock.render(t)),
                steps,
                replica,
                server,
            }
        };
        let outcome = if self.fails {
            StageState::Failure
        } else {
            StageState::Success
        };
        match stage {
            Stage::Prepare | Stage::Test => {
                let begin = self.started + self.length / 4;
                let end = self.started + self.length;
                let step_length = (end - begin) / STEPS;
                let steps: Vec<Phase> = (0..STEPS)
                    .map(|i| {
                        let last = i + 1 == STEPS;
                        let step_begin = begin + step_length * i;
                        Phase {
                            begin: step_begin,
                            end: Some(if last { end } else { step_begin + step_length }),
                            // A failing stage fails in its last step.
                            outcome: if last { outcome } else { StageState::Success },
                        }
                    })
                    .collect();
                let phase = Phase {
                    begin,
                    end: Some(end),
                    outcome,
                };
                vec![element(
                    &phase,
                    &steps,
                    "0".to_owned(),
                    IDE_SERVER.to_owned(),
                )]
            }
            Stage::Run => services
                .iter()
                .flat_map(|(service, replicas)| {
                    replicas.iter().enumerate().map(|(replica, added)| {
                        // A replica added while `run` is active starts when it was added.
                        let begin = self.started.max(*added) + self.length;
                        let phase = Phase {
                            begin,
                            // A failing run crashes as soon as it would run.
                            end: self.fails.then_some(begin),
                            outcome: StageState::Failure,
                        };
                        let steps = [phase];
                        element(&phase, &steps, replica.to_string(), service.clone())
                    })
                })
                .collect(),
        }
    }
}

/// A domain as the API returns it (fields and names per the spec's domain object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    pub team_id: u64,
    pub data_center_id: u64,
    /// Path prefix → ids of the workspaces served there.
    pub workspaces: BTreeMap<String, Vec<u64>>,
    pub name: String,
    pub certificate_request_status: CertificateRequestStatus,
    pub dns_entries: DnsEntries,
    pub domain_verification_status: DomainVerificationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config: Option<CustomConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificateRequestStatus {
    pub issued: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsEntries {
    pub a: String,
    pub cname: String,
    pub txt: String,
}

/// `domainVerificationStatus`, also the body of `POST .../verify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainVerificationStatus {
    pub verified: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_regex: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Team {
    id: u64,
    default_data_center_id: u64,
    name: String,
    description: Option<String>,
    avatar_id: Option<String>,
    avatar_url: Option<String>,
    is_first: bool,
}

/// `GET /teams` items carry the caller's role (0 = Admin, 1 = Member) on top of the team.
#[derive(Serialize)]
struct TeamWithRole<'a> {
    #[serde(flatten)]
    team: &'a Team,
    role: u8,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Datacenter {
    id: u64,
    name: &'static str,
    city: &'static str,
    country_code: &'static str,
}

const DATACENTERS: &[Datacenter] = &[
    Datacenter {
        id: 1,
        name: "Germany",
        city: "Frankfurt",
        country_code: "DE",
    },
    Datacenter {
        id: 2,
        name: "US East",
        city: "Ashburn",
        country_code: "US",
    },
];

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Plan {
    id: u64,
    price_usd: f64,
    title: &'static str,
    deprecated: bool,
    characteristics: PlanCharacteristics,
    max_replicas: u32,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct PlanCharacteristics {
    id: u64,
    #[serde(rename = "CPU")]
    cpu: f64,
    #[serde(rename = "GPU")]
    gpu: f64,
    #[serde(rename = "RAM")]
    ram: u64,
    #[serde(rename = "SSD")]
    ssd: u64,
    #[serde(rename = "TempStorage")]
    temp_storage: u64,
    #[serde(rename = "onDemand")]
    on_demand: bool,
}

/// A plan's machine: CPUs, RAM (MiB) and SSD (GiB).
struct Size(f64, u64, u64);

const fn plan(
    id: u64,
    title: &'static str,
    price_usd: f64,
    Size(cpu, ram, ssd): Size,
    max_replicas: u32,
    on_demand: bool,
) -> Plan {
    Plan {
        id,
        price_usd,
        title,
        deprecated: false,
        characteristics: PlanCharacteristics {
            id,
            cpu,
            gpu: 0.0,
            ram,
            ssd,
            temp_storage: 40,
            on_demand,
        },
        max_replicas,
    }
}

impl Plan {
    const fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }
}

// Titles follow Codesphere's plan names; id 8 ("Micro") is cs-go's default plan id. Sizes and
// prices are illustrative.
const PLANS: &[Plan] = &[
    plan(8, "Micro", 5.0, Size(0.5, 2048, 20), 3, false),
    plan(20, "Boost", 20.0, Size(2.0, 4096, 40), 5, false),
    plan(21, "Pro", 80.0, Size(4.0, 16384, 100), 10, false),
    plan(22, "Micro On-Demand", 2.0, Size(0.5, 2048, 20), 3, true),
    plan(1, "Free", 0.0, Size(0.25, 512, 5), 1, true).deprecated(),
];

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BaseImage {
    id: &'static str,
    name: &'static str,
    supported_until: &'static str,
}

const BASE_IMAGES: &[BaseImage] = &[
    BaseImage {
        id: "ubuntu-22.04",
        name: "Ubuntu 22.04",
        supported_until: "2027-04-30T00:00:00.000Z",
    },
    BaseImage {
        id: "ubuntu-24.04",
        name: "Ubuntu 24.04",
        supported_until: "2029-04-30T00:00:00.000Z",
    },
];

fn find_plan(id: u64) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.id == id)
}

/// Errors of the API, rendered as the spec's problem body.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("Authorization information is missing or invalid.")]
    Unauthorized(&'static str),
    /// The request does not match the operation's schema.
    #[error("{SCHEMA_MISMATCH}")]
    Schema(String),
    /// Well-formed, but not acceptable (plan limits, unknown references).
    #[error("Bad Request")]
    Rejected(String),
    #[error("Team not found.")]
    TeamNotFound,
    #[error("Workspace is not found.")]
    WorkspaceNotFound,
    /// Pipeline and git calls on a workspace whose `/status` says not running.
    #[error("Workspace is not running.")]
    NotRunning,
    #[error("Git error")]
    Git(String),
    #[error("Domain not found.")]
    DomainNotFound,
    #[error("Another request is in progress.")]
    Busy,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Schema(_) | Self::Rejected(_) | Self::NotRunning | Self::Git(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::TeamNotFound | Self::WorkspaceNotFound | Self::DomainNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::Busy => StatusCode::CONFLICT,
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Self::Unauthorized(detail) => Some(detail),
            Self::Schema(detail) | Self::Rejected(detail) | Self::Git(detail) => Some(detail),
            Self::NotRunning => Some("Start or wake up the workspace first."),
            Self::TeamNotFound | Self::WorkspaceNotFound | Self::DomainNotFound | Self::Busy => {
                None
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem(self.status(), &self.to_string(), self.detail())
    }
}

fn problem(status: StatusCode, title: &str, detail: Option<&str>) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), status.as_u16().into());
    body.insert("title".into(), title.into());
    if let Some(detail) = detail {
        body.insert("detail".into(), detail.into());
    }
    body.insert(
        "traceId".into(),
        format!("{:032x}", rand::random::<u128>()).into(),
    );
    (status, Json(Value::Object(body))).into_response()
}

/// Error renderer for the shared middleware (outages, injected errors, 429).
pub fn render_error(status: StatusCode, message: &str) -> Response {
    problem(
        status,
        status.canonical_reason().unwrap_or("Error"),
        Some(message),
    )
}

type ApiResult<T> = Result<T, ApiError>;

/// The Codesphere simulator's state. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CodesphereSim {
    inner: Arc<Inner>,
    control: SimControl,
}

struct Inner {
    token: String,
    clock: Clock,
    data: Mutex<Data>,
}

struct Data {
    teams: BTreeMap<u64, Team>,
    workspaces: BTreeMap<u64, WorkspaceRecord>,
    next_workspace_id: u64,
    start_delay: Duration,
    stage_duration: Duration,
    run_delay: Duration,
    /// Starts still to fail, per workspace and stage.
    fail_next: BTreeMap<(u64, Stage), u32>,
    /// Upstream repositories: pushes per (git URL, branch); a key means the branch exists.
    upstream: BTreeMap<(String, String), u32>,
    /// Domains by name (unique across teams).
    domains: BTreeMap<String, Domain>,
    /// Domains whose DNS records are in place (set by the test, possibly before creation).
    dns_ready: BTreeSet<String>,
    /// PATCH/PUT calls still to answer `409`, per domain.
    domain_busy: BTreeMap<String, u32>,
}

impl Data {
    fn record(&mut self, id: u64) -> ApiResult<&mut WorkspaceRecord> {
        self.workspaces
            .get_mut(&id)
            .ok_or(ApiError::WorkspaceNotFound)
    }

    /// A workspace that exists and runs (pipeline and git calls need both).
    fn running(&mut self, id: u64) -> ApiResult<&mut WorkspaceRecord> {
        let record = self.record(id)?;
        if record.is_running(Instant::now()) {
            Ok(record)
        } else {
            Err(ApiError::NotRunning)
        }
    }

    fn domain(&mut self, team_id: u64, name: &str) -> ApiResult<&mut Domain> {
        self.domains
            .get_mut(name)
            .filter(|d| d.team_id == team_id)
            .ok_or(ApiError::DomainNotFound)
    }

    /// Counts down the busy knob: `Err(Busy)` while the domain is busy.
    fn claim_domain(&mut self, name: &str) -> ApiResult<()> {
        match self.domain_busy.get_mut(name) {
            Some(left) if *left > 0 => {
                *left -= 1;
                Err(ApiError::Busy)
            }
            _ => Ok(()),
        }
    }
}

impl CodesphereSim {
    /// A simulator with team 1 "Acme" and no workspaces.
    pub fn new(config: &SimConfig) -> Self {
        let team = Team {
            id: DEFAULT_TEAM_ID,
            default_data_center_id: DATACENTERS[0].id,
            name: "Acme".to_owned(),
            description: None,
            avatar_id: None,
            avatar_url: None,
            is_first: true,
        };
        Self {
            inner: Arc::new(Inner {
                token: config.token.clone(),
                clock: Clock::now(),
                data: Mutex::new(Data {
                    teams: BTreeMap::from([(team.id, team)]),
                    workspaces: BTreeMap::new(),
                    // Real ids are large numbers; starting high keeps them from looking like
                    // team or plan ids in tests.
                    next_workspace_id: 70_001,
                    start_delay: DEFAULT_START_DELAY,
                    stage_duration: DEFAULT_STAGE_DURATION,
                    run_delay: DEFAULT_STAGE_DURATION,
                    fail_next: BTreeMap::new(),
                    upstream: BTreeMap::new(),
                    domains: BTreeMap::new(),
                    dns_ready: BTreeSet::new(),
                    domain_busy: BTreeMap::new(),
                }),
            }),
            control: SimControl::new(config),
        }
    }

    /// Faults and counters of this simulator.
    pub fn control(&self) -> &SimControl {
        &self.control
    }

    /// How long workspaces created from now on take to report `isRunning: true`.
    pub fn set_start_delay(&self, delay: Duration) {
        self.data().start_delay = delay;
    }

    /// All workspaces, ordered by id.
    pub fn workspaces(&self) -> Vec<Workspace> {
        self.data()
            .workspaces
            .values()
            .map(|r| r.workspace.clone())
            .collect()
    }

    pub fn workspace(&self, id: u64) -> Option<Workspace> {
        self.data().workspaces.get(&id).map(|r| r.workspace.clone())
    }

    /// How many workspaces (in any team) have this name; names are not unique in Codesphere.
    pub fn count_workspaces_named(&self, name: &str) -> usize {
        self.data()
            .workspaces
            .values()
            .filter(|r| r.workspace.name == name)
            .count()
    }

    /// The environment variables of a workspace (set at creation or through the API).
    pub fn env_vars(&self, id: u64) -> Option<Vec<EnvVar>> {
        self.data().workspaces.get(&id).map(|r| r.env.clone())
    }

    /// Makes a workspace report `isRunning` true or false from now on (e.g. an on-demand
    /// workspace that went to sleep). Returns false if there is no such workspace.
    pub fn set_workspace_running(&self, id: u64, running: bool) -> bool {
        match self.data().workspaces.get_mut(&id) {
            Some(record) => {
                record.running_at = running.then(Instant::now);
                true
            }
            None => false,
        }
    }

    /// Duration of `prepare` and `test`, and delay until `run` reports `running`, for stages
    /// started from now on (capped at 30 days). See also [`CodesphereSim::set_run_delay`].
    pub fn set_stage_duration(&self, duration: Duration) {
        let duration = duration.min(MAX_STAGE_DURATION);
        let mut data = self.data();
        data.stage_duration = duration;
        data.run_delay = duration;
    }

    /// Delay until `run` reports `running`, for runs started from now on (capped at 30 days).
    pub fn set_run_delay(&self, delay: Duration) {
        self.data().run_delay = delay.min(MAX_STAGE_DURATION);
    }

    /// Makes the next start of `stage` in this workspace end in `failure` (calls add up).
    pub fn fail_next_stage(&self, workspace_id: u64, stage: Stage) {
        *self
            .data()
            .fail_next
            .entry((workspace_id, stage))
            .or_default() += 1;
    }

    /// What `GET .../pipeline/{stage}` would answer now (empty if never started or no such
    /// workspace); ignores whether the workspace runs.
    pub fn stage_status(&self, workspace_id: u64, stage: Stage) -> Vec<StageStatus> {
        let data = self.data();
        data.workspaces
            .get(&workspace_id)
            .map(|r| stage_status(r, stage, &self.inner.clock))
            .unwrap_or_default()
    }

    /// How often `stage` was started in this workspace.
    pub fn stage_start_count(&self, workspace_id: u64, stage: Stage) -> u32 {
        self.data()
            .workspaces
            .get(&workspace_id)
            .and_then(|r| r.stage_starts.get(&stage).copied())
            .unwrap_or(0)
    }

    /// The profile of the latest start of `stage` (`None` for `ci.yml` or never started).
    pub fn stage_profile(&self, workspace_id: u64, stage: Stage) -> Option<String> {
        self.data()
            .workspaces
            .get(&workspace_id)
            .and_then(|r| r.stages.get(&stage))
            .and_then(|run| run.profile.clone())
    }

    /// Replicas per landscape service (empty for an unknown workspace).
    pub fn service_replicas(&self, workspace_id: u64) -> BTreeMap<String, u32> {
        self.data()
            .workspaces
            .get(&workspace_id)
            .map(|r| {
                r.landscape
                    .services
                    .iter()
                    .map(|(name, replicas)| {
                        (
                            name.clone(),
                            u32::try_from(replicas.len()).unwrap_or(u32::MAX),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `Some(profile)` if the landscape is deployed (`Some(None)` for `ci.yml`), `None` if it
    /// never was, was torn down, or there is no such workspace.
    pub fn landscape_deployed(&self, workspace_id: u64) -> Option<Option<String>> {
        self.data()
            .workspaces
            .get(&workspace_id)
            .and_then(|r| r.landscape.deployed.clone())
    }

    /// Simulates a new commit pushed upstream to `branch` of `git_url` (creating the branch if
    /// needed) and returns its id. Workspaces see it after a `git pull`.
    pub fn push_commit(&self, git_url: &str, branch: &str) -> String {
        let mut data = self.data();
        let pushes = data
            .upstream
            .entry((git_url.to_owned(), branch.to_owned()))
            .or_default();
        *pushes += 1;
        fake_commit(git_url, branch, *pushes)
    }

    /// The commit checked out in a workspace (`None` without a repository).
    pub fn git_head(&self, workspace_id: u64) -> Option<String> {
        let data = self.data();
        let checkout = data.workspaces.get(&workspace_id)?.git.as_ref()?;
        Some(checkout.head.clone())
    }

    /// The branch checked out in a workspace (`None` without a repository).
    pub fn git_branch(&self, workspace_id: u64) -> Option<String> {
        let data = self.data();
        let checkout = data.workspaces.get(&workspace_id)?.git.as_ref()?;
        Some(checkout.branch.clone())
    }

    /// All domains, ordered by name.
    pub fn domains(&self) -> Vec<Domain> {
        self.data().domains.values().cloned().collect()
    }

    pub fn domain(&self, name: &str) -> Option<Domain> {
        self.data().domains.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Makes the next `n` `PATCH` and `PUT .../workspace-connections` calls on this domain
    /// answer `409 "Another request is in progress."`.
    pub fn set_domain_busy(&self, name: &str, n: u32) {
        self.data().domain_busy.insert(name.to_ascii_lowercase(), n);
    }

    /// Puts the domain's DNS records in place: the next `POST .../verify` verifies it (and
    /// issues its certificate). May be called before the domain is created.
    pub fn verify_domain_dns(&self, name: &str) {
        self.data().dns_ready.insert(name.to_ascii_lowercase());
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // Handlers never panic while holding the lock with half-applied changes.
        self.inner
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn authorize(&self, headers: &HeaderMap) -> ApiResult<()> {
        match bearer_token(headers) {
            None => Err(ApiError::Unauthorized("Missing bearer token.")),
            Some(token) if token == self.inner.token => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("Invalid API token.")),
        }
    }
}
