use axum::http::header;
use reqwest::Method;
use serde_json::json;

use crate::sim::SimServer;

use super::tokens::parse_lifetime;
use super::*;

const TOKEN: &str = "test-token";

fn fixtures_dir() -> String {
    format!(
        "{}/../shared/specs/puppet-code-manager",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture(rel: &str) -> Value {
    let path = format!("{}/{rel}", fixtures_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixtures_in(dir: &str) -> Vec<Value> {
    let path = format!("{}/{dir}", fixtures_dir());
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {path}");
    names
        .iter()
        .map(|n| fixture(&format!("{dir}/{n}")))
        .collect()
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("PEM"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("client")
}

struct Harness {
    server: SimServer,
    sim: CodeManagerSim,
    http: reqwest::Client,
    base: String,
}

impl Harness {
    async fn start(settings: CodeManagerSettings, config: SimConfig) -> Self {
        let sim = CodeManagerSim::with_settings(&config, settings).expect("sim");
        let server = serve("127.0.0.1:0".parse().expect("addr"), &sim)
            .await
            .expect("bind");
        let base = server.base_url();
        Self {
            http: client(&sim.ca_pem()),
            server,
            sim,
            base,
        }
    }

    async fn with_step(step: Duration) -> Self {
        Self::start(
            CodeManagerSettings {
                step_duration: step,
                ..CodeManagerSettings::default()
            },
            SimConfig {
                token: TOKEN.to_owned(),
                ..SimConfig::default()
            },
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `/code-manager/v1{path}` with `X-Authentication: token` (if any).
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(&format!("/code-manager/v1{path}")));
        if let Some(token) = token {
            req = req.header("X-Authentication", token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        (status, value)
    }

    async fn deploy(&self, body: Value) -> (u16, Value) {
        self.send(Method::POST, "/deploys", Some(TOKEN), Some(&body))
            .await
    }

    async fn status(&self) -> Value {
        let (status, body) = self
            .send(Method::GET, "/deploys/status", Some(TOKEN), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn status_of(&self, id: u64) -> (u16, Value) {
        self.send(
            Method::GET,
            &format!("/deploys/status?id={id}"),
            Some(TOKEN),
            None,
        )
        .await
    }

    async fn mint(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/rbac-api/v1/auth/token"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    /// Polls `?id=` until the deploy is final; returns every status seen, in order.
    async fn poll_until_final(&self, id: u64) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..500 {
            let (code, body) = self.status_of(id).await;
            assert_eq!(code, 200, "{body}");
            let status = body["status"].as_str().expect("status").to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "synced" || status == "failed" {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("deploy {id} never finished; saw {seen:?}");
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn is_sha(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

// -----------------------------------------------------------------------------------------
// Shape comparison against the real fixtures

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct ShapeRules<'a> {
    /// `(path, key)`: keys the simulator may add at that path (fixtures older than the
    /// API version the simulator follows lack them).
    extra_keys: &'a [(&'a str, &'a str)],
    /// Paths of objects keyed by names (e.g. certnames) rather than fields.
    name_maps: &'a [&'a str],
    /// `(path, key, other)`: compare `key` of the object at `path` with the fixtures'
    /// `other` (for lists the real bodies never caught non-empty but documented alike).
    same_as: &'a [(&'a str, &'a str, &'a str)],
}

/// Checks that `sim` has the key sets and JSON types of at least one of `examples` at every
/// level; array elements are matched against every example element (so variants such as
/// `complete` and `failed` entries each need a matching fixture element).
fn check_shape(
    sim: &Value,
    examples: &[&Value],
    path: &str,
    rules: &ShapeRules<'_>,
    errors: &mut Vec<String>,
) {
    let same_type: Vec<&Value> = examples
        .iter()
        .copied()
        .filter(|e| json_type(e) == json_type(sim))
        .collect();
    if same_type.is_empty() {
        let types: BTreeSet<&str> = examples.iter().map(|e| json_type(e)).collect();
        errors.push(format!(
            "{path}: the simulator has {} where the fixtures have {types:?}",
            json_type(sim)
        ));
        return;
    }
    match sim {
        Value::Object(map) if rules.name_maps.contains(&path) => {
            let values: Vec<&Value> = same_type
                .iter()
                .filter_map(|e| e.as_object())
                .flat_map(|m| m.values())
                .collect();
            if values.is_empty() && !map.is_empty() {
                errors.push(format!("{path}: no fixture example to compare with"));
                return;
            }
            let child = format!("{path}.*");
            for value in map.values() {
                check_shape(value, &values, &child, rules, errors);
            }
        }
        Value::Object(map) => {
            let extra = |k: &str| rules.extra_keys.contains(&(path, k));
            let own: BTreeSet<&str> = map
                .keys()
                .map(String::as_str)
                .filter(|k| !extra(k))
                .collect();
            let matching: Vec<&Value> = same_type
                .iter()
                .copied()
                .filter(|e| {
                    let theirs: BTreeSet<&str> =
                        keys(e).into_iter().filter(|k| !extra(k)).collect();
                    theirs == own
                })
                .collect();
            if matching.is_empty() {
                let theirs: BTreeSet<BTreeSet<&str>> = same_type.iter().map(|e| keys(e)).collect();
                errors.push(format!(
                    "{path}: keys {own:?} match no fixture; the fixtures have {theirs:?}"
                ));
                return;
            }
            for (key, value) in map {
                let source = rules
                    .same_as
                    .iter()
                    .find(|(p, k, _)| *p == path && k == key)
                    .map_or(key.as_str(), |(_, _, other)| *other);
                let sub: Vec<&Value> = matching.iter().filter_map(|e| e.get(source)).collect();
                if sub.is_empty() && extra(key) {
                    continue;
                }
                check_shape(value, &sub, &format!("{path}.{key}"), rules, errors);
            }
        }
        Value::Array(items) => {
            let elements: Vec<&Value> = same_type
                .iter()
                .filter_map(|e| e.as_array())
                .flatten()
                .collect();
            if elements.is_empty() && !items.is_empty() {
                errors.push(format!("{path}: no fixture example to compare with"));
                return;
            }
            let child = format!("{path}[]");
            for item in items {
                check_shape(item, &elements, &child, rules, errors);
            }
        }
        _ => {}
    }
}

const STATUS_RULES: ShapeRules<'static> = ShapeRules {
    // Ids in status entries came with PE 2019.8.3; the fixtures are from 2018.
    extra_keys: &[
        ("$.deploys-status.new[]", "id"),
        ("$.deploys-status.queued[]", "id"),
        ("$.deploys-status.deploying[]", "id"),
        ("$.deploys-status.failed[]", "id"),
    ],
    name_maps: &["$.file-sync-client-status.file-sync-clients"],
    // No real body caught a `new` entry; the docs give all four lists one entry shape.
    same_as: &[("$.deploys-status", "new", "queued")],
};

const STRICT: ShapeRules<'static> = ShapeRules {
    extra_keys: &[],
    name_maps: &[],
    same_as: &[],
};

fn shape_errors(sim: &Value, examples: &[Value], rules: &ShapeRules<'_>) -> Vec<String> {
    let refs: Vec<&Value> = examples.iter().collect();
    let mut errors = Vec::new();
    check_shape(sim, &refs, "$", rules, &mut errors);
    errors
}

#[test]
fn shape_check_detects_differences() {
    let statuses = fixtures_in("deploys-status");
    // Every real body matches the set (so the check is not too strict).
    for body in &statuses {
        assert_eq!(
            shape_errors(body, &statuses, &STATUS_RULES),
            Vec::<String>::new()
        );
    }
    let base = fixture("deploys-status/cmdash-large-02-deploy-status-multiple.json");

    let mut missing = base.clone();
    missing["file-sync-client-status"]
        .as_object_mut()
        .expect("object")
        .remove("all-synced");
    assert!(!shape_errors(&missing, &statuses, &STATUS_RULES).is_empty());

    let mut retyped = base.clone();
    retyped["file-sync-storage-status"]["deployed"][0]["date"] = json!(1_542_333_187);
    let errors = shape_errors(&retyped, &statuses, &STATUS_RULES);
    assert!(
        errors.iter().any(|e| e.contains("deployed[].date")),
        "{errors:?}"
    );

    let mut renamed = base.clone();
    renamed["deploys-status"]["failed"][0]["error"]["details"] = json!({ "corrected-name": "x" });
    assert!(!shape_errors(&renamed, &statuses, &STATUS_RULES).is_empty());

    let mut extra = base.clone();
    extra["deploys-status"]["queued"][0]["priority"] = json!(1);
    assert!(!shape_errors(&extra, &statuses, &STATUS_RULES).is_empty());
    // `id` is allowed only where the rules say so.
    let mut with_id = base.clone();
    with_id["deploys-status"]["queued"][0]["id"] = json!(7);
    assert!(shape_errors(&with_id, &statuses, &STATUS_RULES).is_empty());
    with_id["file-sync-storage-status"]["deployed"][0]["id"] = json!(7);
    assert!(!shape_errors(&with_id, &statuses, &STATUS_RULES).is_empty());

    let mut null_time = base.clone();
    null_time["file-sync-client-status"]["file-sync-clients"]
        ["pe-compiler3-prod.ops.puppetlabs.net"]["last_check_in_time"] = Value::Null;
    assert!(!shape_errors(&null_time, &statuses, &STATUS_RULES).is_empty());

    // A `wait` entry without `file-sync` matches neither `complete` nor `failed`.
    let deploys = fixtures_in("deploys");
    let bad = json!([{"environment": "x", "id": 1, "status": "complete",
                      "deploy-signature": "abc"}]);
    assert!(!shape_errors(&bad, &deploys, &STRICT).is_empty());
    assert!(shape_errors(&deploys[0], &deploys, &STRICT).is_empty());
}

#[tokio::test]
async fn responses_match_the_real_fixtures() {
    let h = Harness::with_step(Duration::from_millis(600)).await;
    let statuses = fixtures_in("deploys-status");

    // Three deploys of one environment run one after the other; the fourth fails.
    let (code, accepted) = h
        .deploy(json!({"environments": ["production", "production", "production", "nosuchenv"]}))
        .await;
    assert_eq!(code, 200, "{accepted}");
    let mut body = Value::Null;
    for _ in 0..300 {
        body = h.status().await;
        let ds = &body["deploys-status"];
        let non_empty = |k: &str| ds[k].as_array().is_some_and(|a| !a.is_empty());
        if non_empty("failed") && non_empty("deploying") && non_empty("queued") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same environment is queued and deploying at once, as in the real data.
    assert_eq!(
        body["deploys-status"]["deploying"][0]["environment"],
        "production"
    );
    assert_eq!(
        body["deploys-status"]["queued"][0]["environment"],
        "production"
    );
    let (code, _) = h.deploy(json!({"environments": ["staging"]})).await;
    assert_eq!(code, 200);
    let busy = h.status().await;
    for list in ["new", "queued", "deploying", "failed"] {
        assert!(
            busy["deploys-status"][list]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{list} is empty: {busy}"
        );
    }
    assert_eq!(busy["file-sync-client-status"]["all-synced"], false);
    assert_eq!(
        shape_errors(&busy, &statuses, &STATUS_RULES),
        Vec::<String>::new()
    );

    // Once everything is done: empty lists, all synced.
    h.sim.set_step_duration(Duration::from_millis(20));
    let mut done = Value::Null;
    for _ in 0..300 {
        done = h.status().await;
        let ds = &done["deploys-status"];
        let idle = ["new", "queued", "deploying"]
            .iter()
            .all(|k| ds[*k].as_array().is_some_and(Vec::is_empty));
        if idle && done["file-sync-client-status"]["all-synced"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        done["file-sync-client-status"]["all-synced"], true,
        "{done}"
    );
    assert_eq!(
        shape_errors(&done, &statuses, &STATUS_RULES),
        Vec::<String>::new()
    );

    // `wait` results: complete and failed entries.
    let (code, waited) = h
        .deploy(json!({"environments": ["staging", "nosuchenv"], "wait": true}))
        .await;
    assert_eq!(code, 200);
    let statuses_seen: Vec<&str> = waited
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses_seen, ["complete", "failed"]);
    assert_eq!(
        shape_errors(&waited, &fixtures_in("deploys"), &STRICT),
        Vec::<String>::new()
    );

    // Error bodies equal the real ones.
    let minted = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD}))
        .await
        .1["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(h.sim.expire_token(&minted));
    let (code, expired) = h
        .send(Method::GET, "/deploys/status", Some(&minted), None)
        .await;
    assert_eq!(code, 401);
    assert_eq!(
        expired,
        fixture("errors/jenkins-pe2016.4-deploys-expired_token.json")
    );
    let (code, bad_type) = h
        .send(
            Method::POST,
            &format!("/webhook?type=githubby&token={TOKEN}"),
            None,
            Some(&json!({"ref": "refs/heads/production"})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(bad_type, fixture("errors/pejava-puppet_general_fail.json"));
}

#[tokio::test]
async fn tls_is_trusted_only_through_the_sim_ca() {
    let h = Harness::with_step(DEFAULT_STEP_DURATION).await;
    assert!(h.base.starts_with("https://127.0.0.1:"), "{}", h.base);
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);

    // The certificate also names localhost (and ::1).
    let by_name = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(h.sim.ca_pem().as_bytes()).expect("PEM"),
        )
        .tls_built_in_root_certs(false)
        .resolve("localhost", h.server.local_addr)
        .build()
        .expect("client");
    let resp = by_name
        .get(format!(
            "https://localhost:{}/code-manager/v1/deploys/status",
            h.server.local_addr.port()
        ))
        .header("X-Authentication", TOKEN)
        .send()
        .await
        .expect("trusted by name");
    assert_eq!(resp.status(), 200);

    let before = h.sim.control().stats().requests_total;
    let other = unrelated_ca_pem();
    assert!(other.starts_with("-----BEGIN CERTIFICATE-----"), "{other}");
    assert_ne!(other, h.sim.ca_pem());
    let err = client(&other)
        .get(h.url("/code-manager/v1/deploys/status"))
        .header("X-Authentication", TOKEN)
        .send()
        .await
        .expect_err("a server signed by another CA must be refused");
    assert!(err.is_connect(), "{err:?}");
    // Without trusting any extra CA the handshake fails too.
    let plain = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .expect("client");
    assert!(plain
        .get(h.url("/code-manager/v1/deploys/status"))
        .send()
        .await
        .is_err());
    // Plain HTTP is not served.
    let http_url = h
        .url("/code-manager/v1/deploys/status")
        .replacen("https", "http", 1);
    let plain_http = reqwest::Client::new()
        .get(http_url)
        .header("X-Authentication", TOKEN)
        .send()
        .await;
    assert!(plain_http.is_err() || plain_http.is_ok_and(|r| r.status() != 200));
    assert_eq!(
        h.sim.control().stats().requests_total,
        before,
        "no refused connection reached the API"
    );
}

#[tokio::test]
async fn tls_server_stops_on_drop() {
    let h = Harness::with_step(DEFAULT_STEP_DURATION).await;
    let addr = h.server.local_addr;
    let Harness { server, .. } = h;
    drop(server);
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "server still accepting after drop");
}

#[tokio::test]
async fn deploy_without_wait_is_polled_by_id_to_synced() {
    let h = Harness::with_step(Duration::from_millis(150)).await;
    let sha = h.sim.push_branch("production");
    assert_ne!(h.sim.deployed("production"), Some(sha.clone()));
    let (code, body) = h
        .deploy(
            json!({"environments": ["production"], "deploy-modules": false,
                       "modules": ["apache", "nginx"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!([{"environment": "production", "id": DEFAULT_FIRST_DEPLOY_ID, "status": "new"}])
    );
    let (code, one) = h.status_of(DEFAULT_FIRST_DEPLOY_ID).await;
    assert_eq!(code, 200);
    assert_eq!(
        keys(&one),
        BTreeSet::from(["environment", "id", "status", "queued-at"])
    );
    let queued_at = one["queued-at"].as_str().expect("queued-at");
    assert!(
        queued_at.ends_with('Z') && queued_at.len() == "2018-11-16T01:53:30.081Z".len(),
        "{queued_at}"
    );
    assert!(queued_at.parse::<jiff::Timestamp>().is_ok(), "{queued_at}");

    let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID).await;
    let order = ["new", "queued", "deploying", "syncing", "synced"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("known status"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("synced"));
    assert!(
        seen.len() >= 3,
        "polling every 10 ms sees most phases: {seen:?}"
    );
    assert_eq!(h.sim.deployed("production"), Some(sha.clone()));

    let status = h.status().await;
    let stored: Vec<&Value> = status["file-sync-storage-status"]["deployed"]
        .as_array()
        .expect("deployed")
        .iter()
        .filter(|e| e["environment"] == "production")
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["deploy-signature"], sha.as_str());
    assert!(stored[0]["date"]
        .as_str()
        .is_some_and(|d| d.ends_with(".000Z")));
    assert_eq!(h.sim.deploy_requests().len(), 1);
    assert_eq!(
        h.sim.deploy_requests()[0]["modules"],
        json!(["apache", "nginx"])
    );
}

#[tokio::test]
async fn wait_returns_complete_entries_with_the_branch_signature() {
    let step = Duration::from_millis(40);
    let h = Harness::with_step(step).await;
    let staging = h.sim.push_branch("staging");
    let production = h.sim.branch("production").expect("production");
    let started = std::time::Instant::now();
    let (code, body) = h
        .deploy(json!({"environments": ["staging", "production"], "wait": true}))
        .await;
    assert!(started.elapsed() >= 4 * step, "wait returns once synced");
    assert_eq!(code, 200, "{body}");
    let entries = body.as_array().expect("array");
    assert_eq!(entries.len(), 2);
    for (entry, (env, sha, id)) in entries.iter().zip([
        ("staging", &staging, DEFAULT_FIRST_DEPLOY_ID),
        ("production", &production, DEFAULT_FIRST_DEPLOY_ID + 1),
    ]) {
        assert_eq!(entry["environment"], env);
        assert_eq!(entry["id"], id);
        assert_eq!(entry["status"], "complete");
        assert_eq!(entry["deploy-signature"], sha.as_str());
        assert!(is_sha(&entry["file-sync"]["environment-commit"]), "{entry}");
        assert!(is_sha(&entry["file-sync"]["code-commit"]), "{entry}");
    }
    assert_eq!(h.sim.deployed("staging"), Some(staging));
    // Synced means every client has it.
    let status = h.status().await;
    assert_eq!(status["file-sync-client-status"]["all-synced"], true);
    assert_eq!(
        h.sim.deploy_status(DEFAULT_FIRST_DEPLOY_ID),
        Some(DeployStatus::Synced)
    );
}

#[tokio::test]
async fn deploy_of_a_missing_branch_fails_with_the_real_error_shape() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    let (code, body) = h
        .deploy(json!({"environments": ["nosuchenv"], "wait": true}))
        .await;
    assert_eq!(code, 200);
    // The real answer of PE 2016.4 for the same request, apart from the id.
    let mut expected = fixture("deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json");
    expected[0]["id"] = json!(DEFAULT_FIRST_DEPLOY_ID);
    assert_eq!(body, expected);

    // A deleted branch fails the same way and leaves storage.
    assert!(h.sim.deployed("staging").is_some());
    assert!(h.sim.delete_branch("staging"));
    assert!(!h.sim.delete_branch("staging"));
    let (_, body) = h.deploy(json!({"environments": ["staging"]})).await;
    let id = body[0]["id"].as_u64().expect("id");
    assert_eq!(id, DEFAULT_FIRST_DEPLOY_ID + 1);
    let seen = h.poll_until_final(id).await;
    assert_eq!(seen.last().map(String::as_str), Some("failed"));
    assert!(!seen.iter().any(|s| s == "syncing"), "{seen:?}");
    assert_eq!(h.sim.deployed("staging"), None);

    let status = h.status().await;
    let failed = status["deploys-status"]["failed"]
        .as_array()
        .expect("failed");
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1]["environment"], "staging");
    assert_eq!(failed[1]["id"], id);
    assert_eq!(
        failed[1]["error"]["kind"],
        "puppetlabs.code-manager/deploy-failure"
    );
    assert_eq!(
        failed[1]["error"]["details"],
        json!({"corrected-env-name": "staging"})
    );
    assert_eq!(
        failed[1]["error"]["msg"],
        "Errors while deploying environment 'staging' (exit code: 1):\nERROR\t -> \
         Environment(s) 'staging' cannot be found in any source and will not be deployed.\n"
    );
    // `?id=` of a failed deploy carries no error (undocumented; see module docs).
    let (_, one) = h.status_of(id).await;
    assert_eq!(one["status"], "failed");
    assert!(one.get("error").is_none());
}

#[tokio::test]
async fn dry_run_lists_branches_and_reports_collect_failure() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    h.sim.push_branch("feature/JIRA-12.x");
    let expected = json!([
        {"environment": "feature_JIRA_12_x"},
        {"environment": "production"},
        {"environment": "staging"},
    ]);
    let (code, body) = h.deploy(json!({"dry-run": true, "deploy-all": true})).await;
    assert_eq!(code, 200);
    assert_eq!(body, expected);
    let (code, body) = h.deploy(json!({"dry_run": true, "deploy-all": true})).await;
    assert_eq!(code, 200, "legacy spelling");
    assert_eq!(body, expected);
    let (_, body) = h.deploy(json!({"dry-run": true})).await;
    assert_eq!(body, expected, "--dry-run implies --all");
    assert_eq!(
        h.sim.deploy_status(DEFAULT_FIRST_DEPLOY_ID),
        None,
        "nothing queued"
    );

    h.sim.set_unreachable(true);
    let (code, body) = h.deploy(json!({"dry-run": true, "deploy-all": true})).await;
    assert_eq!(code, 500);
    assert_eq!(body["kind"], "puppetlabs.code-manager/collect-failed");
    assert_eq!(
        body["msg"],
        "Errors while collecting a list of environments to deploy (exit code: 1)"
    );
    assert!(body["details"]
        .as_str()
        .is_some_and(|d| d.starts_with("ERROR\t -> Unable to determine current branches")));
    let (code, body) = h.deploy(json!({"deploy-all": true})).await;
    assert_eq!(code, 500);
    assert_eq!(body["kind"], "puppetlabs.code-manager/collect-failed");
    // A named deploy is queued, then fails when it cannot fetch.
    let (code, body) = h
        .deploy(json!({"environments": ["production"], "wait": true}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(body[0]["status"], "failed");
    assert_eq!(
        body[0]["error"]["kind"],
        "puppetlabs.code-manager/deploy-failure"
    );
    assert!(h.sim.deployed("production").is_some(), "unchanged");

    h.sim.set_unreachable(false);
    let (code, body) = h.deploy(json!({"deploy-all": true, "wait": true})).await;
    assert_eq!(code, 200);
    let envs: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["environment"].as_str().expect("env"))
        .collect();
    assert_eq!(envs, ["feature_JIRA_12_x", "production", "staging"]);
    assert!(body
        .as_array()
        .expect("array")
        .iter()
        .all(|e| e["status"] == "complete"));
    assert_eq!(
        h.sim.deployed("feature_JIRA_12_x"),
        h.sim.branch("feature/JIRA-12.x")
    );
}

#[tokio::test]
async fn malformed_deploy_requests_are_rejected() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    for body in [
        json!({}),
        json!([]),
        json!({"environments": "production"}),
        json!({"environments": [1]}),
        json!({"environments": ["production"], "wait": "yes"}),
        json!({"environments": ["production"], "modules": 3}),
    ] {
        let (code, answer) = h.deploy(body.clone()).await;
        assert_eq!(code, 400, "{body} → {answer}");
        assert_eq!(answer["kind"], "puppetlabs.code-manager/malformed-request");
    }
    let (code, body) = h.deploy(json!({"environments": []})).await;
    assert_eq!((code, body), (200, json!([])));
    let (code, _) = h.status_of(7).await;
    assert_eq!(code, 404);
    let (code, body) = h
        .send(Method::GET, "/deploys/status?id=x", Some(TOKEN), None)
        .await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn webhook_queues_a_deploy_of_the_pushed_branch() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    let sha = h.sim.push_branch("feature/login");
    let push = json!({
        "ref": "refs/heads/feature/login",
        "after": sha,
        "repository": {"full_name": "acme/control-repo"},
    });
    let (code, body) = h
        .send(
            Method::POST,
            &format!("/webhook?type=github&token={TOKEN}"),
            None,
            Some(&push),
        )
        .await;
    assert_eq!((code, body), (200, json!({"status": "OK"})));
    assert!(
        h.sim.deploy_requests().is_empty(),
        "only /deploys bodies are recorded"
    );
    let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID).await;
    assert_eq!(seen.last().map(String::as_str), Some("synced"));
    assert_eq!(h.sim.deployed("feature_login"), Some(sha));

    // With a prefix the environment is `<prefix>_<branch>`, which this source lacks.
    let (code, _) = h
        .send(
            Method::POST,
            &format!("/webhook?type=gitlab&prefix=acme&token={TOKEN}"),
            None,
            Some(&push),
        )
        .await;
    assert_eq!(code, 200);
    let seen = h.poll_until_final(DEFAULT_FIRST_DEPLOY_ID + 1).await;
    assert_eq!(seen.last().map(String::as_str), Some("failed"));
    let status = h.status().await;
    assert_eq!(
        status["deploys-status"]["failed"][0]["environment"],
        "acme_feature_login"
    );

    // Other hosts' payloads.
    let (code, _) = h
        .send(
            Method::POST,
            "/webhook?type=bitbucket-server",
            Some(TOKEN),
            Some(&json!({"changes": [{"refId": "refs/heads/staging", "type": "UPDATE"}]})),
        )
        .await;
    assert_eq!(code, 200);
    let (_, one) = h.status_of(DEFAULT_FIRST_DEPLOY_ID + 2).await;
    assert_eq!(one["environment"], "staging");

    // Errors: missing type, not a push, no token.
    let (code, body) = h
        .send(
            Method::POST,
            &format!("/webhook?token={TOKEN}"),
            None,
            Some(&push),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["msg"], "Unrecognized webhook type: ''");
    let (code, body) = h
        .send(
            Method::POST,
            &format!("/webhook?type=github&token={TOKEN}"),
            None,
            Some(&json!({"zen": "ping"})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["kind"], "puppetlabs.code-manager/malformed-request");
    let (code, body) = h
        .send(Method::POST, "/webhook?type=github", None, Some(&push))
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "puppetlabs.rbac/user-unauthenticated");
}

#[tokio::test]
async fn auth_errors_have_the_rbac_kinds() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    let cases: [(Option<&str>, Value); 2] = [
        (
            None,
            json!({"kind": "puppetlabs.rbac/user-unauthenticated",
                   "msg": "Route requires authentication"}),
        ),
        (
            Some(""),
            json!({"kind": "puppetlabs.rbac/user-unauthenticated",
                   "msg": "Route requires authentication"}),
        ),
    ];
    for (token, expected) in cases {
        for (method, path) in [
            (Method::GET, "/deploys/status"),
            (Method::POST, "/deploys"),
            (Method::POST, "/webhook?type=github"),
        ] {
            let (code, body) = h
                .send(
                    method.clone(),
                    path,
                    token,
                    Some(&json!({"environments": []})),
                )
                .await;
            assert_eq!((code, &body), (401, &expected), "{method} {path}");
        }
    }
    let (code, body) = h
        .send(Method::GET, "/deploys/status", Some("not-a-token"), None)
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "puppetlabs.rbac/invalid-token");
    assert!(
        !body.to_string().contains("not-a-token"),
        "never echo tokens"
    );

    let mint = || h.mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD}));
    let expired = mint().await.1["token"].as_str().expect("token").to_owned();
    let revoked = mint().await.1["token"].as_str().expect("token").to_owned();
    assert!(h.sim.expire_token(&expired));
    assert!(h.sim.revoke_token(&revoked));
    assert!(!h.sim.revoke_token("nope"));
    let (code, body) = h
        .send(Method::GET, "/deploys/status", Some(&expired), None)
        .await;
    assert_eq!(
        (code, body),
        (
            401,
            json!({"kind": "puppetlabs.rbac/token-expired",
                   "msg": "The provided token has expired."})
        )
    );
    let (code, body) = h
        .send(Method::GET, "/deploys/status", Some(&revoked), None)
        .await;
    assert_eq!(
        (code, body),
        (
            401,
            json!({"kind": "puppetlabs.rbac/token-revoked",
                   "msg": "Authentication token has been revoked."})
        )
    );

    // The query parameter works when the header is absent or empty.
    let (code, _) = h
        .send(
            Method::GET,
            &format!("/deploys/status?token={TOKEN}"),
            None,
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = h
        .send(
            Method::GET,
            &format!("/deploys/status?token={TOKEN}"),
            Some(""),
            None,
        )
        .await;
    assert_eq!(code, 200);
    // The header wins over the query parameter.
    let (code, body) = h
        .send(
            Method::GET,
            &format!("/deploys/status?token={TOKEN}"),
            Some(&revoked),
            None,
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "puppetlabs.rbac/token-revoked");
    let resp = h
        .http
        .get(h.url("/code-manager/v1/deploys/status"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn tokens_are_minted_and_expire() {
    let h = Harness::with_step(Duration::from_millis(20)).await;
    assert_eq!(h.sim.minted_tokens(), 0);
    let (code, body) = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                     "lifetime": "1s", "label": "bosun-1"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(keys(&body), BTreeSet::from(["token"]));
    let short = body["token"].as_str().expect("token").to_owned();
    assert_eq!(short.len(), 44);
    assert!(short
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(h.sim.minted_tokens(), 1);
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some(&short), None)
        .await;
    assert_eq!(code, 200);

    // Labels are unique among live tokens.
    let (code, body) = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                     "lifetime": "1h", "label": "bosun-1"}))
        .await;
    assert_eq!(code, 400, "{body}");

    let (code, body) = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": "wrong"}))
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "puppetlabs.rbac/user-unauthenticated");
    let (code, _) = h
        .mint(json!({"login": "someone", "password": DEFAULT_PASSWORD}))
        .await;
    assert_eq!(code, 401);
    for bad in ["5 h", "h", "-1", "1w", ""] {
        let (code, body) = h
            .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD,
                         "lifetime": bad}))
            .await;
        assert_eq!(code, 400, "{bad:?}");
        assert_eq!(body["kind"], "puppetlabs.rbac/malformed-request");
    }
    let (code, _) = h.mint(json!({"login": DEFAULT_LOGIN})).await;
    assert_eq!(code, 400);
    assert_eq!(h.sim.minted_tokens(), 1);

    let (_, body) = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "lifetime": "0"}))
        .await;
    let forever = body["token"].as_str().expect("token").to_owned();
    assert_eq!(h.sim.minted_tokens(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, body) = h
        .send(Method::GET, "/deploys/status", Some(&short), None)
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "puppetlabs.rbac/token-expired");
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some(&forever), None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200, "the configured token never expires by itself");
    // The label of an expired token is free again.
    let (code, _) = h
        .mint(json!({"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "label": "bosun-1"}))
        .await;
    assert_eq!(code, 200);
}

#[test]
fn lifetimes_parse_like_rbac() {
    assert_eq!(parse_lifetime("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_lifetime("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_lifetime("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_lifetime("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_lifetime("2d"), Some(Duration::from_secs(172_800)));
    assert_eq!(parse_lifetime("1y"), Some(Duration::from_secs(31_536_000)));
    assert_eq!(parse_lifetime("0"), Some(MAX_TOKEN_LIFETIME));
    for bad in ["", "h", "1 h", "1w", "-1", "1.5h", "1hh"] {
        assert_eq!(parse_lifetime(bad), None, "{bad:?}");
    }
}

#[test]
fn environment_names_are_corrected_like_r10k() {
    assert_eq!(environment_name("feature/JIRA-12.x"), "feature_JIRA_12_x");
    assert_eq!(environment_name("production"), "production");
    assert_eq!(environment_name("a_b9"), "a_b9");
}

#[tokio::test]
async fn ids_grow_and_expire_after_the_ttl() {
    let h = Harness::start(
        CodeManagerSettings {
            first_deploy_id: 500,
            step_duration: Duration::from_millis(10),
            deploy_ttl: Duration::from_millis(300),
            ..CodeManagerSettings::default()
        },
        SimConfig {
            token: TOKEN.to_owned(),
            ..SimConfig::default()
        },
    )
    .await;
    let (_, body) = h
        .deploy(json!({"environments": ["production", "staging", "nosuchenv"]}))
        .await;
    let ids: Vec<u64> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [500, 501, 502]);
    for id in &ids {
        h.poll_until_final(*id).await;
    }
    let status = h.status().await;
    assert_eq!(status["deploys-status"]["failed"][0]["id"], 502);

    let mut gone = false;
    for _ in 0..100 {
        if h.status_of(500).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "deploy 500 still known after its TTL");
    let (code, body) = h.status_of(502).await;
    assert_eq!(code, 404);
    assert_eq!(keys(&body), BTreeSet::from(["kind", "msg"]));
    assert_eq!(body["kind"], "puppetlabs.code-manager/not-found");
    let status = h.status().await;
    assert_eq!(status["deploys-status"]["failed"], json!([]), "forgotten");
    // Storage outlives the deploy records.
    assert!(h.sim.deployed("production").is_some());

    let (_, body) = h.deploy(json!({"environments": ["production"]})).await;
    assert_eq!(body[0]["id"], 503, "ids are never reused");
    // A longer TTL applies at once.
    h.sim.set_deploy_ttl(DEFAULT_DEPLOY_TTL);
    h.poll_until_final(503).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.status_of(503).await.0, 200);
}

#[tokio::test]
async fn rate_limit_and_faults_answer_code_manager_errors() {
    let h = Harness::start(
        CodeManagerSettings::default(),
        SimConfig {
            token: TOKEN.to_owned(),
            // One request per minute per credential.
            rate_limit_per_minute: Some(1),
            ..SimConfig::default()
        },
    )
    .await;
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);
    let resp = h
        .http
        .get(h.url("/code-manager/v1/deploys/status"))
        .header("X-Authentication", TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get(header::RETRY_AFTER).is_some());
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["kind"], "puppetlabs.code-manager/too-many-requests");
    // The limit is per credential: the query-parameter token counts as the same one, and
    // another token has its own budget.
    let (code, _) = h
        .send(
            Method::GET,
            &format!("/deploys/status?token={TOKEN}"),
            None,
            None,
        )
        .await;
    assert_eq!(code, 429);
    let (code, _) = h
        .send(Method::GET, "/deploys/status", Some("other-token"), None)
        .await;
    assert_eq!(code, 401, "not rate-limited, but unknown");

    h.sim.control().set_outage(true);
    let (code, body) = h
        .send(Method::GET, "/deploys/status", Some("third-token"), None)
        .await;
    assert_eq!(code, 503);
    assert_eq!(body["kind"], "puppetlabs.code-manager/service-unavailable");
    assert!(body["msg"].is_string());
    h.sim.control().set_outage(false);
    let (code, body) = h
        .send(Method::GET, "/nope", Some("fourth-token"), None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "puppetlabs.code-manager/not-found");
}

#[tokio::test]
async fn the_repository_state_is_read_when_the_deploy_starts() {
    let step = Duration::from_millis(100);
    let h = Harness::with_step(step).await;
    let (_, body) = h.deploy(json!({"environments": ["staging"]})).await;
    let id = body[0]["id"].as_u64().expect("id");
    // Pushed while the deploy is still new: r10k fetches when it starts deploying.
    let later = h.sim.push_branch("staging");
    let seen = h.poll_until_final(id).await;
    assert_eq!(seen.last().map(String::as_str), Some("synced"));
    assert_eq!(h.sim.deployed("staging"), Some(later));
}
