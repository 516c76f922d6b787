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

/// The simulator's HTTP API (under `/api`) with the shared middleware and `/_sim/` endpoints.
pub fn router(state: CodesphereSim) -> Router {
    let control = state.control.clone();
    let api = Router::new()
        .route("/api/teams", get(list_teams))
        .route("/api/teams/{teamId}", get(get_team))
        .route("/api/metadata/datacenters", get(list_datacenters))
        .route("/api/metadata/workspace-plans", get(list_plans))
        .route("/api/metadata/workspace-base-images", get(list_base_images))
        .route("/api/workspaces", post(create_workspace))
        .route(
            "/api/workspaces/{workspaceId}",
            get(get_workspace)
                .patch(update_workspace)
                .delete(delete_workspace),
        )
        .route(
            "/api/workspaces/{workspaceId}/status",
            get(workspace_status),
        )
        .route("/api/workspaces/team/{teamId}", get(list_workspaces))
        .route(
            "/api/workspaces/{workspaceId}/env-vars",
            get(list_env_vars).put(set_env_vars).delete(delete_env_vars),
        )
        .route(
            "/api/workspaces/{workspaceId}/pipeline/{stage}",
            get(pipeline_status),
        )
        .route(
            "/api/workspaces/{workspaceId}/pipeline/{stage}/start",
            post(start_stage),
        )
        .route(
            "/api/workspaces/{workspaceId}/pipeline/{stage}/start/{profile}",
            post(start_stage_with_profile),
        )
        .route(
            "/api/workspaces/{workspaceId}/pipeline/{stage}/stop",
            post(stop_stage),
        )
        .route(
            "/api/workspaces/{workspaceId}/landscape/deploy",
            post(deploy_landscape),
        )
        .route(
            "/api/workspaces/{workspaceId}/landscape/deploy/{profile}",
            post(deploy_landscape_with_profile),
        )
        .route(
            "/api/workspaces/{workspaceId}/landscape/teardown",
            delete(teardown_landscape),
        )
        .route(
            "/api/workspaces/{workspaceId}/landscape/scale",
            patch(scale_landscape),
        )
        .route("/api/workspaces/{workspaceId}/git/pull", post(git_pull))
        .route(
            "/api/workspaces/{workspaceId}/git/pull/{remote}",
            post(git_pull_remote),
        )
        .route(
            "/api/workspaces/{workspaceId}/git/pull/{remote}/{branch}",
            post(git_pull_branch),
        )
        .route("/api/workspaces/{workspaceId}/git/head", get(git_head))
        .route("/api/domains/team/{teamId}", get(list_domains))
        .route(
            "/api/domains/team/{teamId}/domain/{domainName}",
            get(get_domain)
                .post(create_domain)
                .patch(update_domain)
                .delete(delete_domain),
        )
        .route(
            "/api/domains/team/{teamId}/domain/{domainName}/verify",
            post(verify_domain),
        )
        .route(
            "/api/domains/team/{teamId}/domain/{domainName}/workspace-connections",
            put(set_workspace_connections),
        )
        .with_state(state);
    with_sim(api, control, render_error)
}

/// Path ids are integers ≥ 0.
fn parse_id(name: &str, raw: &str) -> ApiResult<u64> {
    raw.parse::<u64>()
        .map_err(|_| ApiError::Schema(format!("params/{name} must be a non-negative integer")))
}

async fn list_teams(State(sim): State<CodesphereSim>, headers: HeaderMap) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let data = sim.data();
    let teams: Vec<_> = data
        .teams
        .values()
        .map(|team| TeamWithRole { team, role: 0 })
        .collect();
    Ok(Json(teams).into_response())
}

async fn get_team(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(team_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let team_id = parse_id("teamId", &team_id)?;
    let data = sim.data();
    let team = data.teams.get(&team_id).ok_or(ApiError::TeamNotFound)?;
    Ok(Json(team).into_response())
}

async fn list_datacenters(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
) -> ApiResult<Json<&'static [Datacenter]>> {
    sim.authorize(&headers)?;
    Ok(Json(DATACENTERS))
}

async fn list_plans(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
) -> ApiResult<Json<&'static [Plan]>> {
    sim.authorize(&headers)?;
    Ok(Json(PLANS))
}

async fn list_base_images(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
) -> ApiResult<Json<&'static [BaseImage]>> {
    sim.authorize(&headers)?;
    Ok(Json(BASE_IMAGES))
}

/// Body of `POST /workspaces`. Unknown fields are ignored, as the spec does not forbid them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateWorkspace {
    team_id: u64,
    name: String,
    plan_id: u64,
    is_private_repo: bool,
    replicas: u32,
    base_image: Option<String>,
    git_url: Option<String>,
    initial_branch: Option<String>,
    clone_depth: Option<u32>,
    source_workspace_id: Option<u64>,
    welcome_message: Option<String>,
    vpn_config: Option<String>,
    restricted: Option<bool>,
    #[serde(default)]
    env: Vec<EnvVar>,
    storage_mib: Option<u64>,
    shared_vault_name: Option<String>,
    /// Not in the published spec; Codesphere's own Go client sends it.
    git_ref: Option<String>,
}

/// Body of `PATCH /workspaces/{id}`; `Some(None)` is an explicit `null`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateWorkspace {
    plan_id: Option<u64>,
    base_image: Option<String>,
    name: Option<String>,
    replicas: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    vpn_config: Option<Option<String>>,
    restricted: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    storage_mib: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    shared_vault_name: Option<Option<String>>,
}

fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Parses a JSON object body, rejecting `null` for fields the spec does not mark nullable
/// (serde alone would read such a `null` as "absent").
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], nullable: &[&str]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::Schema(format!("body is not valid JSON: {err}")))?;
    let Value::Object(fields) = &value else {
        return Err(ApiError::Schema("body must be object".to_owned()));
    };
    if let Some((name, _)) = fields
        .iter()
        .find(|(name, v)| v.is_null() && !nullable.contains(&name.as_str()))
    {
        return Err(ApiError::Schema(format!("body/{name} must not be null")));
    }
    serde_json::from_value(value).map_err(|err| ApiError::Schema(format!("body: {err}")))
}

fn check_min(field: &str, value: Option<u64>, min: u64) -> ApiResult<()> {
    match value {
        Some(v) if v < min => Err(ApiError::Schema(format!("body/{field} must be >= {min}"))),
        _ => Ok(()),
    }
}

/// `^[A-Za-z_][A-Za-z0-9_.-]*$`
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_plan(plan_id: u64, replicas: u32) -> ApiResult<()> {
    let plan =
        find_plan(plan_id).ok_or_else(|| ApiError::Rejected(format!("Unknown plan {plan_id}.")))?;
    if plan.deprecated {
        return Err(ApiError::Rejected(format!(
            "Plan {plan_id} ({}) is deprecated.",
            plan.title
        )));
    }
    if replicas > plan.max_replicas {
        return Err(ApiError::Rejected(format!(
            "Exceeding plan limits: plan {} allows at most {} replicas, requested {replicas}.",
            plan.title, plan.max_replicas
        )));
    }
    Ok(())
}

fn check_base_image(image: Option<&str>) -> ApiResult<()> {
    match image {
        Some(id) if !BASE_IMAGES.iter().any(|b| b.id == id) => {
            Err(ApiError::Rejected(format!("Unknown base image {id}.")))
        }
        _ => Ok(()),
    }
}

async fn create_workspace(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let req: CreateWorkspace = parse_body(&body, &[])?;
    check_min("replicas", Some(req.replicas.into()), 1)?;
    check_min("cloneDepth", req.clone_depth.map(u64::from), 1)?;
    check_min("storageMib", req.storage_mib, 1)?;
    if let Some(bad) = req.env.iter().find(|e| !valid_env_name(&e.name)) {
        return Err(ApiError::Schema(format!(
            "body/env name {:?} must match pattern \"^[A-Za-z_][A-Za-z0-9_.-]*$\"",
            bad.name
        )));
    }

    let mut data = sim.data();
    let team = data.teams.get(&req.team_id).ok_or(ApiError::TeamNotFound)?;
    let data_center_id = team.default_data_center_id;
    check_plan(req.plan_id, req.replicas)?;
    check_base_image(req.base_image.as_deref())?;
    if let Some(source) = req.source_workspace_id {
        if !data.workspaces.contains_key(&source) {
            return Err(ApiError::Rejected(format!(
                "Source workspace {source} not found."
            )));
        }
    }

    let git = checkout_at_create(&mut data, &req);
    let id = data.next_workspace_id;
    data.next_workspace_id += 1;
    let workspace = Workspace {
        id,
        team_id: req.team_id,
        name: req.name,
        plan_id: req.plan_id,
        is_private_repo: req.is_private_repo,
        replicas: req.replicas,
        base_image: req.base_image,
        data_center_id,
        user_id: SIM_USER_ID,
        git_url: req.git_url,
        initial_branch: req.initial_branch,
        source_workspace_id: req.source_workspace_id,
        welcome_message: req.welcome_message,
        vpn_config: req.vpn_config,
        restricted: req.restricted.unwrap_or(false),
        collect_traces: false,
        persistent_logs: false,
        dev_domain: format!("{id}-3000.{data_center_id}.codesphere.com"),
        created_at: format!("{:.3}", jiff::Timestamp::now()),
    };
    let now = Instant::now();
    let record = WorkspaceRecord {
        workspace: workspace.clone(),
        env: req.env,
        running_at: now.checked_add(data.start_delay),
        extra: CreateExtras {
            clone_depth: req.clone_depth,
            storage_mib: req.storage_mib,
            shared_vault_name: req.shared_vault_name,
            git_ref: req.git_ref,
        },
        git,
        stages: BTreeMap::new(),
        stage_starts: BTreeMap::new(),
        landscape: Landscape {
            deployed: None,
            services: BTreeMap::from([(DEFAULT_SERVICE.to_owned(), vec![now])]),
        },
    };
    data.workspaces.insert(id, record);
    Ok(Json(workspace).into_response())
}

async fn get_workspace(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let data = sim.data();
    let record = data
        .workspaces
        .get(&id)
        .ok_or(ApiError::WorkspaceNotFound)?;
    Ok(Json(&record.workspace).into_response())
}

