use super::routes::*;
use super::*;
use crate::sim::bind;
use crate::sim::spec_check::{load_named_spec, operation, request_errors, Checker};
use reqwest::Method as M;

struct Harness {
    sim: DevopnessSim,
    base: String,
    http: reqwest::Client,
    _server: crate::sim::SimServer,
}

impl Harness {
    async fn new(config: SimConfig) -> Self {
        let sim = DevopnessSim::new(&config);
        let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
            .await
            .expect("bind");
        Self {
            sim,
            base: server.base_url(),
            http: reqwest::Client::new(),
            _server: server,
        }
    }
    async fn default() -> Self {
        Self::new(SimConfig::default()).await
    }
    async fn send(&self, method: M, path: &str, body: Option<&Value>) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json");
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        req.send().await.expect("send")
    }
    async fn json(&self, method: M, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = self.send(method, path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.expect("text");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

const DEFAULT_TOKEN_FOR_TESTS: &str = crate::sim::DEFAULT_TOKEN;

fn app_body(name: &str) -> Value {
    json!({ "name": name, "programming_language": "nodejs", "engine_version": "20",
        "framework": "none", "repository": "acme/web", "credential_id": 1,
        "default_branch": "main" })
}

async fn wait_status(h: &Harness, action: u64, want: &str) -> Value {
    for _ in 0..100 {
        let (status, body) = h.json(M::GET, &format!("/actions/{action}"), None).await;
        assert_eq!(status, 200);
        if body["status"] == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("action {action} never reached {want}");
}

fn action_id(r: &reqwest::Response) -> u64 {
    r.headers()
        .get(ACTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("action id header")
}

#[tokio::test]
async fn lifecycle_create_deploy_complete() {
    let h = Harness::default().await;
    h.sim.set_step_time(Duration::from_millis(50));
    let (status, app) = h
        .json(
            M::POST,
            "/environments/1/applications",
            Some(&app_body("web")),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let id = app["id"].as_u64().expect("id");
    assert_eq!(app["repository_owner"], "acme");
    assert_eq!(h.sim.deployed_ref(id), None);
    let deploy = json!({ "type": "deploy", "source_type": "tag", "source_ref": "v1.2.0",
        "servers": [1] });
    let r = h
        .send(
            M::POST,
            &format!("/applications/{id}/deployments"),
            Some(&deploy),
        )
        .await;
    assert_eq!(r.status(), 204);
    let action = action_id(&r);
    assert_eq!(r.text().await.expect("text"), "");
    assert_eq!(h.sim.deploy_count(id), 1);
    let (_, pending) = h.json(M::GET, &format!("/actions/{action}"), None).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["started_at"], Value::Null);
    let running = wait_status(&h, action, "in-progress").await;
    assert_eq!(running["status_reason_code"], "IN_PROGRESS");
    assert_eq!(running["summary"]["targets"]["in_progress"], 1);
    let done = wait_status(&h, action, "completed").await;
    assert_eq!(done["action_data"]["deployment"]["source_ref"], "v1.2.0");
    assert_eq!(done["resource"]["id"], id);
    assert_eq!(h.sim.deployed_ref(id).as_deref(), Some("v1.2.0"));
    let (_, app) = h.json(M::GET, &format!("/applications/{id}"), None).await;
    assert_eq!(app["last_deployments"]["live"]["id"], action);

    // Update, then delete (and 404 afterwards).
    let mut update = app_body("web-2");
    update["id"] = json!(id);
    let r = h
        .send(M::PUT, &format!("/applications/{id}"), Some(&update))
        .await;
    assert_eq!(r.status(), 204);
    let (_, app) = h.json(M::GET, &format!("/applications/{id}"), None).await;
    assert_eq!(app["name"], "web-2");
    let r = h
        .send(M::DELETE, &format!("/applications/{id}"), None)
        .await;
    assert_eq!(r.status(), 204);
    action_id(&r);
    let (status, body) = h
        .json(M::DELETE, &format!("/applications/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());
    let (status, _) = h.json(M::GET, "/actions/999999", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn failing_deploy_reports_the_reason() {
    let h = Harness::default().await;
    h.sim.set_step_time(Duration::from_millis(20));
    let (_, app) = h
        .json(
            M::POST,
            "/environments/1/applications",
            Some(&app_body("web")),
        )
        .await;
    let id = app["id"].as_u64().expect("id");
    h.sim.fail_next_deploy(id, "npm install failed");
    let deploy = json!({ "type": "deploy" });
    let path = format!("/applications/{id}/deployments");
    let r = h.send(M::POST, &path, Some(&deploy)).await;
    let failed = wait_status(&h, action_id(&r), "failed").await;
    assert_eq!(failed["status_reason_code"], "FAILED");
    assert_eq!(failed["status_reason_human_readable"], "npm install failed");
    assert_eq!(h.sim.deployed_ref(id), None);
    // The knob is used up: the next deployment (default branch) completes.
    let r = h.send(M::POST, &path, Some(&deploy)).await;
    wait_status(&h, action_id(&r), "completed").await;
    assert_eq!(h.sim.deployed_ref(id).as_deref(), Some("main"));
    assert_eq!(h.sim.deploy_count(id), 2);
}

fn links(r: &reqwest::Response) -> BTreeMap<String, String> {
    let raw = r
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .expect("Link header")
        .to_owned();
    raw.split(", ")
        .filter_map(|part| {
            let (url, rel) = part.split_once(">; rel=\"")?;
            Some((
                rel.trim_end_matches('"').to_owned(),
                url.trim_start_matches('<').to_owned(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn lists_page_with_link_headers() {
    let h = Harness::default().await;
    for i in 0..150 {
        let (status, _) = h
            .json(
                M::POST,
                "/environments/1/applications",
                Some(&app_body(&format!("a{i}"))),
            )
            .await;
        assert_eq!(status, 201);
    }
    let list = "/environments/1/applications";
    let r = h.send(M::GET, &format!("{list}?per_page=100"), None).await;
    assert_eq!(r.status(), 200);
    let l = links(&r);
    let base = format!("{}{list}", h.base);
    assert_eq!(l["first"], format!("{base}?per_page=100&page=1"));
    assert_eq!(l["last"], format!("{base}?per_page=100&page=2"));
    assert_eq!(l["next"], format!("{base}?per_page=100&page=2"));
    assert!(!l.contains_key("prev"));
    let page: Vec<Value> = r.json().await.expect("json");
    assert_eq!(page.len(), 100);
    // Follow `next` as given.
    let r = h
        .http
        .get(&l["next"])
        .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("send");
    let l2 = links(&r);
    assert!(!l2.contains_key("next"));
    assert_eq!(l2["prev"], format!("{base}?per_page=100&page=1"));
    let page2: Vec<Value> = r.json().await.expect("json");
    assert_eq!(page2.len(), 50);
    let mut ids: Vec<u64> = page
        .iter()
        .chain(&page2)
        .filter_map(|a| a["id"].as_u64())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 150);
    // Default page size 20: 8 pages.
    let r = h.send(M::GET, &format!("{list}?page=3"), None).await;
    let l = links(&r);
    assert_eq!(l["last"], format!("{base}?page=8"));
    assert_eq!(l["prev"], format!("{base}?page=2"));
    assert_eq!(l["next"], format!("{base}?page=4"));
    assert_eq!(r.json::<Vec<Value>>().await.expect("json").len(), 20);
    let (status, body) = h.json(M::GET, &format!("{list}?per_page=101"), None).await;
    assert_eq!(status, 422);
    assert!(body["errors"]["per_page"][0].is_string());
}

#[tokio::test]
async fn errors_402_422_401_415() {
    let h = Harness::default().await;
    let create = "/environments/1/applications";
    let (status, body) = h
        .json(
            M::POST,
            create,
            Some(&json!({ "name": "x", "repository": "nope" })),
        )
        .await;
    assert_eq!(status, 422);
    for field in [
        "programming_language",
        "engine_version",
        "framework",
        "credential_id",
        "default_branch",
        "repository",
    ] {
        assert!(body["errors"][field][0].is_string(), "{field}: {body}");
    }
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("more errors")));
    h.json(M::POST, create, Some(&app_body("dup"))).await;
    let (status, body) = h.json(M::POST, create, Some(&app_body("dup"))).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["errors"]["name"][0],
        "The name has already been taken."
    );

    h.sim.set_usage_limit_reached(true);
    let (status, body) = h.json(M::POST, create, Some(&app_body("new"))).await;
    assert_eq!(status, 402);
    assert!(body["message"].is_string());
    h.sim.set_usage_limit_reached(false);
    assert_eq!(h.json(M::POST, create, Some(&app_body("new"))).await.0, 201);

    let r = h
        .http
        .get(format!("{}/projects/1", h.base))
        .bearer_auth("wrong")
        .header("Accept", "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["message"], "Unauthenticated.");
    let r = h
        .http
        .get(format!("{}/projects/1", h.base))
        .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
        .header("Accept", "text/html")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
    let r = h
        .http
        .post(format!("{}{create}", h.base))
        .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
        .header("Accept", "application/json")
        .header("Content-Type", "text/plain")
        .body(app_body("z").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn rate_limit_answers_429_in_the_error_shape() {
    let h = Harness::new(SimConfig {
        rate_limit_per_minute: Some(2),
        ..SimConfig::default()
    })
    .await;
    // Two per minute (a sliding window per credential): the third request is refused.
    assert_eq!(h.json(M::GET, "/projects/1", None).await.0, 200);
    assert_eq!(h.json(M::GET, "/projects/1", None).await.0, 200);
    let (status, body) = h.json(M::GET, "/projects/1", None).await;
    assert_eq!(status, 429);
    assert!(body["message"].is_string());
    assert_eq!(h.sim.control().stats().rate_limited_total, 1);
}

/// Calls routes and checks requests and responses against the published spec.
struct Fidelity<'a> {
    h: &'a Harness,
    spec: &'a Value,
    problems: Vec<String>,
}

/// Statuses the API reference documents for every operation ([S-ref]), though most
/// operations do not declare them; their body is `ApiError`.
const DOCUMENTED: &[u16] = &[400, 401, 402, 403, 404, 405, 409, 415, 422, 429, 500, 503];

impl Fidelity<'_> {
    async fn call(
        &mut self,
        method: M,
        template: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> (Value, Option<u64>) {
        let what = format!("{method} {path}");
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let (matched, errs) = request_errors(self.spec, &method, path_only, query, body.as_ref());
        if matched != Some(template) {
            self.problems
                .push(format!("{what}: matched {matched:?}, want {template}"));
        }
        // Invalid bodies are sent on purpose for 4xx answers.
        if want < 400 {
            self.problems
                .extend(errs.into_iter().map(|e| format!("{what} request: {e}")));
        }
        let r = self.h.send(method.clone(), path, body.as_ref()).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        if status != want {
            self.problems
                .push(format!("{what}: status {status}, want {want}: {text}"));
        }
        let checker = Checker { spec: self.spec };
        let op = operation(self.spec, &method, template);
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let api_error = json!({ "$ref": "#/components/schemas/ApiError" });
        let declared = op.pointer(&format!("/responses/{status}"));
        let schema = declared
            .map(|d| d.pointer("/content/application~1json/schema"))
            .unwrap_or_else(|| DOCUMENTED.contains(&status).then_some(&api_error));
        if declared.is_none() && !DOCUMENTED.contains(&status) {
            self.problems.push(format!(
                "{what}: status {status} neither declared nor documented"
            ));
        }
        match schema {
            Some(schema) if *schema == api_error => {
                // `ApiError.errors` declares a placeholder property `field_name`; the
                // documented shape maps field names to lists of messages.
                for e in checker.lenient_errors(schema, &value) {
                    self.problems.push(format!("{what} response {status}: {e}"));
                }
                if let Some(errors) = value.get("errors") {
                    let ok = errors.as_object().is_some_and(|o| {
                        o.values()
                            .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                    });
                    if !ok {
                        self.problems
                            .push(format!("{what}: errors is not field -> [string]: {errors}"));
                    }
                }
            }
            Some(schema) => {
                for e in checker.errors(schema, &value) {
                    self.problems.push(format!("{what} response {status}: {e}"));
                }
            }
            None if !text.is_empty() => self
                .problems
                .push(format!("{what}: spec declares no body, got {text}")),
            None => {}
        }
        let mut action = None;
        for (name, decl) in declared
            .and_then(|d| d.get("headers"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
            match (got, decl.pointer("/schema/type").and_then(Value::as_str)) {
                (None, _) => self.problems.push(format!("{what}: header {name} missing")),
                (Some(v), Some("integer")) => match v.parse::<u64>() {
                    Ok(id) => action = Some(id),
                    Err(_) => self
                        .problems
                        .push(format!("{what}: header {name}={v} not an integer")),
                },
                _ => {}
            }
        }
        (value, action)
    }
}

#[tokio::test]
async fn responses_match_the_published_spec() {
    let spec = load_named_spec("devopness-openapi.json");
    let h = Harness::default().await;
    h.sim.set_step_time(Duration::from_millis(30));
    let mut f = Fidelity {
        h: &h,
        spec: &spec,
        problems: Vec::new(),
    };

    f.call(M::GET, "/projects/{project_id}", "/projects/1", None, 200)
        .await;
    f.call(M::GET, "/projects/{project_id}", "/projects/7", None, 404)
        .await;
    let envs = "/projects/{project_id}/environments";
    f.call(M::GET, envs, "/projects/1/environments", None, 200)
        .await;
    f.call(
        M::GET,
        envs,
        "/projects/1/environments?page=1&per_page=5",
        None,
        200,
    )
    .await;
    f.call(
        M::GET,
        "/environments/{environment_id}",
        "/environments/1",
        None,
        200,
    )
    .await;
    f.call(
        M::GET,
        "/environments/{environment_id}",
        "/environments/2",
        None,
        404,
    )
    .await;

    let apps = "/environments/{environment_id}/applications";
    let full = json!({ "name": "api", "programming_language": "python",
        "engine_version": "3.12", "framework": "none", "repository": "acme/api",
        "credential_id": 1, "default_branch": "main", "root_directory": "/srv",
        "build_command": "make", "install_dependencies_command": "pip install .",
        "deployments_keep": 3,
        "linked_resources": [{ "resource_type": "server", "resource_id": 1 }] });
    let (created, _) = f
        .call(
            M::POST,
            apps,
            "/environments/1/applications",
            Some(full),
            201,
        )
        .await;
    let id = created["id"].as_u64().unwrap_or_default();
    f.call(
        M::POST,
        apps,
        "/environments/1/applications",
        Some(app_body("web")),
        201,
    )
    .await;
    f.call(
        M::POST,
        apps,
        "/environments/1/applications",
        Some(json!({})),
        422,
    )
    .await;
    h.sim.set_usage_limit_reached(true);
    f.call(
        M::POST,
        apps,
        "/environments/1/applications",
        Some(app_body("w2")),
        402,
    )
    .await;
    h.sim.set_usage_limit_reached(false);
    f.call(
        M::GET,
        apps,
        "/environments/1/applications?per_page=1&page=2",
        None,
        200,
    )
    .await;
    f.call(
        M::GET,
        apps,
        "/environments/1/applications?per_page=0",
        None,
        422,
    )
    .await;

    let one = "/applications/{application_id}";
    let path = format!("/applications/{id}");
    f.call(M::GET, one, &path, None, 200).await;
    f.call(M::GET, one, "/applications/99999", None, 404).await;
    let mut update = app_body("api-2");
    update["id"] = json!(id);
    f.call(M::PUT, one, &path, Some(update), 204).await;
    f.call(M::PUT, one, &path, Some(json!({ "id": id })), 422)
        .await;

    let dep = "/applications/{application_id}/deployments";
    let dpath = format!("{path}/deployments");
    let body = json!({ "type": "deploy", "source_type": "branch", "source_ref": "main",
        "pipeline_id": 5, "servers": [1] });
    let (_, action) = f.call(M::POST, dep, &dpath, Some(body), 204).await;
    f.call(
        M::POST,
        dep,
        &dpath,
        Some(json!({ "type": "sideways" })),
        422,
    )
    .await;
    let act = "/actions/{action_id}";
    let apath = format!("/actions/{}", action.unwrap_or_default());
    f.call(M::GET, act, &apath, None, 200).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    f.call(M::GET, act, &apath, None, 200).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    f.call(M::GET, act, &apath, None, 200).await;
    h.sim.fail_next_deploy(id, "boom");
    let (_, failed) = f
        .call(
            M::POST,
            dep,
            &dpath,
            Some(json!({ "type": "redeploy" })),
            204,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(70)).await;
    let fpath = format!("/actions/{}", failed.unwrap_or_default());
    let (failed, _) = f.call(M::GET, act, &fpath, None, 200).await;
    assert_eq!(failed["status"], "failed");
    f.call(M::GET, one, &path, None, 200).await;
    f.call(M::GET, act, "/actions/424242", None, 404).await;
    // Rollbacks: only to a ref deployed successfully before (`main` completed above).
    let back = json!({ "type": "rollback", "source_type": "branch", "source_ref": "main" });
    f.call(M::POST, dep, &dpath, Some(back), 204).await;
    let never = json!({ "type": "rollback", "source_type": "tag", "source_ref": "v9" });
    let (err, _) = f.call(M::POST, dep, &dpath, Some(never), 422).await;
    assert!(err["errors"]["source_ref"][0].is_string(), "{err}");
    assert_eq!(
        h.sim.deploy_types(id),
        vec!["deploy", "redeploy", "rollback"]
    );

    let vars = "/variables/{resource_type}/{resource_id}";
    let vpath = format!("/variables/application/{id}");
    let var = json!({ "key": "PORT", "value": "8080", "target": "os-env-var",
        "type": "variable", "hidden": false, "description": "port" });
    let (v, _) = f.call(M::POST, vars, &vpath, Some(var.clone()), 201).await;
    f.call(M::POST, vars, &vpath, Some(var), 422).await;
    let secret = json!({ "key": "TOKEN", "value": "s3cret", "target": "os-env-var",
        "type": "variable", "hidden": true });
    f.call(M::POST, vars, &vpath, Some(secret), 201).await;
    f.call(M::GET, vars, &vpath, None, 200).await;
    f.call(M::GET, vars, "/variables/application/99999", None, 404)
        .await;
    let vid = v["id"].as_u64().unwrap_or_default();
    let one_var = "/variables/{variable_id}";
    let vp = format!("/variables/{vid}");
    f.call(M::GET, one_var, &vp, None, 200).await;
    let upd = json!({ "id": vid, "key": "PORT", "value": "9090", "target": "os-env-var",
        "type": "variable", "hidden": false });
    f.call(M::PUT, one_var, &vp, Some(upd), 204).await;
    f.call(M::PUT, one_var, &vp, Some(json!({ "id": vid })), 422)
        .await;
    f.call(M::DELETE, one_var, &vp, None, 204).await;
    f.call(M::GET, one_var, &vp, None, 404).await;

    let vhs = "/environments/{environment_id}/virtual-hosts";
    let vh = json!({ "type": "name-based", "name": "app.example.com",
        "root_directory": "/public", "application_listen_address": "http://127.0.0.1:3000",
        "application_id": id });
    let (vh, _) = f
        .call(M::POST, vhs, "/environments/1/virtual-hosts", Some(vh), 201)
        .await;
    let bad = json!({ "type": "name-based", "name": "not a domain" });
    f.call(
        M::POST,
        vhs,
        "/environments/1/virtual-hosts",
        Some(bad),
        422,
    )
    .await;
    f.call(M::GET, vhs, "/environments/1/virtual-hosts", None, 200)
        .await;
    let one_vh = "/virtual-hosts/{virtual_host_id}";
    let vhp = format!("/virtual-hosts/{}", vh["id"].as_u64().unwrap_or_default());
    f.call(M::GET, one_vh, &vhp, None, 200).await;
    f.call(M::GET, one, &path, None, 200).await;

    // Virtual host update and deploy.
    let vid = vh["id"].as_u64().unwrap_or_default();
    let upd = json!({ "id": vid, "name": "shop.example.com", "root_directory": "/srv",
        "application_listen_address": null, "application_id": id });
    f.call(M::PUT, one_vh, &vhp, Some(upd), 204).await;
    let bad = json!({ "id": vid, "name": "not a domain" });
    f.call(M::PUT, one_vh, &vhp, Some(bad), 422).await;
    let upd = json!({ "id": 999_999, "name": "x.example.com" });
    f.call(M::PUT, one_vh, "/virtual-hosts/999999", Some(upd), 404)
        .await;
    let vh_dep = "/virtual-hosts/{virtual_host_id}/deploy";
    let vdp = format!("{vhp}/deploy");
    let servers = json!({ "servers": [1] });
    let (_, vh_action) = f.call(M::POST, vh_dep, &vdp, Some(servers), 204).await;
    let (vh_now, _) = f.call(M::GET, one_vh, &vhp, None, 200).await;
    assert_eq!(vh_now["last_action"]["id"], json!(vh_action));
    assert_eq!(vh_now["application_listen_address"], Value::Null);
    f.call(M::POST, vh_dep, &vdp, Some(json!({})), 204).await;
    let wrong = json!({ "servers": [5] });
    f.call(M::POST, vh_dep, &vdp, Some(wrong), 422).await;
    let none = "/virtual-hosts/999999/deploy";
    f.call(M::POST, vh_dep, none, Some(json!({})), 404).await;
    let vh_apath = format!("/actions/{}", vh_action.unwrap_or_default());
    f.call(M::GET, act, &vh_apath, None, 200).await;

    // SSL certificates.
    let certs = "/environments/{environment_id}/ssl-certificates";
    let cp = "/environments/1/ssl-certificates";
    let le = json!({ "virtual_host_id": vid, "issuer": "lets-encrypt",
        "type": "single-domain", "validation_level": "DV" });
    let (cert, _) = f.call(M::POST, certs, cp, Some(le.clone()), 201).await;
    assert_eq!(cert["active"], false);
    assert_eq!(cert["name"], "shop.example.com");
    f.call(M::POST, certs, cp, Some(le.clone()), 422).await;
    let custom = json!({ "virtual_host_id": 999_999, "issuer": "custom" });
    let (err, _) = f.call(M::POST, certs, cp, Some(custom), 422).await;
    for field in [
        "virtual_host_id",
        "custom_private_key",
        "custom_certificate",
    ] {
        assert!(err["errors"][field][0].is_string(), "{field}: {err}");
    }
    h.sim.set_usage_limit_reached(true);
    f.call(M::POST, certs, cp, Some(le), 402).await;
    h.sim.set_usage_limit_reached(false);
    f.call(M::GET, certs, cp, None, 200).await;
    let one_cert = "/ssl-certificates/{ssl_certificate_id}";
    let cpath = format!(
        "/ssl-certificates/{}",
        cert["id"].as_u64().unwrap_or_default()
    );
    f.call(M::GET, one_cert, &cpath, None, 200).await;
    f.call(M::GET, one_vh, &vhp, None, 200).await;
    tokio::time::sleep(Duration::from_millis(70)).await;
    let (active, _) = f.call(M::GET, one_cert, &cpath, None, 200).await;
    assert_eq!(active["active"], true);
    assert!(active["expires_at"].is_string());
    let (listed, _) = f
        .call(
            M::GET,
            certs,
            &format!("{cp}?page=1&per_page=10"),
            None,
            200,
        )
        .await;
    assert_eq!(listed[0]["active"], true);
    let (vh_now, _) = f.call(M::GET, one_vh, &vhp, None, 200).await;
    assert_eq!(vh_now["ssl_certificate"]["active"], true);
    let issue = format!("/actions/{}", cert["last_action"]["id"]);
    let (issued, _) = f.call(M::GET, act, &issue, None, 200).await;
    assert_eq!(issued["resource"]["type"], "ssl-certificate");
    f.call(M::GET, one_cert, "/ssl-certificates/999999", None, 404)
        .await;
    let cert_dep = "/ssl-certificates/{ssl_certificate_id}/deploy";
    let cdp = format!("{cpath}/deploy");
    h.sim.fail_next_certificate("rate limited by Let's Encrypt");
    let (_, failing) = f.call(M::POST, cert_dep, &cdp, Some(json!({})), 204).await;
    f.call(
        M::POST,
        cert_dep,
        &cdp,
        Some(json!({ "servers": [1] })),
        204,
    )
    .await;
    f.call(
        M::POST,
        cert_dep,
        &cdp,
        Some(json!({ "servers": [3] })),
        422,
    )
    .await;
    let none = "/ssl-certificates/999999/deploy";
    f.call(M::POST, cert_dep, none, Some(json!({})), 404).await;
    tokio::time::sleep(Duration::from_millis(70)).await;
    let fpath = format!("/actions/{}", failing.unwrap_or_default());
    let (failed, _) = f.call(M::GET, act, &fpath, None, 200).await;
    assert_eq!(
        failed["status_reason_human_readable"],
        "rate limited by Let's Encrypt"
    );
    let (renewed, _) = f.call(M::GET, one_cert, &cpath, None, 200).await;
    assert!(renewed["last_renewed_at"].is_string(), "{renewed}");
    let (_, del) = f.call(M::DELETE, one_cert, &cpath, None, 204).await;
    f.call(M::DELETE, one_cert, &cpath, None, 404).await;
    let dpath_c = format!("/actions/{}", del.unwrap_or_default());
    f.call(M::GET, act, &dpath_c, None, 200).await;
    // A custom certificate, removed with its virtual host below.
    let pem = |kind: &str| {
        format!(
            "-----BEGIN {kind}-----\n{}\n-----END {kind}-----",
            "A".repeat(120)
        )
    };
    let custom = json!({ "virtual_host_id": vid, "issuer": "custom",
        "custom_private_key": pem("PRIVATE KEY"), "custom_certificate": pem("CERTIFICATE") });
    let (custom, _) = f.call(M::POST, certs, cp, Some(custom), 201).await;
    assert_eq!(custom["active"], true);
    let custom_path = format!("/ssl-certificates/{}", custom["id"]);

    let (_, del) = f.call(M::DELETE, one_vh, &vhp, None, 204).await;
    f.call(M::GET, one_cert, &custom_path, None, 404).await;
    f.call(M::GET, one_vh, &vhp, None, 404).await;
    f.call(
        M::GET,
        act,
        &format!("/actions/{}", del.unwrap_or_default()),
        None,
        200,
    )
    .await;

    let (_, del) = f.call(M::DELETE, one, &path, None, 204).await;
    f.call(M::DELETE, one, &path, None, 404).await;
    f.call(
        M::GET,
        act,
        &format!("/actions/{}", del.unwrap_or_default()),
        None,
        200,
    )
    .await;

    assert!(f.problems.is_empty(), "{:#?}", f.problems);
}
