//! The simulator's HTTP routes: request parsing, the API handlers and the `/_sim` controls.

use super::render::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Requests: ids, paging, bodies

fn parse_id(raw: &str, what: &'static str) -> ApiResult<u64> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or(ApiError::NotFound(what))
}

fn one_error(field: &str, message: String) -> ApiError {
    ApiError::Invalid(BTreeMap::from([(field.to_owned(), vec![message])]))
}

struct Paging {
    page: u64,
    per_page: u64,
    per_page_given: bool,
}

fn paging(query: Option<&str>) -> ApiResult<Paging> {
    let mut paging = Paging {
        page: 1,
        per_page: DEFAULT_PER_PAGE,
        per_page_given: false,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "page" => {
                paging.page = value.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                    one_error("page", "The page field must be at least 1.".into())
                })?;
            }
            "per_page" => {
                paging.per_page = value
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(|| {
                        one_error(
                            "per_page",
                            format!("The per page field must be between 1 and {MAX_PER_PAGE}."),
                        )
                    })?;
                paging.per_page_given = true;
            }
            _ => {}
        }
    }
    Ok(paging)
}

/// One page of `items` as a bare array with the `Link` header.
fn paged(headers: &HeaderMap, path: &str, p: &Paging, items: Vec<Value>) -> Response {
    let last = (items.len() as u64).div_ceil(p.per_page).max(1);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = |page: u64| {
        if p.per_page_given {
            format!("http://{host}{path}?per_page={}&page={page}", p.per_page)
        } else {
            format!("http://{host}{path}?page={page}")
        }
    };
    let mut links = vec![
        format!("<{}>; rel=\"first\"", url(1)),
        format!("<{}>; rel=\"last\"", url(last)),
    ];
    if p.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url((p.page - 1).min(last))));
    }
    if p.page < last {
        links.push(format!("<{}>; rel=\"next\"", url(p.page + 1)));
    }
    let skip = usize::try_from((p.page - 1).saturating_mul(p.per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(p.per_page).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.into_iter().skip(skip).take(take).collect();
    let mut response = Json(Value::Array(page)).into_response();
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

fn no_content_with_action(action_id: u64) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(ACTION_ID_HEADER, HeaderValue::from(action_id));
    response
}

/// Validates a JSON object body field by field, collecting Laravel-style messages.
struct Fields {
    body: Map<String, Value>,
    errors: BTreeMap<String, Vec<String>>,
}

pub(super) fn human(field: &str) -> String {
    field.replace('_', " ")
}

impl Fields {
    fn parse(body: &[u8]) -> ApiResult<Self> {
        let value: Value = if body.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|_| ApiError::BadRequest("Malformed JSON body."))?
        };
        match value {
            Value::Object(body) => Ok(Self {
                body,
                errors: BTreeMap::new(),
            }),
            _ => Err(ApiError::BadRequest("The body must be a JSON object.")),
        }
    }

    fn fail(&mut self, field: &str, message: String) {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message);
    }

    fn present(&mut self, field: &str, required: bool) -> Option<Value> {
        match self.body.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(field, format!("The {} field is required.", human(field)));
                }
                None
            }
            Some(v) => Some(v.clone()),
        }
    }

    fn string(&mut self, field: &str, required: bool, max: usize) -> Option<String> {
        let value = self.present(field, required)?;
        let Some(s) = value.as_str() else {
            self.fail(
                field,
                format!("The {} field must be a string.", human(field)),
            );
            return None;
        };
        if s.is_empty() && required {
            self.fail(field, format!("The {} field is required.", human(field)));
            return None;
        }
        if s.chars().count() > max {
            self.fail(
                field,
                format!(
                    "The {} field must not be greater than {max} characters.",
                    human(field)
                ),
            );
            return None;
        }
        Some(s.to_owned())
    }

    fn one_of(&mut self, field: &str, required: bool, allowed: &[&str]) -> Option<String> {
        let s = self.string(field, required, 255)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            self.fail(field, format!("The selected {} is invalid.", human(field)));
            None
        }
    }

    fn int(&mut self, field: &str, required: bool, min: u64, max: u64) -> Option<u64> {
        let value = self.present(field, required)?;
        let Some(n) = value.as_u64() else {
            self.fail(
                field,
                format!("The {} field must be an integer.", human(field)),
            );
            return None;
        };
        if !(min..=max).contains(&n) {
            self.fail(
                field,
                format!(
                    "The {} field must be between {min} and {max}.",
                    human(field)
                ),
            );
            return None;
        }
        Some(n)
    }

    fn boolean(&mut self, field: &str, required: bool) -> Option<bool> {
        let value = self.present(field, required)?;
        let b = value.as_bool();
        if b.is_none() {
            self.fail(
                field,
                format!("The {} field must be true or false.", human(field)),
            );
        }
        b
    }

    fn ids(&mut self, field: &str) -> Option<Vec<u64>> {
        let value = self.present(field, false)?;
        let ids: Option<Vec<u64>> = value
            .as_array()
            .map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .unwrap_or(None);
        if ids.is_none() {
            self.fail(
                field,
                format!("The {} field must be a list of ids.", human(field)),
            );
        }
        ids
    }

    fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}

