//! Devopness: the real control plane, the real `bosun run` binary and the Devopness simulator.

use super::{apply, bosun_cluster, condition, events, support, wait_until};
use bosun::platform::devopness::sim::{router, DevopnessSim};
use bosun::sim::{bind, SimConfig, SimServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LISTING: &str = "/environments/{environment_id}/applications";

struct Env {
    ns: String,
    sim: DevopnessSim,
    server: SimServer,
    _operator: support::Operator,
}

/// A namespace with a Devopness Provider `dv` (project 1, environment 1) and a running operator.
async fn setup(prefix: &str, config: SimConfig) -> Env {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace(prefix).await.name;
    let sim = DevopnessSim::new(&config);
    sim.set_step_time(Duration::from_millis(200));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    apply(&ns, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: dv-token}}\nstringData: {{token: sim-token}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: dv}}\nspec:\n  type: devopness\n  endpoint: {}\n  \
         credentials: {{secretRef: {{name: dv-token, key: token}}}}\n  defaults: {{projectId: 1, environmentId: 1}}\n",
        server.base_url()
    ))
    .await;
    let operator = support::Operator::start(cluster, &ns, &[]).await;
    Env {
        ns,
        sim,
        server,
        _operator: operator,
    }
}

fn workspace(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: dv}}\n  \
         source: {{repository: 'https://github.com/acme/shop.git', {source}}}\n  devopness: {{credentialId: 1}}\n{extra}"
    )
}

async fn wait_ready(ns: &str, what: &str) -> Value {
    wait_until(ns, what, "Ready", |o| {
        let generation = &o["metadata"]["generation"];
        condition(o, "Ready")
            .is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation)
    })
    .await
}

async fn wait_stalled(ns: &str, what: &str) -> Value {
    let obj = wait_until(ns, what, "Stalled", |o| {
        condition(o, "Stalled").is_some_and(|c| c["status"] == "True")
    })
    .await;
    condition(&obj, "Stalled").cloned().unwrap_or_default()
}

