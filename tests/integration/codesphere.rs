//! Codesphere end to end: the real control plane, the real `bosun run` binary and the
//! Codesphere simulator, with kstatus rules checked after each step.

use super::{annotate, apply, bosun_cluster, condition, events, get_json, support, wait_until};
use bosun::platform::codesphere::sim::{router, CodesphereSim, Stage};
use bosun::sim::{bind, SimConfig, SimServer};
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

struct Env {
    ns: String,
    sim: CodesphereSim,
    _server: SimServer,
    operator: support::Operator,
}

/// A namespace with a ready Codesphere Provider `cs` (team 1) and a running operator.
async fn setup(prefix: &str) -> Env {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace(prefix).await.name;
    let sim = CodesphereSim::new(&SimConfig::default());
    sim.set_start_delay(Duration::from_millis(500));
    sim.set_stage_duration(Duration::from_millis(500));
    sim.set_run_delay(Duration::from_millis(500));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cs-token}}\nstringData: {{token: sim-token}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cs}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: cs-token, key: token}}}}\n  defaults: {{teamId: 1}}\n",
        server.base_url()
    );
    apply(&ns, &manifest).await;
    let operator = support::Operator::start(cluster, &ns, &[]).await;
    wait_condition(&ns, "provider/cs", "Ready", "True").await;
    Env {
        ns,
        sim,
        _server: server,
        operator,
    }
}

async fn wait_condition(ns: &str, what: &str, type_: &str, status: &str) -> Value {
    wait_until(ns, what, &format!("{type_}={status}"), |o| {
        condition(o, type_).is_some_and(|c| c["status"] == status)
    })
    .await
}

/// kstatus "Current": Ready, nothing abnormal, observedGeneration current everywhere.
async fn wait_current(ns: &str, what: &str) -> Value {
    let obj = wait_until(ns, what, "Current (kstatus)", |o| {
        let generation = &o["metadata"]["generation"];
        condition(o, "Ready")
            .is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation)
            && &o["status"]["observedGeneration"] == generation
    })
    .await;
    for t in ["Reconciling", "Stalled"] {
        assert_eq!(
            condition(&obj, t).unwrap()["status"],
            "False",
            "{what}: {t} true while Ready"
        );
    }
    assert_eq!(condition(&obj, "Synced").unwrap()["status"], "True");
    obj
}

fn workspace(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: cs}}\n  \
         source: {{repository: 'https://git.example.com/shop.git', branch: main}}\n{extra}"
    )
}

fn id_of(obj: &Value) -> u64 {
    obj["status"]["externalId"]
        .as_str()
        .expect("externalId")
        .parse()
        .expect("numeric id")
}

