//! In-memory simulator of the Codesphere Public API (`bosun sim`).
//!
//! Follows `shared/specs/codesphere-openapi.json`: paths under `/api`, camelCase fields, every
//! success is `200` (mutations without a result answer an empty body), and every error is the
//! problem body `{status, title, detail?, traceId}`. Every API call needs
//! `Authorization: Bearer <token>`.
//!
//! Implemented so far: teams (read), metadata (datacenters, plans, base images) and workspaces
//! (create, get, list by team, update, delete, status). A new workspace reports
//! `isRunning: false` until its start delay (default 2 s) has passed.
//!
//! Where the spec is silent the simulator makes these choices: creating or listing workspaces of
//! an unknown team answers `404 "Team not found."` (the spec declares no 404 for either);
//! an unknown or deprecated plan, an unknown base image or more replicas than the plan's
//! `maxReplicas` answer `400`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    running_at: Instant,
    // Accepted and kept so later slices (vault, storage, git) can use them.
    #[allow(dead_code)]
    extra: CreateExtras,
}

#[derive(Clone, Debug, Default)]
#[allow(dead_code)]
struct CreateExtras {
    clone_depth: Option<u32>,
    storage_mib: Option<u64>,
    shared_vault_name: Option<String>,
    git_ref: Option<String>,
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
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Schema(_) | Self::Rejected(_) => StatusCode::BAD_REQUEST,
            Self::TeamNotFound | Self::WorkspaceNotFound => StatusCode::NOT_FOUND,
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Self::Unauthorized(detail) => Some(detail),
            Self::Schema(detail) | Self::Rejected(detail) => Some(detail),
            Self::TeamNotFound | Self::WorkspaceNotFound => None,
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
    data: Mutex<Data>,
}