fn valid_repository(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    s.split_once('/').is_some_and(|(o, n)| ok(o) && ok(n))
}

/// Fields shared by `ApplicationEnvironmentCreate` and `ApplicationUpdate`.
struct AppFields {
    name: Option<String>,
    programming_language: Option<String>,
    engine_version: Option<String>,
    framework: Option<String>,
    repository: Option<String>,
    credential_id: Option<u64>,
    default_branch: Option<String>,
    root_directory: Option<String>,
    build_command: Option<String>,
    install_dependencies_command: Option<String>,
    deployments_keep: Option<u64>,
}

fn app_fields(f: &mut Fields, creating: bool) -> AppFields {
    let name = f.string("name", true, 60);
    let programming_language = f.string("programming_language", true, 30);
    let engine_version = f.string("engine_version", true, 10);
    let framework = f.string("framework", true, 30);
    let repository = f.string("repository", creating, 100);
    if repository.as_deref().is_some_and(|r| !valid_repository(r)) {
        f.fail(
            "repository",
            "The repository field must be in the format owner/name.".into(),
        );
    }
    let credential_id = f.int(
        "credential_id",
        creating || repository.is_some(),
        1,
        u64::MAX,
    );
    if credential_id.is_some_and(|c| c != DEFAULT_CREDENTIAL_ID) {
        f.fail(
            "credential_id",
            "The selected credential id is invalid.".into(),
        );
    }
    let default_branch = f.string("default_branch", true, 200);
    let root_directory = f.string("root_directory", false, 255);
    if root_directory
        .as_deref()
        .is_some_and(|r| !r.starts_with('/'))
    {
        f.fail(
            "root_directory",
            "The root directory field must start with one of the following: /.".into(),
        );
    }
    AppFields {
        name,
        programming_language,
        engine_version,
        framework,
        repository,
        credential_id,
        default_branch,
        root_directory,
        build_command: f.string("build_command", false, 255),
        install_dependencies_command: f.string("install_dependencies_command", false, 255),
        deployments_keep: f.int("deployments_keep", false, 1, 10),
    }
}