#[tokio::test]
async fn workspace_lifecycle_create_update_drift_delete() {
    let env = setup("cs-life").await;
    let ns = env.ns.as_str();
    let app_secret =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: app}\nstringData: {key: first}\n";
    apply(ns, app_secret).await;
    let spec = "  plan: Micro\n  env:\n  - {name: MODE, value: prod}\n  - {name: KEY, valueFrom: {secretKeyRef: {name: app, key: key}}}\n";
    apply(ns, &workspace("shop", spec)).await;

    // create → Ready, with what was observed in status.
    let obj = wait_current(ns, "workspace/shop").await;
    let id = id_of(&obj);
    assert_eq!(obj["status"]["sourceRef"], "branch:main");
    assert_eq!(obj["status"]["replicas"], 1);
    assert!(
        obj["status"]["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://"),
        "{:#}",
        obj["status"]
    );
    assert_eq!(
        obj["status"]["deployedRevision"].as_str().map(str::len),
        Some(40)
    );
    let ws = env.sim.workspace(id).expect("workspace at the simulator");
    assert_eq!(ws.name, format!("{ns}-shop"));
    let vars = env.sim.env_vars(id).unwrap();
    assert!(
        vars.iter().any(|v| v.name == "KEY" && v.value == "first"),
        "{vars:?}"
    );
    assert_eq!(env.sim.count_workspaces_named(&format!("{ns}-shop")), 1);
    assert!(
        obj["metadata"]["annotations"]
            .get("bosun.dev/create-pending")
            .is_none(),
        "marker left behind"
    );

    // spec change → Synced: replicas and a rotated Secret value reach the platform.
    support::cluster()
        .await
        .kubectl_ok(&["scale", "-n", ns, "workspace/shop", "--replicas=2"], None)
        .await;
    apply(ns, &app_secret.replace("first", "second")).await;
    wait_until(ns, "workspace/shop", "replicas 2", |o| {
        o["status"]["replicas"] == 2
    })
    .await;
    wait_current(ns, "workspace/shop").await;
    assert_eq!(env.sim.workspace(id).unwrap().replicas, 2);
    support::wait_for("rotated secret at the platform", TIMEOUT, || async {
        env.sim
            .env_vars(id)
            .unwrap()
            .iter()
            .any(|v| v.name == "KEY" && v.value == "second")
    })
    .await;

    // A change made through the Codesphere API behind bosun's back is set back, with an Event.
    let http = reqwest::Client::new();
    let base = env._server.base_url();
    let r = http
        .patch(format!("{base}/api/workspaces/{id}"))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"replicas": 3}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    support::cluster()
        .await
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "workspace/shop",
                "bosun.dev/poll-interval=5s",
                "--overwrite",
            ],
            None,
        )
        .await;
    support::wait_for("replicas set back to 2", TIMEOUT, || async {
        env.sim.workspace(id).unwrap().replicas == 2
    })
    .await;
    support::wait_for("drift Event", TIMEOUT, || async {
        let e = events(ns).await;
        e.contains("DriftCorrected")
            && e.contains("spec.replicas was changed at the platform: set back from 3 to 2")
    })
    .await;
    let (_, metrics) = env.operator.get("/metrics").await;
    assert!(
        metrics
            .contains("bosun_drift_corrections_total{kind=\"Workspace\",field=\"spec.replicas\"}"),
        "{metrics}"
    );

    // A variable removed from the spec is deleted at the platform; one edited there is reset.
    apply(
        ns,
        &workspace(
            "shop",
            "  plan: Micro\n  replicas: 2\n  env:\n  - {name: MODE, value: prod}\n",
        ),
    )
    .await;
    support::wait_for("KEY deleted", TIMEOUT, || async {
        !env.sim
            .env_vars(id)
            .unwrap()
            .iter()
            .any(|v| v.name == "KEY")
    })
    .await;

    // delete with the default policy removes it at the platform.
    support::cluster()
        .await
        .kubectl_ok(
            &["delete", "-n", ns, "workspace/shop", "--timeout=60s"],
            None,
        )
        .await;
    assert!(
        env.sim.workspace(id).is_none(),
        "workspace {id} still at the simulator"
    );
}

#[tokio::test]
async fn branch_change_rolls_out_in_place_and_failing_prepare_stalls() {
    let env = setup("cs-roll").await;
    let ns = env.ns.as_str();
    apply(
        ns,
        &workspace(
            "app",
            "  pipeline: {prepare: true, test: true, run: Running}\n",
        ),
    )
    .await;
    let obj = wait_current(ns, "workspace/app").await;
    let id = id_of(&obj);
    assert_eq!(env.sim.stage_start_count(id, Stage::Prepare), 1);
    assert_eq!(env.sim.stage_start_count(id, Stage::Test), 1);
    let first_revision = obj["status"]["deployedRevision"].clone();

    // A new branch: pull, prepare, test, run restart; the new commit is reported.
    let new_head = env
        .sim
        .push_commit("https://git.example.com/shop.git", "release");
    apply(
        ns,
        &workspace(
            "app",
            "  pipeline: {prepare: true, test: true, run: Running}\n",
        )
        .replace("branch: main", "branch: release"),
    )
    .await;
    let obj = wait_until(ns, "workspace/app", "rolled out release", |o| {
        o["status"]["sourceRef"] == "branch:release"
    })
    .await;
    assert_eq!(
        obj["status"]["deployedRevision"],
        Value::from(new_head.clone())
    );
    assert_ne!(obj["status"]["deployedRevision"], first_revision);
    wait_current(ns, "workspace/app").await;
    assert_eq!(env.sim.stage_start_count(id, Stage::Prepare), 2);
    assert_eq!(env.sim.git_branch(id).as_deref(), Some("release"));

    // A failing prepare: Stalled naming the stage; the running app is left alone.
    env.sim.fail_next_stage(id, Stage::Prepare);
    let run_starts = env.sim.stage_start_count(id, Stage::Run);
    env.sim
        .push_commit("https://git.example.com/shop.git", "hotfix");
    apply(
        ns,
        &workspace(
            "app",
            "  pipeline: {prepare: true, test: true, run: Running}\n",
        )
        .replace("branch: main", "branch: hotfix"),
    )
    .await;
    let obj = wait_condition(ns, "workspace/app", "Stalled", "True").await;
    let stalled = condition(&obj, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "StageFailed");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("prepare stage ended in failure"),
        "{stalled}"
    );
    assert_eq!(
        env.sim.stage_start_count(id, Stage::Run),
        run_starts,
        "run restarted after a failed prepare"
    );
    assert_eq!(
        obj["status"]["sourceRef"], "branch:release",
        "status claims the failed ref"
    );
    // No retry storm: the failed stage is not started again until something changes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.sim.stage_start_count(id, Stage::Prepare), 3);
}

