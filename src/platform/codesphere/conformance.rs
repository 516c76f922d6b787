//! The client against the published spec: every request `Codesphere` sends is recorded on its
//! way into the simulator and checked against `shared/specs/codesphere-openapi.json` (path
//! template, path and query parameters, JSON body), independently of what the simulator
//! accepts. Also: how the client follows redirects with its token.

use super::client::{Codesphere, CreateWorkspace, EnvVar, Stage, UpdateWorkspace};
use super::sim::{self, router, CodesphereSim};
use crate::api::PlatformType;
use crate::core::budget::RateBudget;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform};
use crate::sim::spec_check::{load_spec, request_errors};
use crate::sim::{bind, SimConfig, DEFAULT_TOKEN};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    /// The path as sent (still percent-encoded).
    path: String,
    /// The route template the server matched, if any.
    matched: Option<String>,
    query: Option<String>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

fn entries(log: &Log) -> Vec<Recorded> {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Middleware that records every request (buffering its body) and passes it on unchanged.
async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let entry = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        matched: parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned()),
        query: parts.uri.query().map(str::to_owned),
        content_type: text(header::CONTENT_TYPE),
        authorization: text(header::AUTHORIZATION),
        body: body.clone(),
    };
    log.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// `router` with every request recorded into `log`.
fn recorded(router: Router, log: &Log) -> Router {
    router.layer(middleware::from_fn_with_state(log.clone(), record))
}

/// A real client for `endpoint`, built like `core::references::connect` builds one.
fn client(endpoint: &str) -> Codesphere {
    Codesphere::new(Connection {
        platform: PlatformType::Codesphere,
        endpoint: endpoint.to_owned(),
        credential: Credential::new(DEFAULT_TOKEN),
        ca_pem: None,
        defaults: Default::default(),
        budget: Arc::new(RateBudget::new(6000, 100)),
        metrics: crate::core::metrics::Metrics::new(),
        read_only: false,
    })
    .expect("client")
}

const REPO: &str = "https://github.com/acme/app.git";
const DOMAIN: &str = "shop.example.com";

/// Where the client knowingly differs from the published spec: `(operation, error)`. Each
/// entry must be observed, so the list cannot outlive the deviation it excuses.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[(
    // Not in the published spec; Codesphere's own Go client sends it, and the mapping uses it
    // to create a workspace at a tag or commit (see `sim.rs`).
    "POST /workspaces",
    "body.gitRef: field not declared in the spec",
)];

/// Every operation the client can call, as `METHOD template`.
const OPERATIONS: &[&str] = &[
    "GET /teams",
    "GET /metadata/workspace-plans",
    "GET /workspaces/team/{teamId}",
    "POST /workspaces",
    "GET /workspaces/{workspaceId}",
    "PATCH /workspaces/{workspaceId}",
    "DELETE /workspaces/{workspaceId}",
    "GET /workspaces/{workspaceId}/status",
    "GET /workspaces/{workspaceId}/env-vars",
    "PUT /workspaces/{workspaceId}/env-vars",
    "DELETE /workspaces/{workspaceId}/env-vars",
    "POST /workspaces/{workspaceId}/pipeline/{stage}/start",
    "POST /workspaces/{workspaceId}/pipeline/{stage}/start/{profile}",
    "POST /workspaces/{workspaceId}/pipeline/{stage}/stop",
    "GET /workspaces/{workspaceId}/pipeline/{stage}",
    "PATCH /workspaces/{workspaceId}/landscape/scale",
    "POST /workspaces/{workspaceId}/git/pull",
    "POST /workspaces/{workspaceId}/git/pull/{remote}/{branch}",
    "GET /workspaces/{workspaceId}/git/head",
    "GET /domains/team/{teamId}",
    "GET /domains/team/{teamId}/domain/{domainName}",
    "POST /domains/team/{teamId}/domain/{domainName}",
    "DELETE /domains/team/{teamId}/domain/{domainName}",
    "POST /domains/team/{teamId}/domain/{domainName}/verify",
    "PUT /domains/team/{teamId}/domain/{domainName}/workspace-connections",
];