fn name_taken(d: &Data, environment_id: u64, name: &str, except: u64) -> bool {
    d.apps
        .values()
        .any(|a| a.environment_id == environment_id && a.name == name && a.id != except)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The simulator's HTTP API with the shared middleware and `/_sim/` endpoints.
pub fn router(sim: DevopnessSim) -> Router {
    let control = sim.control.clone();
    let api = Router::new()
        .route("/projects/{project_id}", get(get_project))
        .route(
            "/projects/{project_id}/environments",
            get(list_environments),
        )
        .route("/environments/{environment_id}", get(get_environment))
        .route(
            "/environments/{environment_id}/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/applications/{application_id}",
            get(get_application)
                .put(update_application)
                .delete(delete_application),
        )
        .route(
            "/applications/{application_id}/deployments",
            axum::routing::post(deploy_application),
        )
        .route("/actions/{action_id}", get(get_action))
        .route(
            "/variables/{resource_type}/{resource_id}",
            get(list_variables).post(create_variable),
        )
        .route(
            "/variables/{variable_id}",
            get(get_variable)
                .put(update_variable)
                .delete(delete_variable),
        )
        .route(
            "/environments/{environment_id}/virtual-hosts",
            get(list_vhosts).post(create_vhost),
        )
        .route(
            "/virtual-hosts/{virtual_host_id}",
            get(get_vhost).put(update_vhost).delete(delete_vhost),
        )
        .route(
            "/virtual-hosts/{virtual_host_id}/deploy",
            axum::routing::post(deploy_vhost),
        )
        .route(
            "/environments/{environment_id}/ssl-certificates",
            get(list_certs).post(create_cert),
        )
        .route(
            "/ssl-certificates/{ssl_certificate_id}",
            get(get_cert).delete(delete_cert),
        )
        .route(
            "/ssl-certificates/{ssl_certificate_id}/deploy",
            axum::routing::post(deploy_cert),
        )
        .with_state(sim);
    with_sim(api, control, render_error)
}

fn check_project(raw: &str) -> ApiResult<()> {
    (parse_id(raw, "Project not found.")? == DEFAULT_PROJECT_ID)
        .then_some(())
        .ok_or(ApiError::NotFound("Project not found."))
}

fn check_environment(raw: &str) -> ApiResult<u64> {
    let id = parse_id(raw, "Environment not found.")?;
    (id == DEFAULT_ENVIRONMENT_ID)
        .then_some(id)
        .ok_or(ApiError::NotFound("Environment not found."))
}

async fn get_project(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_project(&id)?;
    Ok(Json(project(&d)).into_response())
}

async fn list_environments(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_project(&id)?;
    let p = paging(query.as_deref())?;
    let path = format!("/projects/{id}/environments");
    Ok(paged(&headers, &path, &p, vec![environment_relation(&d)]))
}

async fn get_environment(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_environment(&id)?;
    Ok(Json(environment(&d)).into_response())
}

async fn list_applications(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .apps
        .values()
        .filter(|a| a.environment_id == env)
        .map(|a| app_relation(&d, a, now))
        .collect();
    Ok(paged(
        &headers,
        &format!("/environments/{env}/applications"),
        &p,
        items,
    ))
}

async fn create_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let a = app_fields(&mut f, true);
    let mut servers = Vec::new();
    if let Some(links) = f.present("linked_resources", false) {
        let parsed: Option<Vec<(String, u64)>> = links.as_array().and_then(|items| {
            items
                .iter()
                .map(|l| {
                    Some((
                        l.get("resource_type")?.as_str()?.to_owned(),
                        l.get("resource_id")?.as_u64()?,
                    ))
                })
                .collect()
        });
        match parsed {
            Some(links)
                if links
                    .iter()
                    .all(|(t, i)| t == "server" && *i == DEFAULT_SERVER_ID) =>
            {
                servers = links.into_iter().map(|(_, i)| i).collect();
                servers.dedup();
            }
            _ => f.fail(
                "linked_resources",
                "The selected linked resources are invalid.".into(),
            ),
        }
    }
    if a.name.as_deref().is_some_and(|n| name_taken(&d, env, n, 0)) {
        f.fail("name", "The name has already been taken.".into());
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let app = App {
        id: d.next(),
        environment_id: env,
        name: a.name.unwrap_or_default(),
        programming_language: a.programming_language.unwrap_or_default(),
        engine_version: a.engine_version.unwrap_or_default(),
        framework: a.framework.unwrap_or_default(),
        repository: a.repository.unwrap_or_default(),
        credential_id: a.credential_id.unwrap_or(DEFAULT_CREDENTIAL_ID),
        default_branch: a.default_branch.unwrap_or_default(),
        root_directory: a.root_directory.unwrap_or_else(|| "/".to_owned()),
        build_command: a.build_command,
        install_dependencies_command: a.install_dependencies_command,
        deployments_keep: a.deployments_keep.unwrap_or(5),
        servers,
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = app_full(&d, &app, Instant::now());
    d.apps.insert(app.id, app);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let app = d.app(parse_id(&id, "Application not found.")?)?;
    Ok(Json(app_full(&d, app, Instant::now())).into_response())
}

async fn update_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let env = d.app(id)?.environment_id;
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail(
                "id",
                "The id must match the application in the path.".into(),
            );
        }
    }
    let a = app_fields(&mut f, false);
    if a.name
        .as_deref()
        .is_some_and(|n| name_taken(&d, env, n, id))
    {
        f.fail("name", "The name has already been taken.".into());
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(app) = d.apps.get_mut(&id) {
        // A full replace of the fields the update schema has; optional ones keep their value
        // when absent (Laravel's `sometimes`).
        app.name = a.name.unwrap_or_default();
        app.programming_language = a.programming_language.unwrap_or_default();
        app.engine_version = a.engine_version.unwrap_or_default();
        app.framework = a.framework.unwrap_or_default();
        app.default_branch = a.default_branch.unwrap_or_default();
        if let Some(r) = a.repository {
            app.repository = r;
        }
        if let Some(c) = a.credential_id {
            app.credential_id = c;
        }
        if let Some(r) = a.root_directory {
            app.root_directory = r;
        }
        if let Some(b) = a.build_command {
            app.build_command = Some(b);
        }
        if let Some(i) = a.install_dependencies_command {
            app.install_dependencies_command = Some(i);
        }
        if let Some(k) = a.deployments_keep {
            app.deployments_keep = k;
        }
        app.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    d: &mut Data,
    kind: ActionKind,
    resource_type: &'static str,
    resource_id: u64,
    servers: Vec<u64>,
    deployment: Option<(String, String, String, u64, String)>,
    fail_reason: Option<String>,
) -> u64 {
    let id = d.next();
    let (deployment_type, source_type, source_ref, pipeline_id, repository) = deployment.map_or(
        (
            String::new(),
            String::new(),
            String::new(),
            None,
            String::new(),
        ),
        |(t, st, sr, p, r)| (t, st, sr, Some(p), r),
    );
    let record = ActionRecord {
        id,
        kind,
        resource_type,
        resource_id,
        environment_id: DEFAULT_ENVIRONMENT_ID,
        pipeline_id,
        deployment_type,
        source_type,
        source_ref,
        repository,
        servers,
        fail_reason,
        started: Instant::now(),
        created_at: jiff::Timestamp::now(),
        step: d.step,
    };
    d.actions.insert(id, record);
    id
}

async fn delete_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let app = d.app(id)?.clone();
    d.apps.remove(&id);
    d.variables.retain(|_, v| v.resource_id != id);
    for v in d.vhosts.values_mut() {
        if v.application_id == Some(id) {
            v.application_id = None;
        }
    }
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "application",
        id,
        app.servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

async fn deploy_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let app = d.app(id)?.clone();
    let mut f = Fields::parse(&body)?;
    let kind = f.one_of("type", true, &["deploy", "redeploy", "rollback"]);
    let has_ref = f.body.get("source_ref").is_some_and(|v| !v.is_null());
    let has_type = f.body.get("source_type").is_some_and(|v| !v.is_null());
    let rollback = kind.as_deref() == Some("rollback");
    let source_type = f.one_of("source_type", has_ref, &["branch", "commit", "tag"]);
    let source_ref = f.string("source_ref", has_type && !rollback, 200);
    if rollback {
        let now = Instant::now();
        match &source_ref {
            None if !f.errors.contains_key("source_ref") => f.fail(
                "source_ref",
                "The source ref field is required when type is rollback.".into(),
            ),
            Some(r)
                if !d.actions.values().any(|a| {
                    a.deploys_app(id) && a.source_ref == *r && a.phase(now) == Phase::Completed
                }) =>
            {
                f.fail(
                    "source_ref",
                    format!(
                        "The source ref {r} was never deployed successfully to this application, so it cannot be rolled back to."
                    ),
                );
            }
            _ => {}
        }
    }
    let pipeline_id = f.int("pipeline_id", false, 1, u64::MAX);
    f.string("environment", false, 255);
    let servers = target_servers(&mut f, app.servers.clone());
    f.finish()?;
    let fail_reason = d
        .fail_next
        .get_mut(&id)
        .and_then(|reasons| (!reasons.is_empty()).then(|| reasons.remove(0)));
    *d.deploys.entry(id).or_insert(0) += 1;
    // A deployment links the servers it targets to the application.
    if let Some(app) = d.apps.get_mut(&id) {
        for s in &servers {
            if !app.servers.contains(s) {
                app.servers.push(*s);
            }
        }
    }
    let deployment = (
        kind.unwrap_or_else(|| "deploy".to_owned()),
        source_type.unwrap_or_else(|| "branch".to_owned()),
        source_ref.unwrap_or_else(|| app.default_branch.clone()),
        pipeline_id.unwrap_or(PIPELINE_BASE + id),
        app.repository.clone(),
    );
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "application",
        id,
        servers,
        Some(deployment),
        fail_reason,
    );
    Ok(no_content_with_action(action))
}

