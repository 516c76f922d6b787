//! The simulator's HTTP routes: request parsing, the API handlers and the `/_sim` controls.

use super::render::*;
use super::*;

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
pub(super) fn paging(q: &HashMap<String, String>) -> ApiResult<(usize, usize)> {
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

pub(super) fn page<T>(items: impl Iterator<Item = T>, (skip, limit): (usize, usize)) -> Vec<T> {
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

pub(super) async fn token_scope(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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

pub(super) async fn get_organization(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    ok_json(org_json(d.org(&scope, &id)?))
}

pub(super) async fn list_projects(
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

pub(super) async fn list_compute_projects(
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

pub(super) async fn get_project(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    // Bare, unlike most answers.
    ok_json(project_json(&d, d.project(&scope, &id)?))
}

pub(super) async fn set_project_state(
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

pub(super) async fn list_project_deployments(
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

pub(super) async fn list_project_domains(
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

pub(super) async fn cdn_records(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // The project id is required in the path but not used (SDK comment).
    drop(sim.begin(&headers)?);
    ok_json(json!({ "records": { "recordIpv4V2": CDN_IPV4, "recordCnameV2": CDN_CNAME } }))
}

pub(super) async fn get_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    ok_json(json!({ "domain": domain_json(&d.domains[&did]) }))
}

pub(super) async fn create_project_domain(
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

pub(super) async fn update_project_domain(
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

pub(super) async fn verify_project_domain(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path((id, domain)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (mut d, scope) = sim.begin(&headers)?;
    d.project(&scope, &id)?;
    let did = d.domain_id(Owner::Project(&id), &domain)?;
    ok_json(verify_domain(&mut d, &did))
}

pub(super) async fn delete_project_domain(
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

pub(super) async fn start_deployment(
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

pub(super) async fn get_deployment(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    let dep = d.deployment(&scope, &id)?;
    ok_json(json!({ "deployment": deployment_json(&d, dep, Instant::now()) }))
}

pub(super) async fn authorize_deployment(
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

pub(super) async fn cancel_deployment(
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

pub(super) async fn get_compute_deployment(
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

pub(super) async fn list_instance_domains(
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

pub(super) async fn create_instance_domain(
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

pub(super) async fn update_instance_domain(
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

pub(super) async fn verify_instance_domain(
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

pub(super) async fn delete_instance_domain(
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

pub(super) async fn get_compute_project(
    State(sim): State<SpheronSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (d, scope) = sim.begin(&headers)?;
    ok_json(compute_project_json(d.compute_project(&scope, &id)?))
}

pub(super) async fn delete_compute_project(
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
