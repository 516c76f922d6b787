//! The simulator's HTTP routes: request parsing, the API handlers and the `/_sim` controls.

use super::*;

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
pub(super) fn fake_commit(git_url: &str, branch: &str, pushes: u32) -> String {
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

pub(super) fn is_commit_id(s: &str) -> bool {
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

pub(super) fn pull(
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

pub(super) async fn git_head(
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

pub(super) fn stage_status(
    record: &WorkspaceRecord,
    stage: Stage,
    clock: &Clock,
) -> Vec<StageStatus> {
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

pub(super) fn start(
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

pub(super) fn deploy(
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