/// The `servers` of a deployment-like body (`ResourceIdList`): servers of the environment, or
/// `default` (every server of the environment when that is empty) when absent.
fn target_servers(f: &mut Fields, default: Vec<u64>) -> Vec<u64> {
    match f.ids("servers") {
        Some(ids) => {
            if ids.iter().any(|s| *s != DEFAULT_SERVER_ID) {
                f.fail("servers", "The selected servers are invalid.".into());
            }
            ids
        }
        None if !default.is_empty() => default,
        None => vec![DEFAULT_SERVER_ID],
    }
}

async fn get_action(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = id.parse::<u64>().map_err(|_| ApiError::NotFoundEmpty)?;
    let action = d.actions.get(&id).ok_or(ApiError::NotFoundEmpty)?;
    Ok(Json(action_full(&d, action, Instant::now())).into_response())
}

fn variable_owner(d: &Data, resource_type: &str, resource_id: &str) -> ApiResult<u64> {
    if resource_type != "application" {
        return Err(ApiError::NotFound("Resource not found."));
    }
    let id = parse_id(resource_id, "Application not found.")?;
    d.app(id).map(|a| a.id)
}

const VARIABLE_TARGETS: &[&str] = &[
    "my-cnf",
    "newrelic-infra-yml",
    "nginx-http-server",
    "nginx-http",
    "nginx-main",
    "os-env-var",
    "php-cli_php-ini",
    "php-fpm_php-fpm-conf",
    "php-fpm_php-ini",
    "php-fpm_pool-d-www-conf",
    "redis-conf",
    "resource-config-file",
    "resource-symlink",
    "supervisord-conf",
    "sysctl-conf",
];