fn id_of(obj: &Value) -> u64 {
    obj["status"]["externalId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("status.externalId")
}

async fn annotate(ns: &str, what: &str, annotation: &str) {
    support::cluster()
        .await
        .kubectl_ok(
            &["annotate", "-n", ns, what, annotation, "--overwrite"],
            None,
        )
        .await;
}

#[tokio::test]
async fn application_deploys_redeploys_rolls_back_and_reports_failures() {
    let env = setup("dv", SimConfig::default()).await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let mode = "  env:\n  - {name: MODE, value: prod}\n";

    // create → Ready once the deploy action completed.
    apply(ns, &workspace("shop", "tag: v1", mode)).await;
    let obj = wait_ready(ns, "workspace/shop").await;
    let id = id_of(&obj);
    assert_eq!(sim.deployed_ref(id).as_deref(), Some("v1"));
    assert_eq!(obj["status"]["deployedRevision"], "v1");
    assert_eq!(obj["status"]["operation"]["state"], "completed");
    assert_eq!(sim.deploy_count(id), 1);

    // A new ref: exactly one new deployment, Synced.
    apply(ns, &workspace("shop", "tag: v2", mode)).await;
    wait_until(ns, "workspace/shop", "v2 deployed", |o| {
        o["status"]["sourceRef"] == "tag:v2"
    })
    .await;
    let obj = wait_ready(ns, "workspace/shop").await;
    assert_eq!(condition(&obj, "Synced").unwrap()["status"], "True");
    assert_eq!(sim.deployed_ref(id).as_deref(), Some("v2"));
    assert_eq!(sim.deploy_count(id), 2);

    // The ref goes back: a rollback to the kept build, not a new build.
    apply(ns, &workspace("shop", "tag: v1", mode)).await;
    wait_until(ns, "workspace/shop", "rolled back to v1", |o| {
        o["status"]["sourceRef"] == "tag:v1"
    })
    .await;
    let obj = wait_ready(ns, "workspace/shop").await;
    assert_eq!(sim.deployed_ref(id).as_deref(), Some("v1"));
    assert_eq!(sim.deploy_types(id), vec!["deploy", "deploy", "rollback"]);
    assert_eq!(obj["status"]["deployedRefs"], json!(["tag:v1", "tag:v2"]));

    // A variable edited behind bosun's back (through the API, as a person's script would) is
    // set back on the next poll, with an Event naming it, and deployed.
    let http = reqwest::Client::new();
    let base = env.server.base_url();
    let vars: Value = http
        .get(format!("{base}/variables/application/{id}"))
        .bearer_auth("sim-token")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let var = vars
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "MODE")
        .expect("MODE variable")
        .clone();
    let r = http
        .put(format!("{base}/variables/{}", var["id"]))
        .bearer_auth("sim-token")
        .header("accept", "application/json")
        .json(
            &json!({"id": var["id"], "key": "MODE", "value": "debug", "target": "os-env-var",
            "type": "variable", "hidden": false}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    annotate(ns, "workspace/shop", "bosun.dev/poll-interval=2s").await;
    support::wait_for("drift Event", Duration::from_secs(60), || async {
        events(ns).await.contains(
            "spec.env[MODE] was changed at the platform: set back from \\\"debug\\\" to \\\"prod\\\"",
        )
    })
    .await;
    support::wait_for("redeployed", Duration::from_secs(60), || async {
        sim.deploy_types(id).last().map(String::as_str) == Some("redeploy")
    })
    .await;
    wait_ready(ns, "workspace/shop").await;
    annotate(ns, "workspace/shop", "bosun.dev/poll-interval-").await;
    let deploys_after_drift = sim.deploy_count(id);

    // A failing action: Stalled with the platform's reason, not retried.
    sim.fail_next_deploy(id, "npm install exited with code 1");
    apply(ns, &workspace("shop", "branch: broken", mode)).await;
    let stalled = wait_stalled(ns, "workspace/shop").await;
    assert_eq!(stalled["reason"], "DeployFailed");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("npm install exited with code 1"),
        "{stalled}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        sim.deploy_count(id),
        deploys_after_drift + 1,
        "a failed deployment was retried without a change"
    );
}

/// 402 (usage limit) and 422 (validation) answers become conditions that say what to do, and
/// bosun does not call again until something changes.
#[tokio::test]
async fn usage_limits_and_rejections_stall_without_retrying() {
    let env = setup("dv-errors", SimConfig::default()).await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let creates = || {
        sim.control()
            .stats()
            .requests_for("POST", "/environments/{environment_id}/applications")
    };

    // 422: the platform names the field.
    apply(
        ns,
        &workspace("bad", "branch: main", "").replace("credentialId: 1", "credentialId: 99"),
    )
    .await;
    let stalled = wait_stalled(ns, "workspace/bad").await;
    assert_eq!(stalled["reason"], "RejectedByPlatform", "{stalled}");
    let message = stalled["message"].as_str().unwrap();
    assert!(message.contains("credential_id"), "{message}");

    // 402: the plan's usage limit.
    sim.set_usage_limit_reached(true);
    apply(ns, &workspace("over", "branch: main", "")).await;
    let stalled = wait_stalled(ns, "workspace/over").await;
    assert_eq!(stalled["reason"], "QuotaExceeded", "{stalled}");

    // No retry storm: each was tried once, and stays so.
    assert_eq!(creates(), 2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        creates(),
        2,
        "a user-fixable error was retried without a change"
    );
    eprintln!(
        "402/422: {} create calls in total over 10 s after both Stalled",
        creates()
    );

    // Once the user acts (raises the plan, asks again), it converges.
    sim.set_usage_limit_reached(false);
    annotate(
        ns,
        "workspace/over",
        "bosun.dev/reconcile-requested-at=retry-1",
    )
    .await;
    wait_ready(ns, "workspace/over").await;
    assert_eq!(creates(), 3);
}

/// 150 applications: the listing follows `Link: rel="next"` across pages, so an application
/// on the second page is adopted and a new one is created once.
#[tokio::test]
async fn many_applications_are_listed_across_pages() {
    let env = setup("dv-pages", SimConfig::default()).await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let ids = sim.create_applications(1, 150, "other-");
    assert_eq!(ids.len(), 150);
    apply(
        ns,
        &workspace(
            "adopted",
            "branch: main",
            "  externalName: other-149\n  adoptByName: true\n",
        ),
    )
    .await;
    apply(ns, &workspace("fresh", "branch: main", "")).await;
    let adopted = wait_ready(ns, "workspace/adopted").await;
    assert_eq!(id_of(&adopted), ids[149]);
    wait_ready(ns, "workspace/fresh").await;
    assert_eq!(sim.application_ids().len(), 151, "one create, no duplicate");
    let stats = sim.control().stats();
    assert!(
        stats.requests_for("GET", LISTING) >= 2,
        "two pages per listing: {stats:?}"
    );
}

/// The free plan's 30 requests a minute: 50 Workspaces converge without one 429. Prints the
/// time against the floor the limit implies for the calls that cannot be avoided.
#[tokio::test]
async fn fifty_workspaces_converge_within_thirty_requests_a_minute() {
    // BOSUN_DEVOPNESS_RATE_N overrides the count for a quicker look.
    let n: usize = std::env::var("BOSUN_DEVOPNESS_RATE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let env = setup(
        "dv-rate",
        SimConfig {
            rate_limit_per_minute: Some(30),
            ..SimConfig::default()
        },
    )
    .await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let manifests: Vec<String> = (0..n)
        .map(|i| workspace(&format!("w{i}"), "branch: main", ""))
        .collect();
    let started = Instant::now();
    apply(ns, &manifests.join("---\n")).await;
    support::wait_for("all Ready", Duration::from_secs(900), || async {
        let out = support::cluster()
            .await
            .kubectl_ok(&["get", "-n", ns, "workspaces", "-o", "json"], None)
            .await;
        let list: Value = serde_json::from_str(&out).unwrap_or_default();
        let ready = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|o| condition(o, "Ready").is_some_and(|c| c["status"] == "True"))
                    .count()
            })
            .unwrap_or(0);
        if ready < n {
            eprintln!(
                "{ready}/{n} Ready after {:.0} s: {:?}",
                started.elapsed().as_secs_f64(),
                sim.control().stats().requests_by_route
            );
        }
        ready == n
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let stats = sim.control().stats();
    // Unavoidable: one create and one deploy per workspace, and one listing.
    let minimum_calls = 2 * n + 1;
    let floor = 60.0 * (minimum_calls.div_ceil(30) - 1) as f64;
    eprintln!(
        "devopness 30/min: {n} workspaces Ready in {took:.0} s; floor {floor:.0} s ({minimum_calls} calls); \
         ratio {:.2}; {} calls in total, {} answered 429, at most {} in any minute",
        took / floor,
        stats.requests_total,
        stats.rate_limited_total,
        stats.max_requests_per_minute
    );
    assert_eq!(stats.rate_limited_total, 0, "{stats:?}");
    assert!(stats.max_requests_per_minute <= 30, "{stats:?}");
    assert_eq!(sim.application_ids().len(), n, "no duplicates");
}

