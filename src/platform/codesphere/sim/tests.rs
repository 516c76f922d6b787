use super::routes::*;
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