struct VariableFields {
    key: Option<String>,
    value: Option<String>,
    description: Option<String>,
    target: Option<String>,
    kind: Option<String>,
    hidden: Option<bool>,
}

fn variable_fields(f: &mut Fields) -> VariableFields {
    VariableFields {
        key: f.string("key", true, 100),
        value: match f.body.get("value") {
            // An empty value is a value.
            Some(Value::String(s)) if s.is_empty() => Some(String::new()),
            _ => f.string("value", true, 21504),
        },
        description: f.string("description", false, 255),
        target: f.one_of("target", true, VARIABLE_TARGETS),
        kind: f.one_of("type", true, &["file", "symlink", "variable"]),
        hidden: f.boolean("hidden", true),
    }
}

fn key_taken(d: &Data, owner: u64, key: &str, target: &str, except: u64) -> bool {
    d.variables
        .values()
        .any(|v| v.resource_id == owner && v.key == key && v.target == target && v.id != except)
}

async fn list_variables(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path((resource_type, resource_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let owner = variable_owner(&d, &resource_type, &resource_id)?;
    let p = paging(query.as_deref())?;
    let items = d
        .variables
        .values()
        .filter(|v| v.resource_id == owner)
        .map(variable_json)
        .collect();
    let path = format!("/variables/{resource_type}/{owner}");
    Ok(paged(&headers, &path, &p, items))
}

async fn create_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path((resource_type, resource_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let owner = variable_owner(&d, &resource_type, &resource_id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let v = variable_fields(&mut f);
    if let (Some(key), Some(target)) = (&v.key, &v.target) {
        if key_taken(&d, owner, key, target, 0) {
            f.fail("key", "The key has already been taken.".into());
        }
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let variable = Variable {
        id: d.next(),
        resource_id: owner,
        key: v.key.unwrap_or_default(),
        value: v.value.unwrap_or_default(),
        description: v.description,
        target: v.target.unwrap_or_default(),
        kind: v.kind.unwrap_or_default(),
        hidden: v.hidden.unwrap_or_default(),
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = variable_json(&variable);
    d.variables.insert(variable.id, variable);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn find_variable(d: &Data, raw: &str) -> ApiResult<u64> {
    let id = parse_id(raw, "Variable not found.")?;
    d.variables
        .contains_key(&id)
        .then_some(id)
        .ok_or(ApiError::NotFound("Variable not found."))
}

async fn get_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_variable(&d, &id)?;
    let body = d.variables.get(&id).map(variable_json).unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn update_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = find_variable(&d, &id)?;
    let owner = d
        .variables
        .get(&id)
        .map(|v| v.resource_id)
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail("id", "The id must match the variable in the path.".into());
        }
    }
    let v = variable_fields(&mut f);
    if let (Some(key), Some(target)) = (&v.key, &v.target) {
        if key_taken(&d, owner, key, target, id) {
            f.fail("key", "The key has already been taken.".into());
        }
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(var) = d.variables.get_mut(&id) {
        var.key = v.key.unwrap_or_default();
        var.value = v.value.unwrap_or_default();
        var.target = v.target.unwrap_or_default();
        var.kind = v.kind.unwrap_or_default();
        var.hidden = v.hidden.unwrap_or_default();
        if v.description.is_some() {
            var.description = v.description;
        }
        var.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_variable(&d, &id)?;
    d.variables.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn valid_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_ip_port(s: &str) -> bool {
    let (ip, port) = match s.split_once(':') {
        Some((ip, port)) => (ip, Some(port)),
        None => (s, None),
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok()
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Fields shared by `VirtualHostEnvironmentCreate` and `VirtualHostUpdate`.
struct VhostFields {
    name: Option<String>,
    root_directory: Option<String>,
    listen: Option<String>,
    application_id: Option<u64>,
}

/// Validates a virtual host's fields; `kind` is the (given or existing) type the name must
/// fit, `except` the virtual host being updated (0 on create).
fn vhost_fields(
    f: &mut Fields,
    d: &Data,
    env: u64,
    kind: Option<&str>,
    except: u64,
) -> VhostFields {
    let name = f.string("name", true, 255);
    match (kind, name.as_deref()) {
        (Some("name-based"), Some(n)) if !valid_domain(n) => {
            f.fail("name", "The name must be a valid domain name.".into());
        }
        (Some("ip-based"), Some(n)) if !valid_ip_port(n) => f.fail(
            "name",
            "The name must be a valid IPv4 address, optionally with a port.".into(),
        ),
        _ => {}
    }
    let name = name.map(|n| n.to_ascii_lowercase());
    if let Some(n) = &name {
        if d.vhosts
            .values()
            .any(|v| v.environment_id == env && &v.name == n && v.id != except)
        {
            f.fail("name", "The name has already been taken.".into());
        }
    }
    let root_directory = f.string("root_directory", false, 255);
    if root_directory
        .as_deref()
        .is_some_and(|r| !r.starts_with('/'))
    {
        f.fail(
            "root_directory",
            "The root directory field must start with one of the following: /.".into(),
        );
    }
    let listen = f.string("application_listen_address", false, 255);
    if listen.as_deref().is_some_and(|l| {
        !(l.starts_with("http://") || l.starts_with("https://") || l.starts_with("unix:"))
    }) {
        f.fail(
            "application_listen_address",
            "The application listen address field format is invalid.".into(),
        );
    }
    let application_id = f.int("application_id", false, 1, u64::MAX);
    if application_id.is_some_and(|a| d.apps.get(&a).is_none_or(|a| a.environment_id != env)) {
        f.fail(
            "application_id",
            "The selected application id is invalid.".into(),
        );
    }
    VhostFields {
        name,
        root_directory,
        listen,
        application_id,
    }
}

async fn list_vhosts(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .vhosts
        .values()
        .filter(|v| v.environment_id == env)
        .map(|v| vhost_relation(&d, v, now))
        .collect();
    let path = format!("/environments/{env}/virtual-hosts");
    Ok(paged(&headers, &path, &p, items))
}

async fn create_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let kind = f.one_of("type", true, &["name-based", "ip-based"]);
    let v = vhost_fields(&mut f, &d, env, kind.as_deref(), 0);
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let vhost = VirtualHost {
        id: d.next(),
        environment_id: env,
        kind: kind.unwrap_or_default(),
        name: v.name.unwrap_or_default(),
        application_id: v.application_id,
        root_directory: v.root_directory,
        application_listen_address: v.listen,
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = vhost_full(&d, &vhost, Instant::now());
    d.vhosts.insert(vhost.id, vhost);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn find_vhost(d: &Data, raw: &str) -> ApiResult<u64> {
    let id = raw.parse::<u64>().map_err(|_| ApiError::NotFoundEmpty)?;
    d.vhosts
        .contains_key(&id)
        .then_some(id)
        .ok_or(ApiError::NotFoundEmpty)
}

async fn get_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_vhost(&d, &id)?;
    let now = Instant::now();
    let body = d
        .vhosts
        .get(&id)
        .map(|v| vhost_full(&d, v, now))
        .unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn update_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = find_vhost(&d, &id)?;
    let (env, kind) = d
        .vhosts
        .get(&id)
        .map(|v| (v.environment_id, v.kind.clone()))
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail(
                "id",
                "The id must match the virtual host in the path.".into(),
            );
        }
    }
    let clear_listen = f.body.get("application_listen_address") == Some(&Value::Null);
    let clear_application = f.body.get("application_id") == Some(&Value::Null);
    let v = vhost_fields(&mut f, &d, env, Some(&kind), id);
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(vhost) = d.vhosts.get_mut(&id) {
        // Absent optional fields keep their value (Laravel's `sometimes`); `null` clears the
        // nullable ones.
        vhost.name = v.name.unwrap_or_default();
        if v.root_directory.is_some() {
            vhost.root_directory = v.root_directory;
        }
        if v.listen.is_some() || clear_listen {
            vhost.application_listen_address = v.listen;
        }
        if v.application_id.is_some() || clear_application {
            vhost.application_id = v.application_id;
        }
        vhost.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deploy_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = find_vhost(&d, &id)?;
    let mut f = Fields::parse(&body)?;
    let servers = target_servers(&mut f, d.vhost_targets(id));
    f.finish()?;
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "virtual-host",
        id,
        servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

async fn delete_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_vhost(&d, &id)?;
    d.vhosts.remove(&id);
    d.certs.retain(|_, c| c.virtual_host_id != id);
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "virtual-host",
        id,
        vec![DEFAULT_SERVER_ID],
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

const CERT_NOT_FOUND: &str = "SSL certificate not found.";

/// A certificate's id; `404 {message}` when unknown, or an empty `404` where the spec
/// declares it without a body (`POST /ssl-certificates/{id}/deploy`).
fn find_cert(d: &Data, raw: &str, empty_404: bool) -> ApiResult<u64> {
    let missing = || {
        if empty_404 {
            ApiError::NotFoundEmpty
        } else {
            ApiError::NotFound(CERT_NOT_FOUND)
        }
    };
    let id = parse_id(raw, CERT_NOT_FOUND).map_err(|_| missing())?;
    d.certs.contains_key(&id).then_some(id).ok_or_else(missing)
}

async fn list_certs(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .certs
        .values()
        .filter(|c| c.environment_id == env)
        .map(|c| cert_relation(&d, c, now))
        .collect();
    let path = format!("/environments/{env}/ssl-certificates");
    Ok(paged(&headers, &path, &p, items))
}

/// Takes the next reason an issuing action should fail with, if one was set.
fn next_cert_failure(d: &mut Data) -> Option<String> {
    (!d.fail_next_cert.is_empty()).then(|| d.fail_next_cert.remove(0))
}

async fn create_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let vhost_id = f.int("virtual_host_id", true, 1, u64::MAX);
    let issuer = f.one_of("issuer", true, &["custom", "lets-encrypt"]);
    let kind = f.one_of(
        "type",
        false,
        &["single-domain", "multi-domain", "wildcard"],
    );
    let level = f.one_of("validation_level", false, &["DV", "OV", "EV"]);
    let custom = issuer.as_deref() == Some("custom");
    for field in ["custom_private_key", "custom_certificate"] {
        let given = f.string(field, false, 4096);
        match given {
            None if custom && !f.errors.contains_key(field) => f.fail(
                field,
                format!(
                    "The {} field is required when issuer is custom.",
                    human(field)
                ),
            ),
            Some(v) if v.chars().count() < 100 => f.fail(
                field,
                format!(
                    "The {} field must be at least 100 characters.",
                    human(field)
                ),
            ),
            _ => {}
        }
    }
    let vhost = vhost_id.and_then(|v| d.vhosts.get(&v).filter(|v| v.environment_id == env));
    match (vhost_id, vhost) {
        (Some(_), None) => f.fail(
            "virtual_host_id",
            "The selected virtual host id is invalid.".into(),
        ),
        (Some(v), Some(_)) if d.certs.values().any(|c| c.virtual_host_id == v) => f.fail(
            "virtual_host_id",
            "The virtual host already has an SSL certificate.".into(),
        ),
        (Some(_), Some(vh))
            if issuer.as_deref() == Some("lets-encrypt") && vh.kind != "name-based" =>
        {
            f.fail(
                "virtual_host_id",
                "Let's Encrypt only issues certificates for name-based virtual hosts.".into(),
            );
        }
        _ => {}
    }
    let name = vhost.map(|v| v.name.clone()).unwrap_or_default();
    f.finish()?;
    let vhost_id = vhost_id.unwrap_or_default();
    let cert = Certificate {
        id: d.next(),
        environment_id: env,
        virtual_host_id: vhost_id,
        name,
        issuer: issuer.unwrap_or_default(),
        kind: kind.unwrap_or_else(|| "single-domain".to_owned()),
        validation_level: level.unwrap_or_else(|| "DV".to_owned()),
        created_at: fmt_ts(jiff::Timestamp::now()),
    };
    let cert_id = cert.id;
    let lets_encrypt = cert.issuer == "lets-encrypt";
    d.certs.insert(cert_id, cert);
    if lets_encrypt {
        let fail_reason = next_cert_failure(&mut d);
        let servers = d.vhost_targets(vhost_id);
        dispatch(
            &mut d,
            ActionKind::Deploy,
            "ssl-certificate",
            cert_id,
            servers,
            None,
            fail_reason,
        );
    }
    let body = d
        .certs
        .get(&cert_id)
        .map(|c| cert_full(&d, c, Instant::now()))
        .unwrap_or_default();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_cert(&d, &id, false)?;
    let body = d
        .certs
        .get(&id)
        .map(|c| cert_full(&d, c, Instant::now()))
        .unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn deploy_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = find_cert(&d, &id, true)?;
    let vhost_id = d
        .certs
        .get(&id)
        .map(|c| c.virtual_host_id)
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    let servers = target_servers(&mut f, d.vhost_targets(vhost_id));
    f.finish()?;
    let fail_reason = next_cert_failure(&mut d);
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "ssl-certificate",
        id,
        servers,
        None,
        fail_reason,
    );
    Ok(no_content_with_action(action))
}

async fn delete_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_cert(&d, &id, false)?;
    let vhost_id = d
        .certs
        .get(&id)
        .map(|c| c.virtual_host_id)
        .unwrap_or_default();
    d.certs.remove(&id);
    let servers = d.vhost_targets(vhost_id);
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "ssl-certificate",
        id,
        servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}