#[tokio::test]
async fn adoption_orphan_and_the_create_pending_marker() {
    let env = setup("cs-adopt").await;
    let ns = env.ns.as_str();
    let cluster = support::cluster().await;

    // Orphan leaves the workspace at the platform.
    apply(ns, &workspace("keep", "  deletionPolicy: Orphan\n")).await;
    let id = id_of(&wait_current(ns, "workspace/keep").await);
    cluster
        .kubectl_ok(
            &["delete", "-n", ns, "workspace/keep", "--timeout=60s"],
            None,
        )
        .await;
    assert!(
        env.sim.workspace(id).is_some(),
        "Orphan deleted the workspace"
    );

    // Re-import by externalId: Ready, and no second create.
    let creates_before = env
        .sim
        .control()
        .stats()
        .requests_for("POST", "/api/workspaces");
    apply(
        ns,
        &workspace(
            "again",
            &format!("  externalName: {ns}-keep\n  externalId: '{id}'\n"),
        ),
    )
    .await;
    let obj = wait_current(ns, "workspace/again").await;
    assert_eq!(id_of(&obj), id);
    assert_eq!(
        env.sim
            .control()
            .stats()
            .requests_for("POST", "/api/workspaces"),
        creates_before
    );

    // A name that exists but was not created by bosun is never taken over silently.
    apply(
        ns,
        &workspace("clash", &format!("  externalName: {ns}-keep\n")),
    )
    .await;
    let obj = wait_condition(ns, "workspace/clash", "Stalled", "True").await;
    assert_eq!(condition(&obj, "Stalled").unwrap()["reason"], "NameTaken");

    // A crash right after the pending marker, when the create went through: the restarted
    // operator finds the workspace by name instead of creating a second one.
    let name = format!("{ns}-crashed");
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/workspaces", env._server.base_url()))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"teamId": 1, "name": name, "planId": 8, "isPrivateRepo": false, "replicas": 1,
            "gitUrl": "https://git.example.com/shop.git", "initialBranch": "main"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let manifest = workspace("crashed", "").replace("metadata: {name: crashed}", "metadata: {name: crashed, annotations: {bosun.dev/create-pending: '2026-11-23T00:00:00Z'}}");
    apply(ns, &manifest).await;
    let obj = wait_current(ns, "workspace/crashed").await;
    assert_eq!(
        obj["status"]["externalId"],
        Value::from(created["id"].to_string())
    );
    assert_eq!(
        env.sim.count_workspaces_named(&name),
        1,
        "a second workspace was created"
    );
    assert!(obj["metadata"]["annotations"]
        .get("bosun.dev/create-pending")
        .is_none());

    // The marker without a create: exactly one workspace appears.
    let manifest = workspace("fresh", "").replace(
        "metadata: {name: fresh}",
        "metadata: {name: fresh, annotations: {bosun.dev/create-pending: '2026-11-23T00:00:00Z'}}",
    );
    apply(ns, &manifest).await;
    wait_current(ns, "workspace/fresh").await;
    assert_eq!(env.sim.count_workspaces_named(&format!("{ns}-fresh")), 1);
}

#[tokio::test]
async fn observe_never_writes() {
    let env = setup("cs-observe").await;
    let ns = env.ns.as_str();
    apply(ns, &workspace("owned", "")).await;
    let id = id_of(&wait_current(ns, "workspace/owned").await);
    env.sim.control().reset_stats();
    apply(
        ns,
        &workspace(
            "watcher",
            &format!(
                "  externalId: '{id}'\n  managementPolicy: Observe\n  replicas: 3\n  plan: Boost\n"
            ),
        ),
    )
    .await;
    let obj = wait_until(ns, "workspace/watcher", "observed", |o| {
        o["status"]["externalId"].as_str() == Some(id.to_string().as_str())
    })
    .await;
    assert_eq!(obj["status"]["replicas"], 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = env.sim.control().stats();
    let writes: u64 = stats
        .requests_by_route
        .iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        writes, 0,
        "Observe sent writes: {:?}",
        stats.requests_by_route
    );
}