/// A DomainBinding becomes a virtual host for the application, deployed, with a Let's Encrypt
/// certificate, and the DNS records to create in status.
#[tokio::test]
async fn domain_binding_is_a_deployed_virtual_host_with_a_certificate() {
    let env = setup("dv-domain", SimConfig::default()).await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    apply(ns, &workspace("shop", "branch: main", "")).await;
    let app = id_of(&wait_ready(ns, "workspace/shop").await);
    let binding = |tls: bool, routes: &str| {
        format!(
            "apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {{name: shop}}\nspec:\n  providerRef: {{name: dv}}\n  \
             domain: shop.example.com\n  tls: {tls}\n  routes:\n{routes}"
        )
    };
    // What a virtual host cannot do is refused with a message that names the field.
    apply(
        ns,
        &binding(true, "  - {path: /api, workspaces: [{name: shop}]}\n"),
    )
    .await;
    let stalled = wait_stalled(ns, "domainbinding/shop").await;
    assert_eq!(stalled["reason"], "UnsupportedByProvider");
    assert!(stalled["message"].as_str().unwrap().contains("spec.routes"));

    apply(
        ns,
        &binding(true, "  - {path: /, workspaces: [{name: shop}]}\n"),
    )
    .await;
    let obj = wait_ready(ns, "domainbinding/shop").await;
    let vhost: u64 = obj["status"]["externalId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("virtual host id");
    assert_eq!(obj["status"]["verification"]["state"], "Verified");
    let records = &obj["status"]["verification"]["dnsRecords"];
    assert_eq!(records[0]["type"], "A", "{records}");
    assert_eq!(records[0]["name"], "shop.example.com");
    let http = reqwest::Client::new();
    let base = env.server.base_url();
    let host: Value = http
        .get(format!("{base}/virtual-hosts/{vhost}"))
        .bearer_auth("sim-token")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(host["application"]["id"], app);
    assert_eq!(host["ssl_certificate"]["active"], true, "{host}");

    // Deleting the binding removes the virtual host (and its certificate).
    support::cluster()
        .await
        .kubectl_ok(&["delete", "-n", ns, "domainbinding/shop"], None)
        .await;
    let r = http
        .get(format!("{base}/virtual-hosts/{vhost}"))
        .bearer_auth("sim-token")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = sim;
}

/// `kubectl delete` of everything at once (Secret first, as a directory in name order): the
/// Provider waits for the Workspace, which removes its application with the client it had.
#[tokio::test]
async fn deleting_secret_provider_and_workspace_together_removes_the_application() {
    let env = setup("dv-delete-all", SimConfig::default()).await;
    let ns = env.ns.as_str();
    apply(ns, &workspace("shop", "branch: main", "")).await;
    let id = id_of(&wait_ready(ns, "workspace/shop").await);
    let cluster = support::cluster().await;
    cluster
        .kubectl_ok(
            &[
                "delete",
                "-n",
                ns,
                "secret/dv-token",
                "provider/dv",
                "workspace/shop",
                "--wait=false",
            ],
            None,
        )
        .await;
    let provider = wait_until(ns, "provider/dv", "waiting for its users", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "ProviderInUse") || o.is_null()
    })
    .await;
    if !provider.is_null() {
        assert!(
            condition(&provider, "Ready").unwrap()["message"]
                .as_str()
                .unwrap()
                .contains("Workspace shop"),
            "{provider}"
        );
    }
    support::wait_for("everything gone", Duration::from_secs(120), || async {
        super::get_json(ns, "workspace/shop").await.is_null()
            && super::get_json(ns, "provider/dv").await.is_null()
    })
    .await;
    assert!(
        !env.sim.application_ids().contains(&id),
        "the application was left behind"
    );
}