struct Data {
    teams: BTreeMap<u64, Team>,
    workspaces: BTreeMap<u64, WorkspaceRecord>,
    next_workspace_id: u64,
    start_delay: Duration,
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
                data: Mutex::new(Data {
                    teams: BTreeMap::from([(team.id, team)]),
                    workspaces: BTreeMap::new(),
                    // Real ids are large numbers; starting high keeps them from looking like
                    // team or plan ids in tests.
                    next_workspace_id: 70_001,
                    start_delay: DEFAULT_START_DELAY,
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

    /// The environment variables of a workspace, as set at creation.
    pub fn env_vars(&self, id: u64) -> Option<Vec<EnvVar>> {
        self.data().workspaces.get(&id).map(|r| r.env.clone())
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
    let record = WorkspaceRecord {
        workspace: workspace.clone(),
        env: req.env,
        running_at: Instant::now() + data.start_delay,
        extra: CreateExtras {
            clone_depth: req.clone_depth,
            storage_mib: req.storage_mib,
            shared_vault_name: req.shared_vault_name,
            git_ref: req.git_ref,
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
    sim.data()
        .workspaces
        .remove(&id)
        .map(|_| StatusCode::OK)
        .ok_or(ApiError::WorkspaceNotFound)
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
        is_running: Instant::now() >= record.running_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(ok >= 1, "some calls pass");
        assert!(
            limited >= 40,
            "a burst of 100 at 60/min is mostly refused ({limited})"
        );
        let stats = h.sim.control().stats();
        assert_eq!(stats.rate_limited_total, limited);
        assert_eq!(stats.requests_total, 100);
        assert!(stats.max_requests_per_second <= 1, "{stats:?}");
    }

    #[tokio::test]
    async fn respectful_client_never_exceeds_the_limit() {
        let h = Harness::start(SimConfig {
            token: TOKEN.to_owned(),
            rate_limit_per_minute: Some(120),
            ..SimConfig::default()
        })
        .await;
        let (mut ok, mut limited) = (0, 0u64);
        while ok < 7 {
            let (status, headers, _) = h.call(Method::GET, "/teams", None).await;
            match status {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    let secs: u64 = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .expect("Retry-After");
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        let stats = h.sim.control().stats();
        assert!(
            limited >= 1,
            "the client went fast enough to meet the limit"
        );
        assert_eq!(stats.rate_limited_total, limited);
        assert_eq!(stats.rate_limit_per_second, Some(2));
        assert!(stats.max_requests_per_second <= 2, "{stats:?}");
        assert!(stats.max_requests_per_minute <= 120, "{stats:?}");
        assert_eq!(stats.max_requests_per_minute, 7);
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

    // ---- Fidelity against the published OpenAPI document ----

    fn load_spec() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/specs/codesphere-openapi.json"
        );
        let text = std::fs::read_to_string(path).expect("read the Codesphere spec");
        serde_json::from_str(&text).expect("spec is JSON")
    }

    /// A small JSON Schema checker (the `OpenAPI` 3.0 dialect): type, properties, required, items,
    /// additionalProperties, nullable, enum, minimum, format (date-time, uuid), `$ref` to
    /// `#/components/schemas`, allOf, oneOf, anyOf. Stricter than JSON Schema in one way: an
    /// object with declared `properties` and no `additionalProperties` may not carry undeclared
    /// fields, so a misspelt field in the simulator is caught.
    struct Checker<'a> {
        spec: &'a Value,
    }

    impl Checker<'_> {
        fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
            let mut errors = Vec::new();
            self.check(schema, value, "$", true, &mut errors);
            errors
        }

        fn resolve(&self, reference: &str) -> Option<&Value> {
            let name = reference.strip_prefix("#/components/schemas/")?;
            self.spec.pointer("/components/schemas")?.get(name)
        }

        fn check(
            &self,
            schema: &Value,
            value: &Value,
            at: &str,
            strict: bool,
            errs: &mut Vec<String>,
        ) {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                match self.resolve(reference) {
                    Some(target) => self.check(target, value, at, strict, errs),
                    None => errs.push(format!("{at}: unresolvable $ref {reference}")),
                }
                return;
            }
            if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
                return;
            }
            if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
                // Properties may be split across the parts, so none of them can be strict.
                for part in all {
                    self.check(part, value, at, false, errs);
                }
            }
            if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
                let passing = any.iter().filter(|s| self.errors_lenient(s, value)).count();
                if passing == 0 {
                    errs.push(format!("{at}: matches none of anyOf"));
                }
            }
            if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
                let passing = one.iter().filter(|s| self.errors_lenient(s, value)).count();
                if passing != 1 {
                    errs.push(format!("{at}: matches {passing} of oneOf, want exactly 1"));
                }
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                if !allowed.contains(value) {
                    errs.push(format!("{at}: {value} not in enum {allowed:?}"));
                }
            }
            let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
                (schema.get("properties").is_some() || schema.get("required").is_some())
                    .then_some("object")
            });
            match ty {
                Some("object") => self.check_object(schema, value, at, strict, errs),
                Some("array") => match value.as_array() {
                    Some(items) => {
                        if let Some(item_schema) = schema.get("items") {
                            for (i, item) in items.iter().enumerate() {
                                self.check(item_schema, item, &format!("{at}[{i}]"), strict, errs);
                            }
                        }
                    }
                    None => errs.push(format!("{at}: expected array, got {value}")),
                },
                Some("string") => match value.as_str() {
                    Some(s) => check_format(schema, s, at, errs),
                    None => errs.push(format!("{at}: expected string, got {value}")),
                },
                Some("integer") => {
                    if value.is_i64() || value.is_u64() {
                        check_minimum(schema, value, at, errs);
                    } else {
                        errs.push(format!("{at}: expected integer, got {value}"));
                    }
                }
                Some("number") => {
                    if value.is_number() {
                        check_minimum(schema, value, at, errs);
                    } else {
                        errs.push(format!("{at}: expected number, got {value}"));
                    }
                }
                Some("boolean") if !value.is_boolean() => {
                    errs.push(format!("{at}: expected boolean, got {value}"));
                }
                Some("boolean") | None => {}
                Some(other) => errs.push(format!("{at}: unsupported schema type {other}")),
            }
        }

        fn errors_lenient(&self, schema: &Value, value: &Value) -> bool {
            let mut errs = Vec::new();
            self.check(schema, value, "$", false, &mut errs);
            errs.is_empty()
        }

        fn check_object(
            &self,
            schema: &Value,
            value: &Value,
            at: &str,
            strict: bool,
            errs: &mut Vec<String>,
        ) {
            let Some(object) = value.as_object() else {
                errs.push(format!("{at}: expected object, got {value}"));
                return;
            };
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errs.push(format!("{at}: missing required field {name}"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (name, field) in object {
                let path = format!("{at}.{name}");
                match (properties.and_then(|p| p.get(name)), additional) {
                    (Some(field_schema), _) => self.check(field_schema, field, &path, strict, errs),
                    (None, Some(extra)) if extra.is_object() => {
                        self.check(extra, field, &path, strict, errs);
                    }
                    (None, Some(Value::Bool(false))) => {
                        errs.push(format!("{path}: additional property not allowed"));
                    }
                    (None, None) if strict && properties.is_some() => {
                        errs.push(format!("{path}: field not declared in the spec"));
                    }
                    _ => {}
                }
            }
        }
    }

    fn check_format(schema: &Value, s: &str, at: &str, errs: &mut Vec<String>) {
        match schema.get("format").and_then(Value::as_str) {
            Some("date-time") if s.parse::<jiff::Timestamp>().is_err() => {
                errs.push(format!("{at}: {s:?} is not an RFC 3339 date-time"));
            }
            Some("uuid") => {
                let groups: Vec<usize> = s.split('-').map(str::len).collect();
                let hex = s.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
                if groups != [8, 4, 4, 4, 12] || !hex {
                    errs.push(format!("{at}: {s:?} is not a UUID"));
                }
            }
            _ => {}
        }
    }

    fn check_minimum(schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) {
            if v < min {
                errs.push(format!("{at}: {v} is below the minimum {min}"));
            }
        }
    }

    fn operation<'a>(spec: &'a Value, method: &Method, path: &str) -> &'a Value {
        let op = spec
            .get("paths")
            .and_then(|p| p.get(path))
            .and_then(|p| p.get(method.as_str().to_ascii_lowercase()))
            .unwrap_or(&Value::Null);
        assert!(op.is_object(), "{method} {path} is not in the spec");
        op
    }

    fn response_schema(op: &Value, status: u16) -> Option<&Value> {
        op.pointer(&format!(
            "/responses/{status}/content/application~1json/schema"
        ))
    }

    /// Runs calls against the simulator and collects every way they differ from the spec.
    struct Fidelity<'a> {
        h: &'a Harness,
        spec: &'a Value,
        problems: Vec<String>,
    }

    impl Fidelity<'_> {
        /// Calls `path` (an instance of the spec's `template`) and checks the request body, the
        /// status (must be `want` and declared by the spec) and the response body.
        async fn call(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
        ) -> Value {
            self.check(method, template, path, body, want, false).await
        }

        /// Like [`Fidelity::call`], for a status the spec does not declare for the operation
        /// (a documented choice of the simulator); the body must still be a problem.
        async fn deviation(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
        ) {
            self.check(method, template, path, body, 404, true).await;
        }

        async fn check(
            &mut self,
            method: Method,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
            deviation: bool,
        ) -> Value {
            let checker = Checker { spec: self.spec };
            let op = operation(self.spec, &method, template);
            let what = format!("{method} {template} ({path})");
            if let (Some(body), Some(schema)) = (
                &body,
                op.pointer("/requestBody/content/application~1json/schema"),
            ) {
                let errors = checker.errors(schema, body);
                // A 400 here is always a schema violation, so the spec must agree it is one;
                // every other call must send a valid request.
                if want == 400 && errors.is_empty() {
                    self.problems
                        .push(format!("{what}: sim refused a request the spec accepts"));
                } else if want != 400 {
                    for e in errors {
                        self.problems.push(format!("{what} request: {e}"));
                    }
                }
            }
            let (status, _, text) = self.h.call(method.clone(), path, body.as_ref()).await;
            if status != want {
                self.problems
                    .push(format!("{what}: status {status}, want {want}: {text}"));
                return Value::Null;
            }
            let declared = op.pointer(&format!("/responses/{status}")).is_some();
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
                // The problem shape is the same for every status; take a declared one.
                response_schema(operation(self.spec, &Method::GET, "/teams/{teamId}"), 404)
            } else {
                response_schema(op, status)
            };
            match schema {
                Some(schema) => {
                    for e in checker.errors(schema, &value) {
                        self.problems.push(format!("{what} response {status}: {e}"));
                    }
                }
                // The spec declares no body for this response: it must be empty.
                None if !text.is_empty() => self
                    .problems
                    .push(format!("{what}: spec declares no body, got {text}")),
                None => {}
            }
            value
        }
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
        f.call(Method::POST, ws, ws, create(json!({})), 200).await;
        let clone = json!({ "sourceWorkspaceId": id });
        f.call(Method::POST, ws, ws, create(clone), 200).await;
        f.call(Method::POST, ws, ws, create(json!({ "replicas": 0 })), 400)
            .await;
        let other_team = create(json!({ "teamId": 7 }));
        f.deviation(Method::POST, ws, ws, other_team).await;

        let one = "/workspaces/{workspaceId}";
        let path = format!("/workspaces/{id}");
        f.call(get(), one, &path, None, 200).await;
        f.call(get(), one, "/workspaces/1", None, 404).await;
        let list = "/workspaces/team/{teamId}";
        f.call(get(), list, "/workspaces/team/1", None, 200).await;
        f.deviation(get(), list, "/workspaces/team/7", None).await;
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
        assert_eq!(served.len(), 11, "operations exercised: {served:?}");
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

    #[test]
    fn checker_catches_mismatches() {
        let spec = load_spec();
        let checker = Checker { spec: &spec };
        let op = operation(&spec, &Method::GET, "/workspaces/{workspaceId}");
        let schema = response_schema(op, 200).expect("schema");
        let good = json!({
            "id": 1, "teamId": 1, "name": "n", "planId": 8, "isPrivateRepo": false, "replicas": 1,
            "dataCenterId": 1, "userId": 1, "gitUrl": null, "initialBranch": null,
            "sourceWorkspaceId": null, "welcomeMessage": null, "vpnConfig": null,
            "restricted": false, "collectTraces": false, "persistentLogs": false,
            "createdAt": "2026-01-01T00:00:00.000Z"
        });
        assert_eq!(checker.errors(schema, &good), Vec::<String>::new());

        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            checker.errors(schema, &v)
        };
        assert_eq!(
            mutate(&|v| {
                v.as_object_mut().map(|o| o.remove("gitUrl"));
            })
            .len(),
            1
        );
        assert_eq!(mutate(&|v| v["replicas"] = json!(0)).len(), 1);
        assert_eq!(mutate(&|v| v["replicas"] = json!("1")).len(), 1);
        assert_eq!(mutate(&|v| v["restricted"] = Value::Null).len(), 1);
        assert_eq!(mutate(&|v| v["createdAt"] = json!("yesterday")).len(), 1);
        assert_eq!(
            mutate(&|v| v["branch"] = json!("main")).len(),
            1,
            "undeclared field"
        );
        assert!(
            checker.errors(schema, &json!([good])).len() == 1,
            "array instead of object"
        );

        // $ref, enum and the combinators.
        let problem = json!({ "$ref": "#/components/schemas/_problem" });
        let event =
            json!({ "event": "problem", "data": { "status": 404, "title": "t", "traceId": "x" } });
        assert!(checker.errors(&problem, &event).is_empty());
        let bad_event = json!({ "event": "data", "data": { "status": 999, "title": "t" } });
        assert_eq!(checker.errors(&problem, &bad_event).len(), 3);
        let any = json!({ "anyOf": [{ "type": "string" }, { "type": "integer" }] });
        assert!(checker.errors(&any, &json!(1)).is_empty());
        assert_eq!(checker.errors(&any, &json!(true)).len(), 1);
        let one = json!({ "oneOf": [{ "type": "number" }, { "type": "integer" }] });
        assert_eq!(checker.errors(&one, &json!(1)).len(), 1, "both match");
        assert!(checker.errors(&one, &json!(1.5)).is_empty());
        let all = json!({ "allOf": [
            { "type": "object", "properties": { "a": { "type": "integer" } }, "required": ["a"] },
            { "type": "object", "properties": { "b": { "type": "string" } }, "required": ["b"] }
        ] });
        assert!(checker
            .errors(&all, &json!({ "a": 1, "b": "x" }))
            .is_empty());
        assert_eq!(checker.errors(&all, &json!({ "a": "1" })).len(), 2);
    }
}