/// The client's public async methods that `exercise` calls; `forget_list` sends nothing.
const EXERCISED: &[&str] = &[
    "workspaces_of",
    "plans",
    "list_teams",
    "list_plans",
    "list_workspaces",
    "get_workspace",
    "create_workspace",
    "update_workspace",
    "delete_workspace",
    "is_running",
    "list_env",
    "set_env",
    "delete_env",
    "start_stage",
    "stop_stage",
    "stage_status",
    "scale_landscape",
    "git_pull",
    "git_head",
    "list_domains",
    "get_domain",
    "create_domain",
    "delete_domain",
    "verify_domain",
    "set_connections",
];
const SEND_NOTHING: &[&str] = &["forget_list"];

/// A method added to the client must be added to `exercise` (and `EXERCISED`), so this test
/// keeps covering every request the client can send.
#[test]
fn every_client_method_is_exercised() {
    let source = include_str!("client.rs");
    let methods: BTreeSet<&str> = source
        .split("pub async fn ")
        .skip(1)
        .filter_map(|rest| rest.split(['(', '<']).next())
        .collect();
    let known: BTreeSet<&str> = EXERCISED.iter().chain(SEND_NOTHING).copied().collect();
    assert_eq!(methods, known, "public async methods of Codesphere");
}

/// Polls `is_running` until the workspace reports running.
async fn wait_running(cs: &Codesphere, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cs.is_running(id).await.expect("is_running") {
            return;
        }
        assert!(Instant::now() < deadline, "workspace {id} never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls every method of the client that sends a request and checks what it returns.
async fn exercise(cs: &Codesphere, sim: &CodesphereSim) {
    // Teams and plans.
    let teams = cs.list_teams().await.expect("list_teams");
    assert!(teams.iter().any(|t| t.id == 1), "{teams:?}");
    assert!(!cs.verify().await.expect("verify").is_empty());
    let plans = cs.list_plans().await.expect("list_plans");
    let micro = plans.iter().find(|p| p.id == 8).expect("plan 8");
    assert_eq!((micro.max_replicas, micro.deprecated), (3, false));
    assert!(plans.iter().any(|p| p.deprecated), "{plans:?}");
    assert_eq!(*cs.plans().await.expect("plans"), plans);

    // Create with every optional field, pinned to a commit.
    let pinned = sim.push_commit(REPO, "main");
    let body = CreateWorkspace {
        team_id: 1,
        name: "conformance".into(),
        plan_id: 8,
        is_private_repo: true,
        replicas: 2,
        git_url: Some(REPO.into()),
        initial_branch: Some("main".into()),
        git_ref: Some(pinned.clone()),
        base_image: Some("ubuntu-24.04".into()),
        restricted: Some(true),
        storage_mib: Some(20_480),
        vpn_config: Some("office".into()),
        env: vec![
            EnvVar {
                name: "GREETING".into(),
                value: "hi".into(),
            },
            EnvVar {
                name: "LEVEL".into(),
                value: "debug".into(),
            },
        ],
    };
    let created = cs.create_workspace(&body).await.expect("create_workspace");
    let id = created.id;
    assert_eq!(
        (
            created.team_id,
            created.name.as_str(),
            created.plan_id,
            created.replicas
        ),
        (1, "conformance", 8, 2)
    );
    assert_eq!(created.git_url.as_deref(), Some(REPO));
    assert_eq!(created.initial_branch.as_deref(), Some("main"));
    assert_eq!(created.base_image.as_deref(), Some("ubuntu-24.04"));
    assert!(created.restricted);
    assert!(created.dev_domain.is_some());

    // Read back.
    let got = cs.get_workspace(id).await.expect("get_workspace");
    assert_eq!(got.as_ref(), Some(&created), "get returns what create did");
    assert_eq!(
        cs.get_workspace(id + 1000).await.expect("get missing"),
        None
    );
    let listed = cs.list_workspaces(1).await.expect("list_workspaces");
    assert_eq!(*cs.workspaces_of(1).await.expect("workspaces_of"), listed);
    assert_eq!(
        listed.iter().filter(|w| **w == created).count(),
        1,
        "{listed:?}"
    );

    // Update.
    let change = UpdateWorkspace {
        plan_id: Some(20),
        name: Some("conformance-2".into()),
        replicas: Some(3),
    };
    cs.update_workspace(id, &change)
        .await
        .expect("update_workspace");
    let got = cs.get_workspace(id).await.expect("get").expect("exists");
    assert_eq!(
        (got.plan_id, got.name.as_str(), got.replicas),
        (20, "conformance-2", 3)
    );

    // Environment.
    let mut env = cs.list_env(id).await.expect("list_env");
    env.sort();
    assert_eq!(env, body.env);
    let vars = [
        EnvVar {
            name: "LEVEL".into(),
            value: "info".into(),
        },
        EnvVar {
            name: "NEW_VAR.x-1".into(),
            value: "".into(),
        },
    ];
    cs.set_env(id, &vars).await.expect("set_env");
    cs.delete_env(id, &["GREETING".into()])
        .await
        .expect("delete_env");
    let mut env = cs.list_env(id).await.expect("list_env");
    env.sort();
    assert_eq!(env, vars);

    // Running status (the start delay has to pass first).
    wait_running(cs, id).await;
    assert!(sim.set_workspace_running(u64::try_from(id).expect("id"), false));
    assert!(!cs.is_running(id).await.expect("is_running"));
    assert!(sim.set_workspace_running(u64::try_from(id).expect("id"), true));
    assert!(cs.is_running(id).await.expect("is_running"));
    let sim_id = u64::try_from(id).expect("id");

    // Pipeline.
    cs.start_stage(id, Stage::Prepare, None)
        .await
        .expect("start prepare");
    let prepare = cs.stage_status(id, Stage::Prepare).await.expect("status");
    assert!(!prepare.is_empty());
    assert!(
        prepare.iter().all(|e| e.server == sim::IDE_SERVER),
        "{prepare:?}"
    );
    assert_eq!(sim.stage_profile(sim_id, sim::Stage::Prepare), None);
    cs.start_stage(id, Stage::Run, Some("ci.staging-2"))
        .await
        .expect("start run with a profile");
    assert_eq!(
        sim.stage_profile(sim_id, sim::Stage::Run).as_deref(),
        Some("ci.staging-2")
    );

    // Landscape.
    let scale = BTreeMap::from([("web".to_string(), 2), ("api".to_string(), 1)]);
    cs.scale_landscape(id, &scale).await.expect("scale");
    assert_eq!(
        sim.service_replicas(sim_id),
        BTreeMap::from([("api".to_string(), 1), ("web".to_string(), 2)])
    );
    let run = cs.stage_status(id, Stage::Run).await.expect("run status");
    let servers: BTreeSet<(&str, &str)> = run
        .iter()
        .map(|e| (e.server.as_str(), e.replica.as_str()))
        .collect();
    assert_eq!(servers.len(), 3, "one element per service replica: {run:?}");
    cs.stop_stage(id, Stage::Run).await.expect("stop run");
    let run = cs.stage_status(id, Stage::Run).await.expect("run status");
    assert!(
        !run.is_empty() && run.iter().all(|e| e.state == "aborted"),
        "{run:?}"
    );

    // Git: the pinned commit, a branch with a `/`, then a pull of the current branch.
    assert_eq!(cs.git_head(id).await.expect("git_head"), pinned);
    let feature = sim.push_commit(REPO, "feature/x");
    cs.git_pull(id, Some(("origin", "feature/x")))
        .await
        .expect("git_pull branch");
    assert_eq!(sim.git_branch(sim_id).as_deref(), Some("feature/x"));
    assert_eq!(cs.git_head(id).await.expect("git_head"), feature);
    let newer = sim.push_commit(REPO, "feature/x");
    cs.git_pull(id, None).await.expect("git_pull");
    assert_eq!(cs.git_head(id).await.expect("git_head"), newer);
    assert_ne!(newer, feature);

    // Domains.
    assert_eq!(cs.get_domain(1, DOMAIN).await.expect("get_domain"), None);
    let domain = cs.create_domain(1, DOMAIN).await.expect("create_domain");
    assert_eq!((domain.name.as_str(), domain.team_id), (DOMAIN, 1));
    assert!(!domain.domain_verification_status.verified);
    let listed = cs.list_domains(1).await.expect("list_domains");
    assert_eq!(listed, std::slice::from_ref(&domain));
    assert_eq!(
        cs.get_domain(1, DOMAIN).await.expect("get_domain"),
        Some(domain)
    );
    let verification = cs.verify_domain(1, DOMAIN).await.expect("verify");
    assert!(!verification.verified);
    sim.verify_domain_dns(DOMAIN);
    assert!(cs.verify_domain(1, DOMAIN).await.expect("verify").verified);
    let map = BTreeMap::from([("/".to_string(), vec![id])]);
    let connected = cs
        .set_connections(1, DOMAIN, &map)
        .await
        .expect("set_connections");
    assert_eq!(connected.workspaces, map);
    assert!(connected.domain_verification_status.verified);
    assert!(connected.certificate_request_status.issued);
    cs.delete_domain(1, DOMAIN).await.expect("delete_domain");
    assert_eq!(cs.get_domain(1, DOMAIN).await.expect("get_domain"), None);
    assert!(cs.list_domains(1).await.expect("list_domains").is_empty());
    cs.delete_domain(1, DOMAIN)
        .await
        .expect("deleting a deleted domain");

    // Delete.
    cs.delete_workspace(id).await.expect("delete_workspace");
    assert_eq!(cs.get_workspace(id).await.expect("get"), None);
    cs.delete_workspace(id)
        .await
        .expect("deleting a deleted workspace");
}

/// Every way `request` breaks the spec (or the client's conventions), as `(operation, error)`.
fn check_request(spec: &Value, request: &Recorded) -> (Option<String>, Vec<String>) {
    let what = format!("{} {}", request.method, request.path);
    let Some(path) = request.path.strip_prefix("/api") else {
        return (None, vec![format!("{what}: not under the endpoint /api")]);
    };
    let mut errs = Vec::new();
    let body = if request.body.is_empty() {
        None
    } else {
        if request.content_type.as_deref() != Some("application/json") {
            errs.push(format!(
                "content-type {:?}, want application/json",
                request.content_type
            ));
        }
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(v) => Some(v),
            Err(e) => {
                errs.push(format!("body is not JSON: {e}"));
                None
            }
        }
    };
    if request.authorization.as_deref() != Some(&format!("Bearer {DEFAULT_TOKEN}")) {
        errs.push("no bearer token".into());
    }
    let (template, spec_errs) = request_errors(
        spec,
        &request.method,
        path,
        request.query.as_deref(),
        body.as_ref(),
    );
    errs.extend(spec_errs);
    let operation = template.map(|t| format!("{} {t}", request.method));
    // The simulator must have routed it to the same operation.
    if let Some(t) = template {
        let want = format!("/api{t}");
        if request.matched.as_deref() != Some(want.as_str()) {
            errs.push(format!("the simulator routed it to {:?}", request.matched));
        }
    }
    (operation, errs)
}

#[tokio::test]
async fn every_client_request_matches_the_published_spec() {
    let spec = load_spec();
    let sim = CodesphereSim::new(&SimConfig::default());
    sim.set_start_delay(Duration::from_millis(200));
    let log = Log::default();
    let server = bind(
        "127.0.0.1:0".parse().expect("addr"),
        recorded(router(sim.clone()), &log),
    )
    .await
    .expect("bind");
    let cs = client(&format!("{}/api", server.base_url()));

    // The calls run in a task so that, should one of them fail, the spec check below still
    // runs first: a request that breaks the spec is usually why an answer was wrong.
    let cs = Arc::new(cs);
    let calls = tokio::spawn({
        let (cs, sim) = (cs.clone(), sim.clone());
        async move { exercise(&cs, &sim).await }
    })
    .await;

    let requests = entries(&log);
    let mut problems = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut excused: BTreeSet<(&str, &str)> = BTreeSet::new();
    for request in &requests {
        let (operation, errs) = check_request(&spec, request);
        for e in errs {
            let known = KNOWN_DEVIATIONS
                .iter()
                .find(|(op, err)| operation.as_deref() == Some(*op) && e == *err);
            match known {
                Some(k) => {
                    excused.insert(*k);
                }
                None => problems.push(format!(
                    "{} {}{}: {e}",
                    request.method,
                    request.path,
                    request
                        .query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default()
                )),
            }
        }
        used.extend(operation);
    }
    let failed = calls
        .as_ref()
        .err()
        .map(|e| format!("\n(and a call failed: {e})"));
    assert!(
        problems.is_empty(),
        "requests that break the spec:\n{}{}",
        problems.join("\n"),
        failed.unwrap_or_default()
    );
    if let Err(e) = calls {
        std::panic::resume_unwind(e.into_panic());
    }
    let all: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(used, all, "operations the client called");
    let stale: Vec<_> = KNOWN_DEVIATIONS
        .iter()
        .filter(|k| !excused.contains(*k))
        .collect();
    assert!(stale.is_empty(), "deviations no longer seen: {stale:?}");

    // The `/` of a branch travels percent-encoded in one path segment.
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/git/pull/origin/feature%2Fx")),
        "{:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// Requests a redirect target saw: `(path, Authorization header)`.
type Hits = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Answers `GET /real/teams` with one team, and only with the right bearer token.
fn target(hits: &Hits) -> Router {
    let hits = hits.clone();
    Router::new().route(
        "/real/teams",
        get(move |headers: HeaderMap| async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let ok = auth.as_deref() == Some(&format!("Bearer {DEFAULT_TOKEN}"));
            hits.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(("/real/teams".into(), auth));
            if ok {
                Json(json!([{ "id": 7, "name": "moved" }])).into_response()
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }),
    )
}

/// Redirects `GET /api/teams` to `location` with a 307.
fn redirector(location: String) -> Router {
    Router::new().route(
        "/api/teams",
        get(move || async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }),
    )
}

#[tokio::test]
async fn redirect_to_the_same_origin_keeps_the_token() {
    let hits = Hits::default();
    let app = redirector("/real/teams".into()).merge(target(&hits));
    let server = bind("127.0.0.1:0".parse().expect("addr"), app)
        .await
        .expect("bind");
    let cs = client(&format!("{}/api", server.base_url()));

    let teams = cs.list_teams().await.expect("followed the redirect");
    assert_eq!(
        teams
            .iter()
            .map(|t| (t.id, t.name.as_str()))
            .collect::<Vec<_>>(),
        [(7, "moved")]
    );
    let hits = hits.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        hits,
        [(
            "/real/teams".to_string(),
            Some(format!("Bearer {DEFAULT_TOKEN}"))
        )]
    );
}

#[tokio::test]
async fn redirect_to_another_origin_over_http_is_refused() {
    let hits = Hits::default();
    let elsewhere = bind("127.0.0.1:0".parse().expect("addr"), target(&hits))
        .await
        .expect("bind");
    let location = format!("{}/real/teams", elsewhere.base_url());
    let server = bind("127.0.0.1:0".parse().expect("addr"), redirector(location))
        .await
        .expect("bind");
    let cs = client(&format!("{}/api", server.base_url()));

    let err = cs.list_teams().await.expect_err("must not follow");
    assert_eq!(err.kind, ErrorKind::Protocol, "{err}");
    assert!(err.message.contains("refusing"), "{err}");
    assert!(
        hits.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "the other origin was contacted"
    );
}