#[tokio::test]
async fn service_scale_follows_kubectl_scale_and_heals_drift() {
    let env = setup("cs-scale").await;
    let ns = env.ns.as_str();
    apply(ns, &workspace("api", "  plan: Boost\n")).await;
    let id = id_of(&wait_current(ns, "workspace/api").await);
    apply(ns, "apiVersion: bosun.dev/v1alpha1\nkind: ServiceScale\nmetadata: {name: api-web}\nspec: {workspaceRef: {name: api}, service: web, replicas: 2}\n").await;
    let obj = wait_current(ns, "servicescale/api-web").await;
    assert_eq!(obj["status"]["replicas"], 2);

    support::cluster()
        .await
        .kubectl_ok(
            &["scale", "-n", ns, "servicescale/api-web", "--replicas=4"],
            None,
        )
        .await;
    support::wait_for("simulator runs 4", TIMEOUT, || async {
        env.sim.service_replicas(id).get("web") == Some(&4)
    })
    .await;
    let obj = wait_until(ns, "servicescale/api-web", "4 replicas observed", |o| {
        o["status"]["replicas"] == 4
    })
    .await;
    assert_eq!(obj["spec"]["replicas"], 4);
    wait_current(ns, "servicescale/api-web").await;

    // Scaled behind bosun's back through the API: set back on the next poll, with an Event.
    support::cluster()
        .await
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "servicescale/api-web",
                "bosun.dev/poll-interval=5s",
            ],
            None,
        )
        .await;
    let r = reqwest::Client::new()
        .patch(format!(
            "{}/api/workspaces/{id}/landscape/scale",
            env._server.base_url()
        ))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"web": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    support::wait_for("drift corrected back to 4", TIMEOUT, || async {
        env.sim.service_replicas(id).get("web") == Some(&4)
            && events(ns).await.contains("set back from 1 to 4")
    })
    .await;
}

#[tokio::test]
async fn domain_binding_merges_routes_and_reports_verification() {
    let env = setup("cs-domain").await;
    let ns = env.ns.as_str();
    apply(ns, &workspace("blue", "")).await;
    apply(ns, &workspace("green", "")).await;
    let blue = id_of(&wait_current(ns, "workspace/blue").await);
    let green = id_of(&wait_current(ns, "workspace/green").await);
    let domain = format!("{ns}.example.com");
    let binding = |paths: &str| {
        format!("apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {{name: shop}}\nspec:\n  providerRef: {{name: cs}}\n  domain: {domain}\n  routes:\n{paths}")
    };
    apply(ns, &binding("  - {path: /, workspaces: [{name: blue}]}\n")).await;

    // Created, routed, and waiting for DNS with the records to create in status.
    let obj = wait_until(ns, "domainbinding/shop", "pending verification", |o| {
        o["status"]["verification"]["state"] == "Pending"
    })
    .await;
    let records = obj["status"]["verification"]["dnsRecords"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !records.is_empty(),
        "no DNS records in status: {:#}",
        obj["status"]
    );
    assert_eq!(
        condition(&obj, "Ready").unwrap()["reason"],
        "DomainNotVerified"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "False");
    assert_eq!(
        env.sim.domain(&domain).unwrap().workspaces.get("/"),
        Some(&vec![blue])
    );

    // The user creates the records: verified, Ready.
    env.sim.verify_domain_dns(&domain);
    support::cluster()
        .await
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "domainbinding/shop",
                "bosun.dev/reconcile-requested-at=dns-done",
            ],
            None,
        )
        .await;
    let obj = wait_current(ns, "domainbinding/shop").await;
    assert_eq!(obj["status"]["verification"]["state"], "Verified");

    // A path someone else added at the platform is left alone; a 409 is retried.
    let r = reqwest::Client::new()
        .put(format!(
            "{}/api/domains/team/1/domain/{domain}/workspace-connections",
            env._server.base_url()
        ))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"/": [blue], "/blog": [green]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    env.sim.set_domain_busy(&domain, 2);
    apply(ns, &binding("  - {path: /, workspaces: [{name: blue}, {name: green}]}\n  - {path: /api, workspaces: [{name: green}]}\n")).await;
    support::wait_for("routes merged", TIMEOUT, || async {
        let d = env.sim.domain(&domain).unwrap();
        d.workspaces.get("/").map(|v| v.len()) == Some(2)
            && d.workspaces.get("/api") == Some(&vec![green])
            && d.workspaces.get("/blog") == Some(&vec![green])
    })
    .await;
    wait_current(ns, "domainbinding/shop").await;

    // Deleting removes bosun's paths only; the domain stays for the path others use.
    support::cluster()
        .await
        .kubectl_ok(
            &["delete", "-n", ns, "domainbinding/shop", "--timeout=60s"],
            None,
        )
        .await;
    let d = env.sim.domain(&domain).expect("domain kept for /blog");
    assert_eq!(
        d.workspaces.keys().cloned().collect::<Vec<_>>(),
        vec!["/blog".to_string()]
    );
}