async fn list_workspaces(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(team_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let team_id = parse_id("teamId", &team_id)?;
    let data = sim.data();
    if !data.teams.contains_key(&team_id) {
        return Err(ApiError::TeamNotFound);
    }
    let list: Vec<&Workspace> = data
        .workspaces
        .values()
        .map(|r| &r.workspace)
        .filter(|w| w.team_id == team_id)
        .collect();
    Ok(Json(list).into_response())
}

async fn update_workspace(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    // Every field is optional, so an empty body is the same as `{}`.
    let req: UpdateWorkspace = if body.iter().all(u8::is_ascii_whitespace) {
        UpdateWorkspace::default()
    } else {
        parse_body(&body, &["vpnConfig", "storageMib", "sharedVaultName"])?
    };
    check_min("replicas", req.replicas.map(u64::from), 1)?;
    check_min("storageMib", req.storage_mib.flatten(), 1)?;

    let mut data = sim.data();
    let record = data
        .workspaces
        .get_mut(&id)
        .ok_or(ApiError::WorkspaceNotFound)?;
    let ws = &mut record.workspace;
    let plan_id = req.plan_id.unwrap_or(ws.plan_id);
    let replicas = req.replicas.unwrap_or(ws.replicas);
    if req.plan_id.is_some() || req.replicas.is_some() {
        check_plan(plan_id, replicas)?;
    }
    check_base_image(req.base_image.as_deref())?;

    // Validated in full above, so the update applies all or nothing.
    ws.plan_id = plan_id;
    ws.replicas = replicas;
    if let Some(name) = req.name {
        ws.name = name;
    }
    if let Some(image) = req.base_image {
        ws.base_image = Some(image);
    }
    if let Some(vpn) = req.vpn_config {
        ws.vpn_config = vpn;
    }
    if let Some(restricted) = req.restricted {
        ws.restricted = restricted;
    }
    if let Some(storage) = req.storage_mib {
        record.extra.storage_mib = storage;
    }
    if let Some(vault) = req.shared_vault_name {
        record.extra.shared_vault_name = vault;
    }
    Ok(StatusCode::OK)
}

async fn delete_workspace(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let mut data = sim.data();
    data.workspaces
        .remove(&id)
        .ok_or(ApiError::WorkspaceNotFound)?;
    data.fail_next.retain(|(ws, _), _| *ws != id);
    // Assumption (research §8 says it is unknown): deleting a workspace also disconnects it
    // from every domain; a path left without workspaces by this is dropped.
    for domain in data.domains.values_mut() {
        domain.workspaces.retain(|_, ids| {
            let before = ids.len();
            ids.retain(|ws| *ws != id);
            ids.len() == before || !ids.is_empty()
        });
    }
    Ok(StatusCode::OK)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceStatus {
    is_running: bool,
}

async fn workspace_status(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<Json<WorkspaceStatus>> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let data = sim.data();
    let record = data
        .workspaces
        .get(&id)
        .ok_or(ApiError::WorkspaceNotFound)?;
    Ok(Json(WorkspaceStatus {
        is_running: record.is_running(Instant::now()),
    }))
}

// ---- Git ----

/// A fake commit id: 40 hex digits, a deterministic function of the repository, branch and push
/// count (FNV-1a with three seeds, each finished with a splitmix64 round).
fn fake_commit(git_url: &str, branch: &str, pushes: u32) -> String {
    let bytes: Vec<u8> = git_url
        .bytes()
        .chain([0])
        .chain(branch.bytes())
        .chain([0])
        .chain(pushes.to_le_bytes())
        .collect();
    let mut id = String::with_capacity(48);
    for seed in 1..=3u64 {
        let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in &bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        id.push_str(&format!("{h:016x}"));
    }
    id.truncate(40);
    id
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The checkout of a new workspace: its repository at the initial branch (or `gitRef`), or a
/// copy of the source workspace's checkout for a clone without `gitUrl`.
fn checkout_at_create(data: &mut Data, req: &CreateWorkspace) -> Option<Checkout> {
    let Some(url) = &req.git_url else {
        return req
            .source_workspace_id
            .and_then(|source| data.workspaces.get(&source))
            .and_then(|r| r.git.clone());
    };
    let pinned = req.git_ref.as_deref().filter(|r| is_commit_id(r));
    let branch = req
        .git_ref
        .as_deref()
        .filter(|_| pinned.is_none())
        .or(req.initial_branch.as_deref())
        .unwrap_or("main")
        .to_owned();
    let pushes = *data
        .upstream
        .entry((url.clone(), branch.clone()))
        .or_default();
    let head = pinned.map_or_else(
        || fake_commit(url, &branch, pushes),
        str::to_ascii_lowercase,
    );
    Some(Checkout {
        url: url.clone(),
        branch,
        head,
    })
}

fn no_repository() -> ApiError {
    ApiError::Git("fatal: not a git repository (the workspace has no repository).".to_owned())
}

fn pull(
    sim: &CodesphereSim,
    headers: &HeaderMap,
    workspace_id: &str,
    remote: Option<&str>,
    branch: Option<&str>,
) -> ApiResult<StatusCode> {
    sim.authorize(headers)?;
    let id = parse_id("workspaceId", workspace_id)?;
    let mut data = sim.data();
    let (url, current) = {
        let checkout = data.running(id)?.git.as_ref().ok_or_else(no_repository)?;
        (checkout.url.clone(), checkout.branch.clone())
    };
    if let Some(remote) = remote.filter(|r| *r != "origin") {
        return Err(ApiError::Git(format!(
            "fatal: '{remote}' does not appear to be a git repository."
        )));
    }
    let branch = branch.map_or(current, str::to_owned);
    let pushes = *data
        .upstream
        .get(&(url.clone(), branch.clone()))
        .ok_or_else(|| ApiError::Git(format!("fatal: couldn't find remote ref {branch}")))?;
    let head = fake_commit(&url, &branch, pushes);
    if let Some(checkout) = data.record(id)?.git.as_mut() {
        checkout.branch = branch;
        checkout.head = head;
    }
    Ok(StatusCode::OK)
}

async fn git_pull(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<StatusCode> {
    pull(&sim, &headers, &workspace_id, None, None)
}

async fn git_pull_remote(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, remote)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    pull(&sim, &headers, &workspace_id, Some(&remote), None)
}

async fn git_pull_branch(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, remote, branch)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    pull(&sim, &headers, &workspace_id, Some(&remote), Some(&branch))
}

#[derive(Serialize)]
struct GitHead<'a> {
    head: &'a str,
}

async fn git_head(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let mut data = sim.data();
    let checkout = data.running(id)?.git.as_ref().ok_or_else(no_repository)?;
    Ok(Json(GitHead {
        head: &checkout.head,
    })
    .into_response())
}

// ---- Env vars ----

/// Parses a JSON array body (required: an empty body is a schema violation).
fn parse_array<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<Vec<T>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::Schema(format!("body is not valid JSON: {err}")))?;
    if !value.is_array() {
        return Err(ApiError::Schema("body must be array".to_owned()));
    }
    serde_json::from_value(value).map_err(|err| ApiError::Schema(format!("body: {err}")))
}

fn check_env_name(name: &str) -> ApiResult<()> {
    if valid_env_name(name) {
        Ok(())
    } else {
        Err(ApiError::Schema(format!(
            "env name {name:?} must match pattern \"^[A-Za-z_][A-Za-z0-9_.-]*$\""
        )))
    }
}

async fn list_env_vars(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let mut data = sim.data();
    Ok(Json(&data.record(id)?.env).into_response())
}

async fn set_env_vars(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let vars: Vec<EnvVar> = parse_array(&body)?;
    for var in &vars {
        check_env_name(&var.name)?;
    }
    let mut data = sim.data();
    let env = &mut data.record(id)?.env;
    for var in vars {
        match env.iter_mut().find(|e| e.name == var.name) {
            Some(existing) => existing.value = var.value,
            None => env.push(var),
        }
    }
    Ok(StatusCode::OK)
}

async fn delete_env_vars(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let names: Vec<String> = parse_array(&body)?;
    for name in &names {
        check_env_name(name)?;
    }
    let mut data = sim.data();
    data.record(id)?.env.retain(|e| !names.contains(&e.name));
    Ok(StatusCode::OK)
}

// ---- Pipeline ----

/// `^[\w-]+(\.[\w-]+)*$`
fn valid_profile(profile: &str) -> bool {
    profile.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    })
}

fn check_profile(profile: Option<&str>) -> ApiResult<()> {
    match profile {
        Some(p) if !valid_profile(p) => Err(ApiError::Schema(format!(
            "params/profile {p:?} must match pattern \"^[\\w-]+(\\.[\\w-]+)*$\""
        ))),
        _ => Ok(()),
    }
}

/// `^(?:[a-z]|[a-z][-a-z0-9]{0,30}[a-z0-9])$`, the spec's pattern for a pipeline `server`.
fn valid_server_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 32
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

fn stage_status(record: &WorkspaceRecord, stage: Stage, clock: &Clock) -> Vec<StageStatus> {
    record
        .stages
        .get(&stage)
        .map(|run| run.render(stage, &record.landscape.services, clock, Instant::now()))
        .unwrap_or_default()
}

async fn pipeline_status(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, stage)): Path<(String, String)>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let stage = Stage::parse(&stage)?;
    let mut data = sim.data();
    let record = data.running(id)?;
    Ok(Json(stage_status(record, stage, &sim.inner.clock)).into_response())
}

fn start(
    sim: &CodesphereSim,
    headers: &HeaderMap,
    workspace_id: &str,
    stage: &str,
    profile: Option<String>,
) -> ApiResult<StatusCode> {
    sim.authorize(headers)?;
    let id = parse_id("workspaceId", workspace_id)?;
    let stage = Stage::parse(stage)?;
    check_profile(profile.as_deref())?;
    let mut data = sim.data();
    data.running(id)?;
    let fails = match data.fail_next.get_mut(&(id, stage)) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    };
    let length = match stage {
        Stage::Run => data.run_delay,
        Stage::Prepare | Stage::Test => data.stage_duration,
    };
    let record = data.record(id)?;
    record.stages.insert(
        stage,
        StageRun {
            started: Instant::now(),
            length,
            fails,
            stopped: None,
            profile,
        },
    );
    *record.stage_starts.entry(stage).or_default() += 1;
    Ok(StatusCode::OK)
}

async fn start_stage(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, stage)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    start(&sim, &headers, &workspace_id, &stage, None)
}

async fn start_stage_with_profile(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, stage, profile)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    start(&sim, &headers, &workspace_id, &stage, Some(profile))
}

async fn stop_stage(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, stage)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let stage = Stage::parse(&stage)?;
    let mut data = sim.data();
    if let Some(run) = data.running(id)?.stages.get_mut(&stage) {
        run.stopped.get_or_insert_with(Instant::now);
    }
    Ok(StatusCode::OK)
}

// ---- Landscape ----

fn deploy(
    sim: &CodesphereSim,
    headers: &HeaderMap,
    workspace_id: &str,
    profile: Option<String>,
) -> ApiResult<StatusCode> {
    sim.authorize(headers)?;
    let id = parse_id("workspaceId", workspace_id)?;
    check_profile(profile.as_deref())?;
    sim.data().record(id)?.landscape.deployed = Some(profile);
    Ok(StatusCode::OK)
}