#[tokio::test]
async fn blue_green_switches_the_domain_then_retires_the_old_workspace() {
    let env = setup("cs-bg").await;
    let ns = env.ns.as_str();
    let spec = "  strategy: BlueGreen\n  pipeline: {prepare: true, test: false, run: Running}\n";
    apply(ns, &workspace("shop", spec)).await;
    let blue = id_of(&wait_current(ns, "workspace/shop").await);
    let domain = format!("{ns}.example.com");
    env.sim.verify_domain_dns(&domain);
    apply(ns, &format!("apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {{name: shop}}\nspec:\n  providerRef: {{name: cs}}\n  domain: {domain}\n  routes:\n  - {{path: /, workspaces: [{{name: shop}}]}}\n")).await;
    wait_current(ns, "domainbinding/shop").await;
    assert_eq!(
        env.sim.domain(&domain).unwrap().workspaces.get("/"),
        Some(&vec![blue])
    );

    // A failing prepare on the candidate: traffic stays, Stalled names the stage.
    let candidate = env.sim.workspaces().iter().map(|w| w.id).max().unwrap() + 1;
    env.sim.fail_next_stage(candidate, Stage::Prepare);
    env.sim
        .push_commit("https://git.example.com/shop.git", "v2");
    apply(
        ns,
        &workspace("shop", spec).replace("branch: main", "branch: v2"),
    )
    .await;
    let obj = wait_condition(ns, "workspace/shop", "Stalled", "True").await;
    let msg = condition(&obj, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("prepare stage ended in failure")
            && msg.contains(&format!("traffic stays on workspace {blue}")),
        "{msg}"
    );
    assert_eq!(
        env.sim.domain(&domain).unwrap().workspaces.get("/"),
        Some(&vec![blue])
    );
    assert_eq!(id_of(&obj), blue);
    assert!(
        env.sim.workspace(candidate).is_none(),
        "the failed candidate was left behind"
    );

    // A good change: candidate built, routes switched, old workspace deleted.
    env.sim
        .push_commit("https://git.example.com/shop.git", "v3");
    apply(
        ns,
        &workspace("shop", spec).replace("branch: main", "branch: v3"),
    )
    .await;
    let obj = wait_until(ns, "workspace/shop", "switched to a new workspace", |o| {
        o["status"]["sourceRef"] == "branch:v3" && o["status"]["operation"].is_null()
    })
    .await;
    let green = id_of(&obj);
    assert_ne!(green, blue);
    wait_current(ns, "workspace/shop").await;
    support::wait_for("domain routes to the new workspace", TIMEOUT, || async {
        env.sim.domain(&domain).unwrap().workspaces.get("/") == Some(&vec![green])
    })
    .await;
    assert!(
        env.sim.workspace(blue).is_none(),
        "old workspace {blue} still exists"
    );
    let events = events(ns).await;
    assert!(
        events.contains("Switched") && events.contains("Retired"),
        "missing blue/green Events"
    );
}