async fn deploy_landscape(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<StatusCode> {
    deploy(&sim, &headers, &workspace_id, None)
}

async fn deploy_landscape_with_profile(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((workspace_id, profile)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    deploy(&sim, &headers, &workspace_id, Some(profile))
}

async fn teardown_landscape(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let mut data = sim.data();
    let record = data.record(id)?;
    record.landscape.deployed = None;
    if let Some(run) = record.stages.get_mut(&Stage::Run) {
        run.stopped.get_or_insert_with(Instant::now);
    }
    Ok(StatusCode::OK)
}

async fn scale_landscape(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(workspace_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let id = parse_id("workspaceId", &workspace_id)?;
    let counts: Map<String, Value> = parse_body(&body, &[])?;
    let mut scale = BTreeMap::new();
    for (service, count) in counts {
        match count.as_u64() {
            Some(n) if n >= 1 => scale.insert(service, n),
            _ => {
                return Err(ApiError::Schema(format!(
                    "body/{service} must be an integer >= 1"
                )))
            }
        };
    }
    let mut data = sim.data();
    let record = data.record(id)?;
    let max = find_plan(record.workspace.plan_id).map_or(1, |p| p.max_replicas);
    for (service, n) in &scale {
        if !valid_server_name(service) {
            return Err(ApiError::Rejected(format!(
                "Service name {service:?} is not a valid server name."
            )));
        }
        if *n > u64::from(max) {
            return Err(ApiError::Rejected(format!(
                "Exceeding plan limits: at most {max} replicas per service, requested {n} for \
                 {service}."
            )));
        }
    }
    let now = Instant::now();
    for (service, n) in scale {
        let replicas = record.landscape.services.entry(service).or_default();
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n < replicas.len() {
            replicas.truncate(n);
        } else {
            replicas.resize(n, now);
        }
    }
    Ok(StatusCode::OK)
}

// ---- Domains ----

/// A valid FQDN: at least two labels of 1-63 letters, digits or inner hyphens, at most 253
/// characters, and a top-level label that is not all digits.
fn valid_fqdn(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

fn domain_name(raw: &str) -> ApiResult<String> {
    let name = raw.to_ascii_lowercase();
    if valid_fqdn(&name) {
        Ok(name)
    } else {
        Err(ApiError::Schema(format!(
            "params/domainName {raw:?} must be a valid FQDN"
        )))
    }
}

fn missing_txt(domain: &Domain) -> String {
    format!(
        "TXT record \"{}\" not found for {}.",
        domain.dns_entries.txt, domain.name
    )
}

fn new_domain(team_id: u64, data_center_id: u64, name: String) -> Domain {
    let token = fake_commit("domain-verification", &name, 0);
    let mut domain = Domain {
        team_id,
        data_center_id,
        workspaces: BTreeMap::new(),
        certificate_request_status: CertificateRequestStatus {
            issued: false,
            reason: Some("Waiting for domain verification.".to_owned()),
        },
        dns_entries: DnsEntries {
            a: format!("203.0.113.{}", 10 + data_center_id % 200),
            cname: format!("custom-domains.dc{data_center_id}.codesphere.com"),
            txt: format!("codesphere-verification={}", &token[..32]),
        },
        domain_verification_status: DomainVerificationStatus {
            verified: false,
            reason: None,
        },
        name,
        custom_config_revision: None,
        custom_config: None,
        restricted: Some(false),
    };
    domain.domain_verification_status.reason = Some(missing_txt(&domain));
    domain
}

fn team_and_domain(team_id: &str, domain: &str) -> ApiResult<(u64, String)> {
    Ok((parse_id("teamId", team_id)?, domain_name(domain)?))
}

async fn list_domains(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path(team_id): Path<String>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let team_id = parse_id("teamId", &team_id)?;
    let data = sim.data();
    if !data.teams.contains_key(&team_id) {
        return Err(ApiError::TeamNotFound);
    }
    let list: Vec<&Domain> = data
        .domains
        .values()
        .filter(|d| d.team_id == team_id)
        .collect();
    Ok(Json(list).into_response())
}

async fn get_domain(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    let mut data = sim.data();
    Ok(Json(&*data.domain(team_id, &name)?).into_response())
}

async fn create_domain(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    let mut data = sim.data();
    let data_center_id = data
        .teams
        .get(&team_id)
        .ok_or(ApiError::TeamNotFound)?
        .default_data_center_id;
    let domain = match data.domains.get(&name) {
        Some(existing) if existing.team_id == team_id => existing,
        Some(_) => {
            return Err(ApiError::Rejected(format!(
                "Domain {name} is already in use."
            )))
        }
        None => data
            .domains
            .entry(name.clone())
            .or_insert_with(|| new_domain(team_id, data_center_id, name)),
    };
    Ok(Json(domain).into_response())
}

/// Body of `PATCH /domains/.../domain/{domainName}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateDomain {
    max_body_size_mb: Option<f64>,
    max_connection_timeout_s: Option<f64>,
    use_regex: Option<bool>,
    restricted: Option<bool>,
}

async fn update_domain(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    // Every field is optional, so an empty body is the same as `{}`.
    let req: UpdateDomain = if body.iter().all(u8::is_ascii_whitespace) {
        UpdateDomain::default()
    } else {
        parse_body(&body, &[])?
    };
    for (field, value) in [
        ("maxBodySizeMb", req.max_body_size_mb),
        ("maxConnectionTimeoutS", req.max_connection_timeout_s),
    ] {
        if value.is_some_and(|v| v < 0.0) {
            return Err(ApiError::Rejected(format!("{field} must not be negative.")));
        }
    }
    let mut data = sim.data();
    data.domain(team_id, &name)?;
    data.claim_domain(&name)?;
    let domain = data.domain(team_id, &name)?;
    let config_change = req.max_body_size_mb.is_some()
        || req.max_connection_timeout_s.is_some()
        || req.use_regex.is_some();
    if config_change {
        let config = domain
            .custom_config
            .get_or_insert_with(CustomConfig::default);
        if let Some(v) = req.max_body_size_mb {
            config.max_body_size_mb = Some(v);
        }
        if let Some(v) = req.max_connection_timeout_s {
            config.max_connection_timeout_s = Some(v);
        }
        if let Some(v) = req.use_regex {
            config.use_regex = Some(v);
        }
        domain.custom_config_revision = Some(domain.custom_config_revision.map_or(1, |r| r + 1));
    }
    if let Some(restricted) = req.restricted {
        domain.restricted = Some(restricted);
    }
    Ok(Json(&*domain).into_response())
}

async fn delete_domain(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    let mut data = sim.data();
    data.domain(team_id, &name)?;
    data.domains.remove(&name);
    Ok(StatusCode::OK)
}

async fn verify_domain(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    let mut data = sim.data();
    let dns_ready = data.dns_ready.contains(&name);
    let domain = data.domain(team_id, &name)?;
    if dns_ready {
        domain.domain_verification_status = DomainVerificationStatus {
            verified: true,
            reason: None,
        };
        domain.certificate_request_status = CertificateRequestStatus {
            issued: true,
            reason: None,
        };
    }
    Ok(Json(&domain.domain_verification_status).into_response())
}

async fn set_workspace_connections(
    State(sim): State<CodesphereSim>,
    headers: HeaderMap,
    Path((team_id, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authorize(&headers)?;
    let (team_id, name) = team_and_domain(&team_id, &name)?;
    let connections: BTreeMap<String, Vec<u64>> = if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Schema("body must be object".to_owned()));
    } else {
        parse_body(&body, &[])?
    };
    let mut data = sim.data();
    data.domain(team_id, &name)?;
    data.claim_domain(&name)?;
    for id in connections.values().flatten() {
        let of_team = data.workspaces.get(id).map(|r| r.workspace.team_id) == Some(team_id);
        if !of_team {
            return Err(ApiError::Rejected(format!(
                "Workspace {id} is not a workspace of team {team_id}."
            )));
        }
    }
    let domain = data.domain(team_id, &name)?;
    domain.workspaces = connections;
    Ok(Json(&*domain).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::spec_check::{
        load_spec, operation, param_errors, problem_schema, response_schema, Checker,
    };
    use crate::sim::{bind, SimServer, SimStats};
    use reqwest::Method;
    use serde_json::json;

    const TOKEN: &str = "test-token";

    struct Harness {
        server: SimServer,
        sim: CodesphereSim,
        http: reqwest::Client,
        api: String,
    }

    impl Harness {
        async fn start(config: SimConfig) -> Self {
            let sim = CodesphereSim::new(&config);
            let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
                .await
                .expect("bind");
            let api = format!("{}/api", server.base_url());
            Self {
                server,
                sim,
                http: reqwest::Client::new(),
                api,
            }
        }

        async fn default() -> Self {
            Self::start(SimConfig {
                token: TOKEN.to_owned(),
                ..SimConfig::default()
            })
            .await
        }

        /// Sends an authorized request; returns status, headers and the raw body.
        async fn call(
            &self,
            method: Method,
            path: &str,
            body: Option<&Value>,
        ) -> (u16, reqwest::header::HeaderMap, String) {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.api))
                .bearer_auth(TOKEN);
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, headers, resp.text().await.expect("body"))
        }

        async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
            let (status, _, text) = self.call(method, path, body).await;
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("JSON body")
            };
            (status, value)
        }
    }

    fn create_body(name: &str) -> Value {
        json!({
            "teamId": 1,
            "name": name,
            "planId": 8,
            "isPrivateRepo": false,
            "replicas": 1,
            "gitUrl": "https://github.com/acme/app.git",
            "initialBranch": "main",
            "env": [{ "name": "GREETING", "value": "hi" }]
        })
    }

    fn assert_problem(body: &Value, status: u16) {
        assert_eq!(body["status"], status, "problem status in {body}");
        assert!(body["title"].is_string(), "title in {body}");
        assert!(body["traceId"].is_string(), "traceId in {body}");
    }

    #[tokio::test]
    async fn rejects_missing_or_wrong_token() {
        let h = Harness::default().await;
        for path in ["/teams", "/workspaces/team/1", "/metadata/workspace-plans"] {
            let resp = h
                .http
                .get(format!("{}{path}", h.api))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 401, "{path} without token");
            assert_problem(&resp.json().await.expect("json"), 401);
        }
        let resp = h
            .http
            .post(format!("{}/workspaces", h.api))
            .bearer_auth("wrong")
            .json(&create_body("x"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.expect("json");
        assert_problem(&body, 401);
        assert!(!body.to_string().contains("wrong"), "token echoed: {body}");
        assert_eq!(h.sim.workspaces().len(), 0);
    }

    #[tokio::test]
    async fn workspace_lifecycle() {
        let h = Harness::default().await;
        h.sim.set_start_delay(Duration::from_secs(1));

        let (status, created) = h
            .json(Method::POST, "/workspaces", Some(&create_body("web")))
            .await;
        assert_eq!(status, 200, "{created}");
        let id = created["id"].as_u64().expect("id");
        assert_eq!(created["name"], "web");
        assert_eq!(created["teamId"], 1);
        assert_eq!(created["initialBranch"], "main");
        assert_eq!(created["sourceWorkspaceId"], Value::Null);
        assert_eq!(h.sim.count_workspaces_named("web"), 1);
        assert_eq!(
            h.sim.env_vars(id),
            Some(vec![EnvVar {
                name: "GREETING".into(),
                value: "hi".into()
            }])
        );

        let (status, got) = h
            .json(Method::GET, &format!("/workspaces/{id}"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(got, created, "GET returns what POST returned");

        let (status, running) = h
            .json(Method::GET, &format!("/workspaces/{id}/status"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(running, json!({ "isRunning": false }));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, running) = h
            .json(Method::GET, &format!("/workspaces/{id}/status"), None)
            .await;
        assert_eq!(running, json!({ "isRunning": true }));

        // Names are not unique: a second create with the same name is a second workspace.
        let (status, _) = h
            .json(Method::POST, "/workspaces", Some(&create_body("web")))
            .await;
        assert_eq!(status, 200);
        let (status, list) = h.json(Method::GET, "/workspaces/team/1", None).await;
        assert_eq!(status, 200);
        assert_eq!(list.as_array().map(Vec::len), Some(2));
        assert_eq!(h.sim.count_workspaces_named("web"), 2);

        let (status, _, text) = h
            .call(
                Method::PATCH,
                &format!("/workspaces/{id}"),
                Some(&json!({ "planId": 20, "replicas": 4, "name": "web-2", "vpnConfig": null })),
            )
            .await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "PATCH answers 200 empty"
        );
        let ws = h.sim.workspace(id).expect("exists");
        assert_eq!(
            (ws.plan_id, ws.replicas, ws.name.as_str()),
            (20, 4, "web-2")
        );

        // Micro allows 3 replicas: the change is refused and nothing is applied.
        let (status, body) = h
            .json(
                Method::PATCH,
                &format!("/workspaces/{id}"),
                Some(&json!({ "planId": 8, "name": "nope" })),
            )
            .await;
        assert_eq!(status, 400);
        assert_problem(&body, 400);
        assert_eq!(h.sim.workspace(id).map(|w| w.name), Some("web-2".into()));

        let (status, _, text) = h
            .call(Method::DELETE, &format!("/workspaces/{id}"), None)
            .await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "DELETE answers 200 empty"
        );
        let (status, body) = h
            .json(Method::GET, &format!("/workspaces/{id}"), None)
            .await;
        assert_eq!(status, 404);
        assert_problem(&body, 404);
        assert_eq!(body["title"], "Workspace is not found.");
        let (status, _) = h
            .json(Method::DELETE, &format!("/workspaces/{id}"), None)
            .await;
        assert_eq!(status, 404, "second delete");
        let (status, _) = h
            .json(
                Method::PATCH,
                &format!("/workspaces/{id}"),
                Some(&json!({})),
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = h
            .json(Method::GET, &format!("/workspaces/{id}/status"), None)
            .await;
        assert_eq!(status, 404);
        assert_eq!(h.sim.count_workspaces_named("web"), 1);
    }

    #[tokio::test]
    async fn create_validates_like_the_spec() {
        let h = Harness::default().await;
        let mut cases: Vec<(Value, u16)> = Vec::new();
        for field in ["teamId", "name", "planId", "isPrivateRepo", "replicas"] {
            let mut body = create_body("x");
            body.as_object_mut().map(|o| o.remove(field));
            cases.push((body, 400));
        }
        let with = |field: &str, value: Value| {
            let mut body = create_body("x");
            body[field] = value;
            body
        };
        cases.push((with("replicas", json!(0)), 400));
        cases.push((with("replicas", json!(4)), 400)); // above Micro's maxReplicas
        cases.push((with("teamId", json!(-1)), 400));
        cases.push((with("teamId", json!("1")), 400));
        cases.push((with("isPrivateRepo", json!("false")), 400));
        cases.push((with("gitUrl", Value::Null), 400));
        cases.push((with("cloneDepth", json!(0)), 400));
        cases.push((with("planId", json!(9999)), 400));
        cases.push((with("planId", json!(1)), 400)); // deprecated
        cases.push((with("baseImage", json!("windows-95")), 400));
        cases.push((with("env", json!([{ "name": "1BAD", "value": "" }])), 400));
        cases.push((with("env", json!([{ "name": "OK" }])), 400));
        cases.push((with("teamId", json!(42)), 404));
        cases.push((json!([1, 2]), 400));
        for (body, want) in cases {
            let (status, got) = h.json(Method::POST, "/workspaces", Some(&body)).await;
            assert_eq!(status, want, "body {body} answered {got}");
            assert_problem(&got, want);
        }
        let (status, body) = h.json(Method::GET, "/workspaces/abc", None).await;
        assert_eq!(status, 400);
        assert_eq!(body["title"], SCHEMA_MISMATCH);
        assert!(h.sim.workspaces().is_empty(), "nothing created");

        let (status, _) = h
            .json(
                Method::POST,
                "/workspaces",
                Some(&with("baseImage", json!("ubuntu-24.04"))),
            )
            .await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let h = Harness::start(SimConfig {
            token: TOKEN.to_owned(),
            rate_limit_per_minute: Some(60),
            ..SimConfig::default()
        })
        .await;
        let calls = (0..100).map(|_| h.call(Method::GET, "/teams", None));
        let results = futures::future::join_all(calls).await;
        let mut ok = 0;
        let mut limited = 0;
        for (status, headers, text) in results {
            match status {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    let secs: u64 = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .expect("Retry-After in whole seconds");
                    assert!((1..=60).contains(&secs), "Retry-After {secs}");
                    let body: Value = serde_json::from_str(&text).expect("json");
                    assert_problem(&body, 429);
                }
                other => panic!("unexpected status {other}: {text}"),
            }
        }
        assert_eq!(ok, 60, "a minute's worth passes");
        assert_eq!(
            limited, 40,
            "the rest of a burst of 100 at 60/min is refused"
        );
        let stats = h.sim.control().stats();
        assert_eq!(stats.rate_limited_total, limited);
        assert_eq!(stats.requests_total, 100);
        assert_eq!(stats.max_requests_per_minute, 60, "{stats:?}");
    }

    #[tokio::test]
    async fn refused_requests_do_not_count_against_the_limit() {
        let h = Harness::start(SimConfig {
            token: TOKEN.to_owned(),
            rate_limit_per_minute: Some(3),
            ..SimConfig::default()
        })
        .await;
        for _ in 0..3 {
            assert_eq!(h.call(Method::GET, "/teams", None).await.0, 200);
        }
        for _ in 0..2 {
            let (status, headers, _) = h.call(Method::GET, "/teams", None).await;
            assert_eq!(status, 429);
            let secs: u64 = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((58..=60).contains(&secs), "Retry-After {secs}");
        }
        let stats = h.sim.control().stats();
        assert_eq!(stats.rate_limited_total, 2);
        assert_eq!(stats.rate_limit_per_minute, Some(3));
        assert_eq!(stats.max_requests_per_minute, 3, "{stats:?}");
    }

    #[tokio::test]
    async fn outage_switch_answers_503() {
        let h = Harness::default().await;
        h.sim.control().set_outage(true);
        let (status, body) = h.json(Method::GET, "/teams", None).await;
        assert_eq!(status, 503);
        assert_problem(&body, 503);
        let (status, _) = h
            .json(Method::POST, "/workspaces", Some(&create_body("x")))
            .await;
        assert_eq!(status, 503);
        assert!(h.sim.workspaces().is_empty(), "outage drops the request");

        // Admin endpoints keep working during the outage.
        let resp = h
            .http
            .post(format!("{}/_sim/faults", h.server.base_url()))
            .json(&json!({ "outage": false }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let (status, _) = h.json(Method::GET, "/teams", None).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn stats_count_requests_per_route() {
        let h = Harness::default().await;
        for _ in 0..3 {
            h.call(Method::GET, "/teams", None).await;
        }
        h.call(Method::GET, "/workspaces/123", None).await;
        h.call(Method::GET, "/workspaces/456", None).await;
        h.call(Method::GET, "/no/such/path", None).await;
        let stats: SimStats = h
            .http
            .get(format!("{}/_sim/stats", h.server.base_url()))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(stats.requests_total, 6);
        assert_eq!(stats.requests_for("GET", "/api/teams"), 3);
        assert_eq!(
            stats.requests_for("GET", "/api/workspaces/{workspaceId}"),
            2
        );
        assert_eq!(stats.requests_for("GET", crate::sim::UNMATCHED_ROUTE), 1);
        assert_eq!(stats, h.sim.control().stats());
    }

    /// Creates a workspace from `body` and returns its id.
    async fn create(h: &Harness, body: &Value) -> u64 {
        let (status, created) = h.json(Method::POST, "/workspaces", Some(body)).await;
        assert_eq!(status, 200, "{created}");
        created["id"].as_u64().expect("id")
    }

    async fn stage_status_of(h: &Harness, id: u64, stage: &str) -> Vec<StageStatus> {
        let (status, body) = h
            .json(
                Method::GET,
                &format!("/workspaces/{id}/pipeline/{stage}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("stage status array")
    }

    fn states(elements: &[StageStatus]) -> Vec<StageState> {
        elements.iter().map(|e| e.state).collect()
    }

    fn step_states(element: &StageStatus) -> Vec<StageState> {
        element.steps.iter().map(|s| s.state).collect()
    }

    /// `(server, replica, state)` of each element.
    fn placement(elements: &[StageStatus]) -> Vec<(String, String, StageState)> {
        elements
            .iter()
            .map(|e| (e.server.clone(), e.replica.clone(), e.state))
            .collect()
    }

    #[tokio::test]
    async fn stage_timeline_is_a_function_of_time() {
        use StageState::{Aborted, Failure, Running, Success, Waiting};
        let clock = Clock::now();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut services = BTreeMap::from([("web".to_owned(), vec![t0])]);
        let mut run = StageRun {
            started: t0,
            length: Duration::from_secs(4),
            fails: false,
            stopped: None,
            profile: None,
        };

        // prepare: waiting for a quarter, then two steps of 1.5 s each.
        let at = |run: &StageRun, services: &BTreeMap<String, Vec<Instant>>, t: u64| {
            run.render(Stage::Prepare, services, &clock, ms(t))
        };
        let s = at(&run, &services, 0);
        assert_eq!(placement(&s), [(IDE_SERVER.into(), "0".into(), Waiting)]);
        assert_eq!(step_states(&s[0]), [Waiting, Waiting]);
        assert_eq!(
            (s[0].started_at.as_ref(), s[0].finished_at.as_ref()),
            (None, None)
        );
        assert_eq!(states(&at(&run, &services, 999)), [Waiting]);
        let s = at(&run, &services, 1000);
        assert_eq!(states(&s), [Running]);
        assert_eq!(step_states(&s[0]), [Running, Waiting]);
        assert_eq!(s[0].started_at, Some(clock.render(ms(1000))));
        let s = at(&run, &services, 2500);
        assert_eq!(step_states(&s[0]), [Success, Running]);
        assert_eq!(s[0].steps[0].finished_at, Some(clock.render(ms(2500))));
        let s = at(&run, &services, 4000);
        assert_eq!(states(&s), [Success]);
        assert_eq!(step_states(&s[0]), [Success, Success]);
        assert_eq!(s[0].finished_at, Some(clock.render(ms(4000))));

        run.fails = true;
        let s = at(&run, &services, 3999);
        assert_eq!(step_states(&s[0]), [Success, Running]);
        let s = at(&run, &services, 4000);
        assert_eq!(states(&s), [Failure]);
        assert_eq!(
            step_states(&s[0]),
            [Success, Failure],
            "fails in its last step"
        );

        run.fails = false;
        run.stopped = Some(ms(2000));
        let s = at(&run, &services, 1500);
        assert_eq!(
            states(&s),
            [Running],
            "a stop in the future does not count yet"
        );
        let s = at(&run, &services, 5000);
        assert_eq!(states(&s), [Aborted]);
        assert_eq!(step_states(&s[0]), [Aborted, Aborted]);
        assert_eq!(s[0].finished_at, Some(clock.render(ms(2000))));
        assert_eq!(s[0].steps[1].started_at, None, "never started");
        run.stopped = Some(ms(4500));
        assert_eq!(
            states(&at(&run, &services, 5000)),
            [Success],
            "stop after the end"
        );

        // run: one element per service and replica, running after the delay, until stopped.
        let mut run = StageRun {
            length: Duration::from_secs(1),
            stopped: None,
            ..run
        };
        let at = |run: &StageRun, services: &BTreeMap<String, Vec<Instant>>, t: u64| {
            run.render(Stage::Run, services, &clock, ms(t))
        };
        assert_eq!(
            placement(&at(&run, &services, 999)),
            [("web".into(), "0".into(), Waiting)]
        );
        let s = at(&run, &services, 1000);
        assert_eq!(states(&s), [Running]);
        assert_eq!(step_states(&s[0]), [Running]);
        assert_eq!(s[0].finished_at, None);
        services.insert("api".into(), vec![t0, ms(5000)]);
        let s = at(&run, &services, 5500);
        assert_eq!(
            placement(&s),
            [
                ("api".into(), "0".into(), Running),
                ("api".into(), "1".into(), Waiting),
                ("web".into(), "0".into(), Running),
            ],
            "a replica added later waits for the delay"
        );
        assert_eq!(
            states(&at(&run, &services, 6000)),
            [Running, Running, Running]
        );
        run.stopped = Some(ms(7000));
        let s = at(&run, &services, 7000);
        assert_eq!(states(&s), [Aborted, Aborted, Aborted]);
        assert_eq!(s[0].finished_at, Some(clock.render(ms(7000))));
        run.stopped = None;
        run.fails = true;
        assert_eq!(
            states(&at(&run, &services, 999)),
            [Waiting, Waiting, Waiting]
        );
        assert_eq!(states(&at(&run, &services, 1000))[2], Failure);
    }

    #[tokio::test]
    async fn pipeline_stages_run_their_course() {
        let h = Harness::default().await;
        h.sim.set_start_delay(Duration::from_secs(600));
        let id = create(&h, &create_body("app")).await;

        // Every pipeline call needs a running workspace.
        for (method, suffix) in [
            (Method::GET, "pipeline/prepare"),
            (Method::POST, "pipeline/prepare/start"),
            (Method::POST, "pipeline/run/start/prod"),
            (Method::POST, "pipeline/test/stop"),
        ] {
            let (status, body) = h
                .json(method, &format!("/workspaces/{id}/{suffix}"), None)
                .await;
            assert_eq!(status, 400, "{suffix}: {body}");
            assert_problem(&body, 400);
            assert_eq!(body["title"], "Workspace is not running.");
        }
        assert_eq!(h.sim.stage_start_count(id, Stage::Prepare), 0);
        assert!(h.sim.set_workspace_running(id, true));
        assert!(!h.sim.set_workspace_running(1, true), "no such workspace");
        assert!(
            stage_status_of(&h, id, "prepare").await.is_empty(),
            "never started"
        );

        // prepare: waiting (first 300 ms), running, then success after 1.2 s.
        h.sim.set_stage_duration(Duration::from_millis(1200));
        let prepare = format!("/workspaces/{id}/pipeline/prepare/start");
        let (status, _, text) = h.call(Method::POST, &prepare, None).await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "start answers 200 empty"
        );
        let s = stage_status_of(&h, id, "prepare").await;
        assert_eq!(
            placement(&s),
            [(IDE_SERVER.into(), "0".into(), StageState::Waiting)]
        );
        tokio::time::sleep(Duration::from_millis(650)).await;
        let s = stage_status_of(&h, id, "prepare").await;
        assert_eq!(states(&s), [StageState::Running]);
        assert!(
            s[0].started_at.is_some() && s[0].finished_at.is_none(),
            "{s:?}"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        let s = stage_status_of(&h, id, "prepare").await;
        assert_eq!(states(&s), [StageState::Success]);
        assert_eq!(step_states(&s[0]), [StageState::Success; 2]);
        let started = s[0].started_at.clone().expect("startedAt");
        let finished = s[0].finished_at.clone().expect("finishedAt");
        let started: jiff::Timestamp = started.parse().expect("RFC 3339");
        let finished: jiff::Timestamp = finished.parse().expect("RFC 3339");
        assert!(finished > started, "{started} .. {finished}");

        // test: the injected failure hits the next start only.
        h.sim.set_stage_duration(Duration::ZERO);
        h.sim.fail_next_stage(id, Stage::Test);
        let test = format!("/workspaces/{id}/pipeline/test/start");
        assert_eq!(h.call(Method::POST, &test, None).await.0, 200);
        let s = stage_status_of(&h, id, "test").await;
        assert_eq!(states(&s), [StageState::Failure]);
        assert_eq!(
            step_states(&s[0]),
            [StageState::Success, StageState::Failure]
        );
        assert_eq!(h.call(Method::POST, &test, None).await.0, 200);
        assert_eq!(
            states(&stage_status_of(&h, id, "test").await),
            [StageState::Success]
        );
        assert_eq!(
            states(&stage_status_of(&h, id, "prepare").await),
            [StageState::Success]
        );

        // A stopped stage is aborted.
        h.sim.set_stage_duration(Duration::from_secs(60));
        assert_eq!(h.call(Method::POST, &prepare, None).await.0, 200);
        assert_eq!(
            states(&stage_status_of(&h, id, "prepare").await),
            [StageState::Waiting]
        );
        let stop = format!("/workspaces/{id}/pipeline/prepare/stop");
        let (status, _, text) = h.call(Method::POST, &stop, None).await;
        assert_eq!((status, text.as_str()), (200, ""));
        assert_eq!(
            states(&stage_status_of(&h, id, "prepare").await),
            [StageState::Aborted]
        );

        // run: waiting for the run delay, then running on the landscape until stopped.
        h.sim.set_run_delay(Duration::ZERO);
        let run = format!("/workspaces/{id}/pipeline/run/start/staging");
        assert_eq!(h.call(Method::POST, &run, None).await.0, 200);
        let s = stage_status_of(&h, id, "run").await;
        assert_eq!(
            placement(&s),
            [(DEFAULT_SERVICE.into(), "0".into(), StageState::Running)]
        );
        assert_eq!(h.sim.stage_profile(id, Stage::Run), Some("staging".into()));
        assert_eq!(h.sim.stage_status(id, Stage::Run), s);
        let stop = format!("/workspaces/{id}/pipeline/run/stop");
        assert_eq!(h.call(Method::POST, &stop, None).await.0, 200);
        assert_eq!(
            states(&stage_status_of(&h, id, "run").await),
            [StageState::Aborted]
        );
        h.sim.fail_next_stage(id, Stage::Run);
        let run = format!("/workspaces/{id}/pipeline/run/start");
        assert_eq!(h.call(Method::POST, &run, None).await.0, 200);
        assert_eq!(
            states(&stage_status_of(&h, id, "run").await),
            [StageState::Failure]
        );
        assert_eq!(h.sim.stage_profile(id, Stage::Run), None);

        assert_eq!(h.sim.stage_start_count(id, Stage::Prepare), 2);
        assert_eq!(h.sim.stage_start_count(id, Stage::Test), 2);
        assert_eq!(h.sim.stage_start_count(id, Stage::Run), 2);

        let (status, body) = h
            .json(
                Method::POST,
                &format!("/workspaces/{id}/pipeline/build/start"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["title"].as_str()),
            (400, Some(SCHEMA_MISMATCH))
        );
        let (status, body) = h
            .json(
                Method::POST,
                &format!("/workspaces/{id}/pipeline/run/start/a..b"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["title"].as_str()),
            (400, Some(SCHEMA_MISMATCH))
        );
        let (status, body) = h
            .json(Method::GET, "/workspaces/1/pipeline/run", None)
            .await;
        assert_eq!(status, 404);
        assert_problem(&body, 404);
        assert_eq!(
            h.sim.stage_start_count(id, Stage::Run),
            2,
            "refused starts do not count"
        );
    }

    #[tokio::test]
    async fn landscape_scale_shows_in_run_stage() {
        use StageState::{Aborted, Running, Waiting};
        let h = Harness::default().await;
        h.sim.set_start_delay(Duration::ZERO);
        h.sim.set_stage_duration(Duration::ZERO);
        let id = create(&h, &create_body("app")).await; // Micro: at most 3 replicas
        assert_eq!(
            h.sim.service_replicas(id),
            BTreeMap::from([("web".into(), 1)])
        );
        let run = format!("/workspaces/{id}/pipeline/run/start");
        assert_eq!(h.call(Method::POST, &run, None).await.0, 200);
        let s = stage_status_of(&h, id, "run").await;
        assert_eq!(placement(&s), [("web".into(), "0".into(), Running)]);

        let scale = format!("/workspaces/{id}/landscape/scale");
        let body = json!({ "web": 3, "worker": 2 });
        let (status, _, text) = h.call(Method::PATCH, &scale, Some(&body)).await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "scale answers 200 empty"
        );
        let s = stage_status_of(&h, id, "run").await;
        let want: Vec<(String, String, StageState)> = [
            ("web", "0"),
            ("web", "1"),
            ("web", "2"),
            ("worker", "0"),
            ("worker", "1"),
        ]
        .into_iter()
        .map(|(server, replica)| (server.into(), replica.into(), Running))
        .collect();
        assert_eq!(placement(&s), want);
        assert_eq!(
            h.sim.service_replicas(id),
            BTreeMap::from([("web".into(), 3), ("worker".into(), 2)])
        );

        // Refused: above the plan's maxReplicas, below 1, not a number, not a server name.
        for body in [
            json!({ "web": 4 }),
            json!({ "web": 1, "worker": 4 }),
            json!({ "web": 0 }),
            json!({ "web": -1 }),
            json!({ "web": 1.5 }),
            json!({ "web": "2" }),
            json!({ "web": null }),
            json!({ "Web_1": 1 }),
            json!([1]),
        ] {
            let (status, problem) = h.json(Method::PATCH, &scale, Some(&body)).await;
            assert_eq!(status, 400, "{body}: {problem}");
            assert_problem(&problem, 400);
        }
        assert_eq!(
            h.sim.service_replicas(id),
            BTreeMap::from([("web".into(), 3), ("worker".into(), 2)]),
            "refused changes apply nothing"
        );
        let (status, _) = h
            .json(
                Method::PATCH,
                "/workspaces/1/landscape/scale",
                Some(&json!({ "web": 1 })),
            )
            .await;
        assert_eq!(status, 404);

        // Scaling down drops elements; replicas added while running wait for the run delay.
        h.sim.set_run_delay(Duration::from_secs(60));
        let body = json!({ "web": 1, "worker": 3 });
        assert_eq!(h.call(Method::PATCH, &scale, Some(&body)).await.0, 200);
        let s = stage_status_of(&h, id, "run").await;
        assert_eq!(
            states(&s),
            [Running, Running, Running, Running],
            "delay of the running run"
        );
        let run_delayed = format!("/workspaces/{id}/pipeline/run/start");
        assert_eq!(h.call(Method::POST, &run_delayed, None).await.0, 200);
        assert_eq!(states(&stage_status_of(&h, id, "run").await), [Waiting; 4]);
        h.sim.set_run_delay(Duration::ZERO);
        assert_eq!(h.call(Method::POST, &run_delayed, None).await.0, 200);
        assert_eq!(
            h.call(Method::PATCH, &scale, Some(&json!({ "worker": 1 })))
                .await
                .0,
            200
        );
        assert_eq!(
            states(&stage_status_of(&h, id, "run").await),
            [Running, Running]
        );

        // Deploy records the profile; teardown aborts the run.
        assert_eq!(h.sim.landscape_deployed(id), None);
        let deploy = format!("/workspaces/{id}/landscape/deploy");
        let (status, _, text) = h.call(Method::POST, &deploy, None).await;
        assert_eq!((status, text.as_str()), (200, ""));
        assert_eq!(h.sim.landscape_deployed(id), Some(None));
        assert_eq!(
            h.call(Method::POST, &format!("{deploy}/prod"), None)
                .await
                .0,
            200
        );
        assert_eq!(h.sim.landscape_deployed(id), Some(Some("prod".into())));
        let teardown = format!("/workspaces/{id}/landscape/teardown");
        let (status, _, text) = h.call(Method::DELETE, &teardown, None).await;
        assert_eq!((status, text.as_str()), (200, ""));
        assert_eq!(h.sim.landscape_deployed(id), None);
        assert_eq!(
            states(&stage_status_of(&h, id, "run").await),
            [Aborted, Aborted]
        );
    }

    #[tokio::test]
    async fn env_vars_are_upserted_and_deleted() {
        let h = Harness::default().await;
        let id = create(&h, &create_body("app")).await;
        let env = format!("/workspaces/{id}/env-vars");
        let (status, vars) = h.json(Method::GET, &env, None).await;
        assert_eq!(status, 200);
        assert_eq!(vars, json!([{ "name": "GREETING", "value": "hi" }]));

        // PUT upserts only the names given: others stay.
        let add = json!([{ "name": "DB_URL", "value": "postgres://db" }]);
        let (status, _, text) = h.call(Method::PUT, &env, Some(&add)).await;
        assert_eq!((status, text.as_str()), (200, ""), "PUT answers 200 empty");
        let (_, vars) = h.json(Method::GET, &env, None).await;
        assert_eq!(
            vars,
            json!([
                { "name": "GREETING", "value": "hi" },
                { "name": "DB_URL", "value": "postgres://db" }
            ])
        );
        let change = json!([{ "name": "GREETING", "value": "hello" }]);
        assert_eq!(h.call(Method::PUT, &env, Some(&change)).await.0, 200);
        let (_, vars) = h.json(Method::GET, &env, None).await;
        assert_eq!(
            vars,
            json!([
                { "name": "GREETING", "value": "hello" },
                { "name": "DB_URL", "value": "postgres://db" }
            ])
        );
        let (status, _, text) = h
            .call(Method::DELETE, &env, Some(&json!(["GREETING", "NOT_SET"])))
            .await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "DELETE answers 200 empty"
        );
        assert_eq!(
            h.sim.env_vars(id),
            Some(vec![EnvVar {
                name: "DB_URL".into(),
                value: "postgres://db".into()
            }])
        );

        for (method, body) in [
            (Method::PUT, json!([{ "name": "1BAD", "value": "x" }])),
            (Method::PUT, json!([{ "name": "OK" }])),
            (Method::PUT, json!({ "name": "OK", "value": "x" })),
            (Method::DELETE, json!(["1BAD"])),
            (Method::DELETE, json!("DB_URL")),
        ] {
            let (status, problem) = h.json(method.clone(), &env, Some(&body)).await;
            assert_eq!(status, 400, "{method} {body}: {problem}");
            assert_problem(&problem, 400);
        }
        let (status, _) = h.json(Method::PUT, &env, None).await;
        assert_eq!(status, 400, "PUT needs a body");
        assert_eq!(
            h.sim.env_vars(id).map(|v| v.len()),
            Some(1),
            "refusals change nothing"
        );
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let body = (method != Method::GET).then(|| json!([]));
            let (status, _) = h
                .json(method, "/workspaces/1/env-vars", body.as_ref())
                .await;
            assert_eq!(status, 404);
        }
    }

    #[tokio::test]
    async fn git_pull_moves_head_to_pushed_commits() {
        let h = Harness::default().await;
        h.sim.set_start_delay(Duration::ZERO);
        let url = "https://github.com/acme/app.git";
        let id = create(&h, &create_body("app")).await;
        let head_path = format!("/workspaces/{id}/git/head");
        let head = || async {
            let (status, body) = h.json(Method::GET, &head_path, None).await;
            assert_eq!(status, 200, "{body}");
            body["head"].as_str().expect("head").to_owned()
        };
        let h0 = head().await;
        assert!(is_commit_id(&h0), "{h0}");
        assert_eq!(h0, fake_commit(url, "main", 0), "deterministic");
        assert_eq!(h.sim.git_head(id), Some(h0.clone()));

        let h1 = h.sim.push_commit(url, "main");
        assert!(is_commit_id(&h1) && h1 != h0, "{h1}");
        assert_eq!(head().await, h0, "a push alone does not move the workspace");
        let pull = format!("/workspaces/{id}/git/pull");
        let (status, _, text) = h.call(Method::POST, &pull, None).await;
        assert_eq!((status, text.as_str()), (200, ""), "pull answers 200 empty");
        assert_eq!(head().await, h1);
        assert_eq!(h.call(Method::POST, &pull, None).await.0, 200, "up to date");
        assert_eq!(head().await, h1);

        let h2 = h.sim.push_commit(url, "main");
        assert_eq!(
            h.call(Method::POST, &format!("{pull}/origin"), None)
                .await
                .0,
            200
        );
        assert_eq!(head().await, h2);
        let feature = h.sim.push_commit(url, "feature");
        assert!(![h0.as_str(), h1.as_str(), h2.as_str()].contains(&feature.as_str()));
        assert_eq!(
            h.call(Method::POST, &format!("{pull}/origin/feature"), None)
                .await
                .0,
            200
        );
        assert_eq!(head().await, feature);
        assert_eq!(h.sim.git_branch(id), Some("feature".into()));

        for suffix in ["/upstream", "/upstream/main", "/origin/nope"] {
            let (status, body) = h.json(Method::POST, &format!("{pull}{suffix}"), None).await;
            assert_eq!(status, 400, "{suffix}: {body}");
            assert_eq!(body["title"], "Git error");
        }
        assert_eq!(head().await, feature, "failed pulls change nothing");

        // A new workspace on the same branch checks out its latest commit; gitRef pins or
        // names the branch.
        let again = create(&h, &create_body("again")).await;
        assert_eq!(h.sim.git_head(again), Some(h2.clone()));
        let pinned = "0123456789abcdef0123456789abcdef01234567";
        let mut body = create_body("pinned");
        body["gitRef"] = json!(pinned);
        let pinned_id = create(&h, &body).await;
        assert_eq!(h.sim.git_head(pinned_id).as_deref(), Some(pinned));
        assert_eq!(h.sim.git_branch(pinned_id).as_deref(), Some("main"));
        let mut body = create_body("release");
        body["gitRef"] = json!("release");
        body.as_object_mut().map(|o| o.remove("initialBranch"));
        let release = create(&h, &body).await;
        assert_eq!(h.sim.git_branch(release).as_deref(), Some("release"));
        assert_eq!(
            h.sim.git_head(release),
            Some(fake_commit(url, "release", 0))
        );
        let mut body = create_body("default-branch");
        body.as_object_mut().map(|o| o.remove("initialBranch"));
        let default_branch = create(&h, &body).await;
        assert_eq!(h.sim.git_branch(default_branch).as_deref(), Some("main"));

        // No repository: a git error. Not running: 400 as for the pipeline.
        let mut body = create_body("bare");
        body.as_object_mut().map(|o| o.remove("gitUrl"));
        let bare = create(&h, &body).await;
        let (status, problem) = h
            .json(Method::GET, &format!("/workspaces/{bare}/git/head"), None)
            .await;
        assert_eq!(
            (status, problem["title"].as_str()),
            (400, Some("Git error"))
        );
        h.sim.set_workspace_running(id, false);
        for (method, path) in [
            (Method::GET, head_path.clone()),
            (Method::POST, pull.clone()),
        ] {
            let (status, problem) = h.json(method, &path, None).await;
            assert_eq!(status, 400);
            assert_eq!(problem["title"], "Workspace is not running.");
        }
        let (status, _) = h.json(Method::GET, "/workspaces/1/git/head", None).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn domain_lifecycle() {
        let h = Harness::default().await;
        let a = create(&h, &create_body("a")).await;
        let b = create(&h, &create_body("b")).await;
        let dom = "/domains/team/1/domain/Shop.Example.com";
        let (status, created) = h.json(Method::POST, dom, None).await;
        assert_eq!(status, 200, "{created}");
        let domain: Domain = serde_json::from_value(created.clone()).expect("domain");
        assert_eq!(domain.name, "shop.example.com");
        assert_eq!((domain.team_id, domain.data_center_id), (1, 1));
        assert!(domain.workspaces.is_empty());
        assert!(!domain.domain_verification_status.verified);
        assert!(!domain.certificate_request_status.issued);
        let txt = domain.dns_entries.txt.clone();
        assert!(!txt.is_empty() && !domain.dns_entries.a.is_empty());
        let reason = domain
            .domain_verification_status
            .reason
            .clone()
            .expect("reason");
        assert!(reason.contains("TXT") && reason.contains(&txt), "{reason}");
        let (status, again) = h.json(Method::POST, dom, None).await;
        assert_eq!(
            (status, &again),
            (200, &created),
            "creating it again returns it"
        );
        let (_, list) = h.json(Method::GET, "/domains/team/1", None).await;
        assert_eq!(list, json!([created]));
        let (status, got) = h.json(Method::GET, dom, None).await;
        assert_eq!((status, &got), (200, &created));
        let (status, body) = h
            .json(Method::GET, "/domains/team/1/domain/none.example.com", None)
            .await;
        assert_eq!(
            (status, body["title"].as_str()),
            (404, Some("Domain not found."))
        );
        for bad in ["localhost", "-a.example.com", "a..example.com", "1.2.3.4"] {
            let (status, _) = h
                .json(Method::POST, &format!("/domains/team/1/domain/{bad}"), None)
                .await;
            assert_eq!(status, 400, "{bad}");
        }

        // PATCH: customConfig fields (with a revision) and restricted.
        let (status, patched) = h
            .json(
                Method::PATCH,
                dom,
                Some(&json!({ "maxBodySizeMb": 50, "useRegex": true, "restricted": true })),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        assert_eq!(
            patched["customConfig"],
            json!({ "maxBodySizeMb": 50.0, "useRegex": true })
        );
        assert_eq!(patched["customConfigRevision"], 1);
        assert_eq!(patched["restricted"], true);
        let (_, patched) = h
            .json(
                Method::PATCH,
                dom,
                Some(&json!({ "maxConnectionTimeoutS": 30 })),
            )
            .await;
        assert_eq!(patched["customConfigRevision"], 2);
        assert_eq!(patched["customConfig"]["maxBodySizeMb"], 50.0, "merged");
        let (status, _) = h
            .json(Method::PATCH, dom, Some(&json!({ "maxBodySizeMb": -1 })))
            .await;
        assert_eq!(status, 400);

        // Busy: the next two PATCH/PUT calls conflict, then they pass.
        h.sim.set_domain_busy("shop.example.com", 2);
        let (status, body) = h
            .json(Method::PATCH, dom, Some(&json!({ "restricted": false })))
            .await;
        assert_eq!(
            (status, body["title"].as_str()),
            (409, Some("Another request is in progress."))
        );
        let connections = format!("{dom}/workspace-connections");
        let map = json!({ "/": [a], "/api": [a, b] });
        let (status, _) = h.json(Method::PUT, &connections, Some(&map)).await;
        assert_eq!(status, 409);
        assert!(h
            .sim
            .domain("shop.example.com")
            .is_some_and(|d| d.workspaces.is_empty()));
        let (status, connected) = h.json(Method::PUT, &connections, Some(&map)).await;
        assert_eq!(status, 200);
        assert_eq!(connected["workspaces"], map);
        assert_eq!(h.json(Method::PATCH, dom, Some(&json!({}))).await.0, 200);

        // PUT replaces the whole map; unknown workspaces are refused and change nothing.
        let only_b = json!({ "/": [b] });
        let (_, connected) = h.json(Method::PUT, &connections, Some(&only_b)).await;
        assert_eq!(connected["workspaces"], only_b);
        let (status, body) = h
            .json(Method::PUT, &connections, Some(&json!({ "/": [a, 99] })))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_problem(&body, 400);
        assert_eq!(h.json(Method::GET, dom, None).await.1["workspaces"], only_b);

        // Verification only once the DNS records are in place; then the certificate is issued.
        let verify = format!("{dom}/verify");
        let (status, verdict) = h.json(Method::POST, &verify, None).await;
        assert_eq!(status, 200);
        assert_eq!(verdict["verified"], false);
        assert!(
            verdict["reason"].as_str().is_some_and(|r| r.contains(&txt)),
            "{verdict}"
        );
        let (_, got) = h.json(Method::GET, dom, None).await;
        assert_eq!(got["domainVerificationStatus"]["verified"], false);
        h.sim.verify_domain_dns("SHOP.example.com");
        let (_, got) = h.json(Method::GET, dom, None).await;
        assert_eq!(
            got["domainVerificationStatus"]["verified"], false,
            "not before verify"
        );
        let (status, verdict) = h.json(Method::POST, &verify, None).await;
        assert_eq!(
            (status, verdict),
            (200, json!({ "verified": true, "reason": null }))
        );
        let (_, got) = h.json(Method::GET, dom, None).await;
        assert_eq!(
            got["domainVerificationStatus"],
            json!({ "verified": true, "reason": null })
        );
        assert_eq!(
            got["certificateRequestStatus"],
            json!({ "issued": true, "reason": null })
        );

        // Delete.
        let (status, _, text) = h.call(Method::DELETE, dom, None).await;
        assert_eq!(
            (status, text.as_str()),
            (200, ""),
            "DELETE answers 200 empty"
        );
        for method in [Method::GET, Method::DELETE, Method::PATCH] {
            let body = (method == Method::PATCH).then(|| json!({}));
            let (status, _) = h.json(method, dom, body.as_ref()).await;
            assert_eq!(status, 404);
        }
        let (status, _) = h.json(Method::POST, &verify, None).await;
        assert_eq!(status, 404);
        assert!(h.sim.domains().is_empty());
        let (status, _) = h.json(Method::GET, "/domains/team/7", None).await;
        assert_eq!(status, 404, "unknown team");
    }

    #[tokio::test]
    async fn deleting_a_workspace_removes_its_domain_connections() {
        let h = Harness::default().await;
        let a = create(&h, &create_body("a")).await;
        let b = create(&h, &create_body("b")).await;
        let c = create(&h, &create_body("c")).await;
        for name in ["one.example.com", "two.example.com"] {
            let dom = format!("/domains/team/1/domain/{name}");
            assert_eq!(h.call(Method::POST, &dom, None).await.0, 200);
            let map = json!({ "/": [a, b], "/api": [b], "/static": [c] });
            let path = format!("{dom}/workspace-connections");
            assert_eq!(h.json(Method::PUT, &path, Some(&map)).await.0, 200);
        }
        assert_eq!(
            h.call(Method::DELETE, &format!("/workspaces/{b}"), None)
                .await
                .0,
            200
        );
        for domain in h.sim.domains() {
            assert_eq!(
                domain.workspaces,
                BTreeMap::from([("/".into(), vec![a]), ("/static".into(), vec![c])]),
                "{}",
                domain.name
            );
        }
        let (_, got) = h
            .json(Method::GET, "/domains/team/1/domain/one.example.com", None)
            .await;
        assert_eq!(got["workspaces"], json!({ "/": [a], "/static": [c] }));
    }

    #[tokio::test]
    async fn workspace_patch_is_visible_and_validated() {
        let h = Harness::default().await;
        let id = create(&h, &create_body("app")).await;
        let path = format!("/workspaces/{id}");
        assert_eq!(
            h.json(Method::PATCH, &path, Some(&json!({ "replicas": 3 })))
                .await
                .0,
            200
        );
        let (_, got) = h.json(Method::GET, &path, None).await;
        assert_eq!(got["replicas"], 3);
        let (_, list) = h.json(Method::GET, "/workspaces/team/1", None).await;
        assert_eq!(list[0]["replicas"], 3);
        for body in [
            json!({ "replicas": 4 }),               // Micro allows 3
            json!({ "planId": 1 }),                 // deprecated
            json!({ "planId": 9999 }),              // unknown
            json!({ "planId": 20, "replicas": 6 }), // Boost allows 5
        ] {
            let (status, problem) = h.json(Method::PATCH, &path, Some(&body)).await;
            assert_eq!(status, 400, "{body}: {problem}");
        }
        assert_eq!(
            h.json(
                Method::PATCH,
                &path,
                Some(&json!({ "planId": 20, "replicas": 5 }))
            )
            .await
            .0,
            200
        );
        let (_, list) = h.json(Method::GET, "/workspaces/team/1", None).await;
        assert_eq!(
            (list[0]["planId"].as_u64(), list[0]["replicas"].as_u64()),
            (Some(20), Some(5))
        );
    }

    // ---- Fidelity against the published OpenAPI document ----

    /// Runs calls against the simulator and collects every way they differ from the spec.
    struct Fidelity<'a> {
        h: &'a Harness,
        spec: &'a Value,
        problems: Vec<String>,
    }

    impl Fidelity<'_> {
        /// Calls `path` (an instance of the spec's `template`) and checks the request (path
        /// parameters and body), the status (must be `want` and declared by the spec) and the
        /// response body. A `400` here must be a schema violation, so the request must violate
        /// the spec; for any other status the request must be valid.
        async fn call(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
        ) -> Value {
            self.check(method, template, path, body, want, Kind::Declared)
                .await
        }

        /// A declared error status for a valid request (e.g. `400 "Workspace is not running"`,
        /// a plan limit, `409`).
        async fn refusal(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
        ) -> Value {
            self.check(method, template, path, body, want, Kind::Refusal)
                .await
        }

        /// Like [`Fidelity::refusal`], for a status the spec does not declare for the
        /// operation (a documented choice of the simulator); the body must still be a problem.
        async fn deviation(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
        ) {
            self.check(method, template, path, body, want, Kind::Deviation)
                .await;
        }

        async fn check(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
            kind: Kind,
        ) -> Value {
            let checker = Checker { spec: self.spec };
            let op = operation(self.spec, &method, template);
            let what = format!("{method} {template} ({path})");
            let mut request_errors = param_errors(&checker, op, template, path);
            if let (Some(body), Some(schema)) = (
                &body,
                op.pointer("/requestBody/content/application~1json/schema"),
            ) {
                request_errors.extend(checker.errors(schema, body));
            }
            if kind == Kind::Declared && want == 400 {
                if request_errors.is_empty() {
                    self.problems
                        .push(format!("{what}: sim refused a request the spec accepts"));
                }
            } else {
                for e in request_errors {
                    self.problems.push(format!("{what} request: {e}"));
                }
            }
            let (status, _, text) = self.h.call(method.clone(), path, body.as_ref()).await;
            if status != want {
                self.problems
                    .push(format!("{what}: status {status}, want {want}: {text}"));
                return Value::Null;
            }
            let declared = op.pointer(&format!("/responses/{status}")).is_some();
            let deviation = kind == Kind::Deviation;
            if declared == deviation {
                self.problems.push(format!(
                    "{what}: status {status} declared in spec = {declared}, expected {}",
                    !deviation
                ));
            }
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        self.problems
                            .push(format!("{what}: body is not JSON ({e}): {text}"));
                        return Value::Null;
                    }
                }
            };
            let schema = if deviation {
                // The problem shape is the same everywhere; take one declared for this status.
                problem_schema(self.spec, status)
            } else {
                response_schema(op, status)
            };
            match schema {
                Some(schema) => {
                    for e in checker.errors(schema, &value) {
                        self.problems.push(format!("{what} response {status}: {e}"));
                    }
                }
                None if deviation => self.problems.push(format!(
                    "{what}: no problem schema for {status} in the spec"
                )),
                // The spec declares no body for this response: it must be empty.
                None if !text.is_empty() => self
                    .problems
                    .push(format!("{what}: spec declares no body, got {text}")),
                None => {}
            }
            value
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Declared,
        Refusal,
        Deviation,
    }

    #[tokio::test]
    async fn responses_match_the_published_spec() {
        let spec = load_spec();
        let h = Harness::default().await;
        h.sim.set_start_delay(Duration::ZERO);
        let mut f = Fidelity {
            h: &h,
            spec: &spec,
            problems: Vec::new(),
        };
        let get = || Method::GET;

        f.call(get(), "/teams", "/teams", None, 200).await;
        f.call(get(), "/teams/{teamId}", "/teams/1", None, 200)
            .await;
        f.call(get(), "/teams/{teamId}", "/teams/9", None, 404)
            .await;
        f.call(get(), "/teams/{teamId}", "/teams/x", None, 400)
            .await;
        for meta in ["datacenters", "workspace-plans", "workspace-base-images"] {
            let path = format!("/metadata/{meta}");
            f.call(get(), &path, &path, None, 200).await;
        }

        let create = |extra: Value| {
            let mut body = json!({
                "teamId": 1, "name": "w", "planId": 8, "isPrivateRepo": false, "replicas": 1
            });
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            Some(body)
        };
        let full = json!({
            "name": "full", "planId": 20, "isPrivateRepo": true, "replicas": 2,
            "baseImage": "ubuntu-24.04", "gitUrl": "https://github.com/acme/app.git",
            "initialBranch": "main", "cloneDepth": 1, "welcomeMessage": "hello",
            "vpnConfig": "office", "restricted": true, "storageMib": 1024,
            "sharedVaultName": "shared", "env": [{ "name": "A_B.c-1", "value": "x" }]
        });
        let ws = "/workspaces";
        let created = f.call(Method::POST, ws, ws, create(full), 200).await;
        let id = created["id"].as_u64().unwrap_or_default();
        let asleep = f.call(Method::POST, ws, ws, create(json!({})), 200).await;
        let asleep = asleep["id"].as_u64().unwrap_or_default();
        let clone = json!({ "sourceWorkspaceId": id });
        let clone = f.call(Method::POST, ws, ws, create(clone), 200).await;
        let clone = clone["id"].as_u64().unwrap_or_default();
        f.call(Method::POST, ws, ws, create(json!({ "replicas": 0 })), 400)
            .await;
        let other_team = create(json!({ "teamId": 7 }));
        f.deviation(Method::POST, ws, ws, other_team, 404).await;

        let one = "/workspaces/{workspaceId}";
        let path = format!("/workspaces/{id}");
        f.call(get(), one, &path, None, 200).await;
        f.call(get(), one, "/workspaces/1", None, 404).await;
        let list = "/workspaces/team/{teamId}";
        f.call(get(), list, "/workspaces/team/1", None, 200).await;
        f.deviation(get(), list, "/workspaces/team/7", None, 404)
            .await;
        let status = format!("{path}/status");
        f.call(
            get(),
            "/workspaces/{workspaceId}/status",
            &status,
            None,
            200,
        )
        .await;
        let changes = json!({ "planId": 21, "baseImage": "ubuntu-22.04", "name": "full-2",
            "replicas": 5, "vpnConfig": null, "restricted": false, "storageMib": null,
            "sharedVaultName": null });
        f.call(Method::PATCH, one, &path, Some(changes), 200).await;
        let zero = json!({ "replicas": 0 });
        f.call(Method::PATCH, one, &path, Some(zero), 400).await;
        f.call(get(), one, &path, None, 200).await;

        // Env vars.
        let env = "/workspaces/{workspaceId}/env-vars";
        let env_path = format!("{path}/env-vars");
        let vars = json!([{ "name": "A", "value": "1" }, { "name": "B_2", "value": "" }]);
        f.call(get(), env, &env_path, None, 200).await;
        f.call(get(), env, "/workspaces/x/env-vars", None, 400)
            .await;
        f.call(get(), env, "/workspaces/1/env-vars", None, 404)
            .await;
        f.call(Method::PUT, env, &env_path, Some(vars.clone()), 200)
            .await;
        let bad = json!([{ "name": "1A", "value": "x" }]);
        f.call(Method::PUT, env, &env_path, Some(bad), 400).await;
        f.call(Method::PUT, env, "/workspaces/1/env-vars", Some(vars), 404)
            .await;
        f.call(Method::DELETE, env, &env_path, Some(json!(["A"])), 200)
            .await;
        f.call(Method::DELETE, env, &env_path, Some(json!([1])), 400)
            .await;
        let gone = "/workspaces/1/env-vars";
        f.call(Method::DELETE, env, gone, Some(json!(["A"])), 404)
            .await;
        f.call(get(), env, &env_path, None, 200).await;

        // Pipeline: one status of each state, on several servers and replicas.
        let stage_t = "/workspaces/{workspaceId}/pipeline/{stage}";
        let start_t = "/workspaces/{workspaceId}/pipeline/{stage}/start";
        let profile_t = "/workspaces/{workspaceId}/pipeline/{stage}/start/{profile}";
        let stop_t = "/workspaces/{workspaceId}/pipeline/{stage}/stop";
        let scale_t = "/workspaces/{workspaceId}/landscape/scale";
        let scale_path = format!("{path}/landscape/scale");
        let stage = |stage: &str| format!("{path}/pipeline/{stage}");
        let mut states = BTreeSet::new();
        let mut seen = |v: &Value| {
            for element in v.as_array().into_iter().flatten() {
                states.insert(element["state"].to_string());
            }
        };
        seen(&f.call(get(), stage_t, &stage("prepare"), None, 200).await);
        h.sim.set_stage_duration(Duration::ZERO);
        let prepare_start = format!("{}/start", stage("prepare"));
        f.call(Method::POST, start_t, &prepare_start, None, 200)
            .await;
        h.sim.fail_next_stage(id, Stage::Test);
        let test_start = format!("{}/start/ci.staging-2", stage("test"));
        f.call(Method::POST, profile_t, &test_start, None, 200)
            .await;
        let run_start = format!("{}/start", stage("run"));
        f.call(Method::POST, start_t, &run_start, None, 200).await;
        let scale = json!({ "web": 2, "api-2": 3 });
        f.call(Method::PATCH, scale_t, &scale_path, Some(scale), 200)
            .await;
        for name in ["prepare", "test", "run"] {
            seen(&f.call(get(), stage_t, &stage(name), None, 200).await);
        }
        let run_stop = format!("{}/stop", stage("run"));
        f.call(Method::POST, stop_t, &run_stop, None, 200).await;
        seen(&f.call(get(), stage_t, &stage("run"), None, 200).await);
        h.sim.set_stage_duration(Duration::from_secs(60));
        f.call(Method::POST, start_t, &prepare_start, None, 200)
            .await;
        seen(&f.call(get(), stage_t, &stage("prepare"), None, 200).await);
        let want: BTreeSet<String> = ["waiting", "running", "success", "failure", "aborted"]
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect();
        assert_eq!(states, want, "every state was rendered and checked");
        f.call(get(), stage_t, &stage("deploy"), None, 400).await;
        f.call(get(), stage_t, "/workspaces/x/pipeline/run", None, 400)
            .await;
        let bad_profile = format!("{}/start/bad..profile", stage("run"));
        f.call(Method::POST, profile_t, &bad_profile, None, 400)
            .await;
        let bad_stop = format!("{}/stop", stage("build"));
        f.call(Method::POST, stop_t, &bad_stop, None, 400).await;
        let bad_start = format!("{}/start", stage("build"));
        f.call(Method::POST, start_t, &bad_start, None, 400).await;
        for (method, template, missing) in [
            (get(), stage_t, "/workspaces/1/pipeline/run"),
            (Method::POST, start_t, "/workspaces/1/pipeline/run/start"),
            (
                Method::POST,
                profile_t,
                "/workspaces/1/pipeline/run/start/p",
            ),
            (Method::POST, stop_t, "/workspaces/1/pipeline/run/stop"),
        ] {
            f.call(method, template, missing, None, 404).await;
        }

        // Pipeline and git calls on a workspace that is not running.
        let pull_t = "/workspaces/{workspaceId}/git/pull";
        let pull_remote_t = "/workspaces/{workspaceId}/git/pull/{remote}";
        let pull_branch_t = "/workspaces/{workspaceId}/git/pull/{remote}/{branch}";
        let head_t = "/workspaces/{workspaceId}/git/head";
        h.sim.set_workspace_running(asleep, false);
        let at = |suffix: &str| format!("/workspaces/{asleep}/{suffix}");
        for (method, template, suffix) in [
            (get(), stage_t, "pipeline/run"),
            (Method::POST, start_t, "pipeline/run/start"),
            (Method::POST, profile_t, "pipeline/run/start/prod"),
            (Method::POST, stop_t, "pipeline/run/stop"),
            (Method::POST, pull_t, "git/pull"),
            (Method::POST, pull_remote_t, "git/pull/origin"),
            (Method::POST, pull_branch_t, "git/pull/origin/main"),
            (get(), head_t, "git/head"),
        ] {
            f.refusal(method, template, &at(suffix), None, 400).await;
        }

        // Landscape.
        let deploy_t = "/workspaces/{workspaceId}/landscape/deploy";
        let deploy_profile_t = "/workspaces/{workspaceId}/landscape/deploy/{profile}";
        let teardown_t = "/workspaces/{workspaceId}/landscape/teardown";
        let deploy = format!("{path}/landscape/deploy");
        f.call(Method::POST, deploy_t, &deploy, None, 200).await;
        let prod = format!("{deploy}/prod");
        f.call(Method::POST, deploy_profile_t, &prod, None, 200)
            .await;
        let bad = format!("{deploy}/bad!");
        f.call(Method::POST, deploy_profile_t, &bad, None, 400)
            .await;
        let missing = "/workspaces/1/landscape/deploy";
        f.call(Method::POST, deploy_t, missing, None, 404).await;
        let missing = "/workspaces/1/landscape/deploy/prod";
        f.call(Method::POST, deploy_profile_t, missing, None, 404)
            .await;
        let bad = "/workspaces/x/landscape/deploy";
        f.call(Method::POST, deploy_t, bad, None, 400).await;
        let zero = json!({ "web": 0 });
        f.call(Method::PATCH, scale_t, &scale_path, Some(zero), 400)
            .await;
        let too_many = json!({ "web": 11 });
        f.refusal(Method::PATCH, scale_t, &scale_path, Some(too_many), 400)
            .await;
        let missing = "/workspaces/1/landscape/scale";
        let one_web = json!({ "web": 1 });
        f.call(Method::PATCH, scale_t, missing, Some(one_web), 404)
            .await;
        let teardown = format!("{path}/landscape/teardown");
        f.call(Method::DELETE, teardown_t, &teardown, None, 200)
            .await;
        let missing = "/workspaces/1/landscape/teardown";
        f.call(Method::DELETE, teardown_t, missing, None, 404).await;
        let bad = "/workspaces/x/landscape/teardown";
        f.call(Method::DELETE, teardown_t, bad, None, 400).await;

        // Git.
        let head = format!("{path}/git/head");
        f.call(get(), head_t, &head, None, 200).await;
        f.call(get(), head_t, "/workspaces/1/git/head", None, 404)
            .await;
        f.call(get(), head_t, "/workspaces/x/git/head", None, 400)
            .await;
        h.sim.push_commit("https://github.com/acme/app.git", "dev");
        let pull = format!("{path}/git/pull");
        f.call(Method::POST, pull_t, &pull, None, 200).await;
        let origin = format!("{pull}/origin");
        f.call(Method::POST, pull_remote_t, &origin, None, 200)
            .await;
        let dev = format!("{pull}/origin/dev");
        f.call(Method::POST, pull_branch_t, &dev, None, 200).await;
        let upstream = format!("{pull}/upstream");
        f.refusal(Method::POST, pull_remote_t, &upstream, None, 400)
            .await;
        let nope = format!("{pull}/origin/nope");
        f.refusal(Method::POST, pull_branch_t, &nope, None, 400)
            .await;
        for (template, missing) in [
            (pull_t, "/workspaces/1/git/pull"),
            (pull_remote_t, "/workspaces/1/git/pull/origin"),
            (pull_branch_t, "/workspaces/1/git/pull/origin/main"),
        ] {
            f.call(Method::POST, template, missing, None, 404).await;
        }
        f.call(Method::POST, pull_t, "/workspaces/x/git/pull", None, 400)
            .await;
        // A workspace without a repository: a git error.
        h.sim.set_workspace_running(asleep, true);
        f.refusal(get(), head_t, &at("git/head"), None, 400).await;

        // Domains.
        let list_t = "/domains/team/{teamId}";
        let one_t = "/domains/team/{teamId}/domain/{domainName}";
        let verify_t = "/domains/team/{teamId}/domain/{domainName}/verify";
        let connect_t = "/domains/team/{teamId}/domain/{domainName}/workspace-connections";
        let dom = "/domains/team/1/domain/shop.example.com";
        let none = "/domains/team/1/domain/none.example.com";
        f.call(get(), list_t, "/domains/team/1", None, 200).await;
        f.call(get(), list_t, "/domains/team/x", None, 400).await;
        f.deviation(get(), list_t, "/domains/team/7", None, 404)
            .await;
        f.call(Method::POST, one_t, dom, None, 200).await;
        f.call(Method::POST, one_t, dom, None, 200).await;
        let bad = "/domains/team/x/domain/a.example.com";
        f.call(Method::POST, one_t, bad, None, 400).await;
        let other_team = "/domains/team/7/domain/a.example.com";
        f.deviation(Method::POST, one_t, other_team, None, 404)
            .await;
        f.call(get(), one_t, dom, None, 200).await;
        f.call(get(), one_t, none, None, 404).await;
        let not_fqdn = "/domains/team/1/domain/not_a_domain";
        f.refusal(get(), one_t, not_fqdn, None, 400).await;
        let config = json!({ "maxBodySizeMb": 50, "maxConnectionTimeoutS": 30.5,
            "useRegex": true, "restricted": true });
        f.call(Method::PATCH, one_t, dom, Some(config), 200).await;
        let bad = json!({ "useRegex": "yes" });
        f.call(Method::PATCH, one_t, dom, Some(bad), 400).await;
        f.call(Method::PATCH, one_t, none, Some(json!({})), 404)
            .await;
        let connections = format!("{dom}/workspace-connections");
        h.sim.set_domain_busy("shop.example.com", 2);
        let busy = json!({ "restricted": false });
        f.refusal(Method::PATCH, one_t, dom, Some(busy), 409).await;
        let map = json!({ "/": [id] });
        f.deviation(Method::PUT, connect_t, &connections, Some(map), 409)
            .await;
        let verify = format!("{dom}/verify");
        f.call(Method::POST, verify_t, &verify, None, 200).await;
        h.sim.verify_domain_dns("shop.example.com");
        f.call(Method::POST, verify_t, &verify, None, 200).await;
        let missing = format!("{none}/verify");
        f.call(Method::POST, verify_t, &missing, None, 404).await;
        let bad = "/domains/team/x/domain/shop.example.com/verify";
        f.call(Method::POST, verify_t, bad, None, 400).await;
        let map = json!({ "/": [id], "/api": [id, clone] });
        f.call(Method::PUT, connect_t, &connections, Some(map), 200)
            .await;
        let negative = json!({ "/": [-1] });
        f.call(Method::PUT, connect_t, &connections, Some(negative), 400)
            .await;
        let stranger = json!({ "/": [1] });
        f.refusal(Method::PUT, connect_t, &connections, Some(stranger), 400)
            .await;
        let missing = format!("{none}/workspace-connections");
        f.call(Method::PUT, connect_t, &missing, Some(json!({})), 404)
            .await;
        f.call(get(), list_t, "/domains/team/1", None, 200).await;
        f.call(Method::DELETE, one_t, dom, None, 200).await;
        f.call(Method::DELETE, one_t, dom, None, 404).await;
        let bad = "/domains/team/x/domain/shop.example.com";
        f.call(Method::DELETE, one_t, bad, None, 400).await;

        f.call(Method::DELETE, one, &path, None, 200).await;
        f.call(Method::DELETE, one, &path, None, 404).await;
        let mut problems = f.problems;

        // 401 has the spec's shape.
        let unauth = h
            .http
            .get(format!("{}/workspaces/team/1", h.api))
            .send()
            .await
            .expect("send");
        let unauth: Value = unauth.json().await.expect("json");
        let op = operation(&spec, &Method::GET, list);
        let schema = response_schema(op, 401).expect("401 schema");
        for e in (Checker { spec: &spec }).errors(schema, &unauth) {
            problems.push(format!("401: {e}"));
        }

        // Every route the simulator served is a spec operation, and every one was exercised.
        let counters = h.sim.control().stats();
        let served: Vec<&String> = counters.requests_by_route.keys().collect();
        assert_eq!(served.len(), 33, "operations exercised: {served:?}");
        for key in served {
            let (method, path) = key.split_once(' ').expect("METHOD path");
            let path = path.strip_prefix("/api").expect("under /api");
            let method: Method = method.parse().expect("method");
            operation(&spec, &method, path);
        }
        assert!(
            problems.is_empty(),
            "spec mismatches:\n{}",
            problems.join("\n")
        );
    }
}