/// Steady state for 100 Workspaces: platform calls per poll interval, against the one GET per
/// object a naive operator would send. Prints the figure; fails below a 10x saving.
#[tokio::test]
async fn steady_state_calls_per_poll_for_100_workspaces() {
    const N: usize = 100;
    let env = setup("cs-poll").await;
    let ns = env.ns.as_str();
    // A budget high enough that creating 100 workspaces is not what this test measures.
    apply(ns, &format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cs}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: cs-token, key: token}}}}\n  defaults: {{teamId: 1}}\n  rateLimit: {{requestsPerMinute: 20000, burst: 200}}\n",
        env._server.base_url()
    ))
    .await;
    wait_current(ns, "provider/cs").await;
    let manifests: Vec<String> = (0..N)
        .map(|i| {
            workspace(
                &format!("w{i:03}"),
                "  pipeline: {prepare: false, run: Running}\n",
            )
        })
        .collect();
    apply(ns, &manifests.join("---\n")).await;
    support::wait_for("100 Workspaces Ready", Duration::from_secs(240), || async {
        let out = support::cluster()
            .await
            .kubectl_ok(
                &[
                    "get",
                    "-n",
                    ns,
                    "workspaces",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                ],
                None,
            )
            .await;
        out.split_whitespace().filter(|s| *s == "True").count() == N
    })
    .await;
    assert_eq!(
        env.sim.workspaces().len(),
        N,
        "duplicates or leaks at the simulator"
    );

    // The operator polls every 5 s (flag); measure three poll intervals.
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.sim.control().reset_stats();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let stats = env.sim.control().stats();
    let per_poll = stats.requests_total as f64 / 3.0;
    let naive = N as f64;
    println!(
        "steady state, {N} Codesphere workspaces: {per_poll:.1} calls per poll interval vs {naive:.0} for one GET per object ({:.1}x fewer); by route: {:?}",
        naive / per_poll.max(0.1),
        stats.requests_by_route
    );
    assert!(
        per_poll * 10.0 <= naive,
        "{per_poll} calls per poll is not 10x below {naive}"
    );
}

/// The operator really dies (abort) right after writing the pending marker, and right after
/// the create answered but before the id was saved; a restarted operator never creates twice.
#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the crash points: cargo test --features failpoints"
)]
async fn a_crash_around_create_never_duplicates() {
    let env = setup("cs-crash").await;
    let ns = env.ns.as_str();
    let cluster = support::cluster().await;
    assert!(env.operator.terminate().await);
    for (point, name) in [
        ("after-create-pending", "early"),
        ("before-save-id", "late"),
    ] {
        let mut crashing =
            support::Operator::start_with_env(cluster, ns, &[], &[("BOSUN_FAILPOINTS", point)])
                .await;
        apply(ns, &workspace(name, "")).await;
        assert!(
            crashing.exited_within(TIMEOUT).await,
            "failpoint {point} was never hit"
        );
        let obj = get_json(ns, &format!("workspace/{name}")).await;
        assert!(
            obj["metadata"]["annotations"]
                .get("bosun.dev/create-pending")
                .is_some(),
            "{point}: no marker"
        );
        let restarted = support::Operator::start(cluster, ns, &[]).await;
        let obj = wait_current(ns, &format!("workspace/{name}")).await;
        assert_eq!(
            env.sim.count_workspaces_named(&format!("{ns}-{name}")),
            1,
            "{point}: duplicate or missing workspace"
        );
        assert!(obj["metadata"]["annotations"]
            .get("bosun.dev/create-pending")
            .is_none());
        assert!(restarted.terminate().await);
    }
}

/// A Ready workspace's deep check reads its pipeline without first asking whether it runs;
/// one stopped at the platform is still noticed (the refused read leads to the running check)
/// and reported as `Starting`, and is Ready again once it runs.
#[tokio::test]
async fn a_workspace_stopped_at_the_platform_is_noticed_without_a_status_read_per_check() {
    let env = setup("cs-stopped").await;
    let ns = env.ns.as_str();
    apply(ns, &workspace("shop", "")).await;
    let id = id_of(&wait_current(ns, "workspace/shop").await);
    let request = |token: &'static str| async move {
        annotate(
            ns,
            "workspace/shop",
            &format!("bosun.dev/reconcile-requested-at={token}"),
        )
        .await;
        wait_until(ns, "workspace/shop", "request handled", |o| {
            o["status"]["lastHandledReconcileAt"] == token
        })
        .await
    };

    env.sim.control().reset_stats();
    request("deep-1").await;
    let stats = env.sim.control().stats();
    let status_reads = stats.requests_for("GET", "/api/workspaces/{workspaceId}/status");
    let stage_reads = stats.requests_for("GET", "/api/workspaces/{workspaceId}/pipeline/{stage}");
    assert_eq!(status_reads, 0, "{stats:#?}");
    assert!(
        stage_reads >= 1,
        "the deep check read the run stage: {stats:#?}"
    );

    assert!(env.sim.set_workspace_running(id, false));
    let obj = request("deep-2").await;
    let ready = condition(&obj, "Ready").cloned().unwrap_or_default();
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "Starting", "{ready}");

    assert!(env.sim.set_workspace_running(id, true));
    wait_current(ns, "workspace/shop").await;
}
