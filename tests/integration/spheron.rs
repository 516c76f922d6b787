//! Spheron: the real control plane, the real `bosun run` binary and the Spheron simulator.

use super::{apply, bosun_cluster, condition, events, support, wait_until};
use bosun::platform::spheron::sim::{
    router, Ending, SpheronSim, CDN_CNAME, DEFAULT_ORGANIZATION_ID,
};
use bosun::sim::{bind, SimConfig, SimServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const START: &str = "/v1/deployment";
const REDEPLOY: &str = "/v1/deployment/{deployment_id}/redeploy";
const CANCEL: &str = "/v1/deployment/{deployment_id}/cancel";
const UPDATE: &str = "/v1/compute-instance/{instance_id}/update";

struct Env {
    ns: String,
    sim: SpheronSim,
    server: SimServer,
    _operator: support::Operator,
}

/// The Secret and Provider `sp` for a token, with the simulator's organization as default.
fn provider(name: &str, token: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-token}}\nstringData: {{token: {token}}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: {name}}}\nspec:\n  type: spheron\n  endpoint: {endpoint}\n  \
         credentials: {{secretRef: {{name: {name}-token, key: token}}}}\n  defaults: {{organizationId: '{DEFAULT_ORGANIZATION_ID}'}}\n"
    )
}

/// A namespace with a Spheron Provider `sp` and a running operator.
async fn setup(prefix: &str) -> Env {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace(prefix).await.name;
    let sim = SpheronSim::new(&SimConfig::default());
    sim.set_step_time(Duration::from_millis(200));
    sim.set_compute_step_time(Duration::from_millis(200));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    apply(&ns, &provider("sp", "sim-token", &server.base_url())).await;
    let operator = support::Operator::start(cluster, &ns, &[]).await;
    Env {
        ns,
        sim,
        server,
        _operator: operator,
    }
}

fn site(name: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: sp}}\n  \
         source: {{repository: 'https://github.com/acme/{name}.git', {source}}}\n  spheron: {{site: {{framework: static}}}}\n{extra}"
    )
}

fn compute(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: sp}}\n  \
         source: {{repository: 'https://github.com/acme/{name}.git', branch: main}}\n  replicas: {replicas}\n  \
         env:\n  - {{name: MODE, value: prod}}\n  \
         spheron: {{compute: {{image: 'nginx:1.27', machine: Ventus Nano 1, region: us-east}}}}\n"
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
        let generation = &o["metadata"]["generation"];
        condition(o, "Stalled")
            .is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation)
    })
    .await;
    condition(&obj, "Stalled").cloned().unwrap_or_default()
}

fn id_of(obj: &Value) -> String {
    obj["status"]["externalId"]
        .as_str()
        .expect("status.externalId")
        .to_string()
}

async fn kubectl(args: &[&str]) -> String {
    support::cluster().await.kubectl_ok(args, None).await
}

/// A call to the simulator's API with the default token, as a person's script would make.
async fn call(
    server: &SimServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url()))
        .bearer_auth("sim-token")
        .header("accept", "application/json");
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.expect("simulator answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Changes an instance's services through the API, behind bosun's back: the full list of
/// what runs, edited by `edit`.
async fn update_services(server: &SimServer, instance: &str, edit: impl Fn(&mut Vec<Value>)) {
    let got = call(
        server,
        reqwest::Method::GET,
        &format!("/v1/compute-instance/{instance}"),
        None,
    )
    .await;
    let active = got["instance"]["activeDeployment"]
        .as_str()
        .expect("active deployment")
        .to_string();
    let dep = call(
        server,
        reqwest::Method::GET,
        &format!("/v1/compute-instance/deployment/{active}"),
        None,
    )
    .await;
    let mut services: Vec<Value> = dep["deployment"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            json!({"name": s["name"], "image": s["image"], "tag": s["tag"],
                "serviceCount": s["serviceCount"], "ports": s["ports"], "env": s["env"],
                "akashMachineImageName": s["agreedMachineImage"]["machineType"]})
        })
        .collect();
    edit(&mut services);
    call(
        server,
        reqwest::Method::PATCH,
        &format!("/v1/compute-instance/{instance}/update"),
        Some(
            json!({"services": services, "organizationId": DEFAULT_ORGANIZATION_ID,
            "uniqueTopicId": "by-hand"}),
        ),
    )
    .await;
}

#[tokio::test]
async fn site_deploys_redeploys_stalls_on_failures_and_cancels_on_delete() {
    let env = setup("sp-site").await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let stats = || sim.control().stats();
    let mode = "  env:\n  - {name: MODE, value: prod}\n";
    let started = Instant::now();

    // A site: the first deployment creates the project; Ready once it is Deployed, with the
    // deployment in status.operation and the URL and commit it serves.
    apply(ns, &site("shop", "branch: main", mode)).await;
    let obj = wait_ready(ns, "workspace/shop").await;
    let project = id_of(&obj);
    assert_eq!(sim.project_ids(), vec![project.clone()]);
    let op = &obj["status"]["operation"];
    assert_eq!(op["kind"], "deploy", "{op}");
    assert_eq!(op["state"], "Deployed", "{op}");
    let first = op["id"].as_str().expect("deployment id").to_string();
    assert_eq!(sim.deployment_status(&first), Some("Deployed"));
    assert!(
        obj["status"]["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://"),
        "{obj}"
    );
    assert_eq!(
        obj["status"]["deployedRevision"].as_str().map(str::len),
        Some(40)
    );
    assert_eq!(obj["status"]["sourceRef"], "branch:main");
    assert_eq!(obj["status"]["replicas"], 1);
    assert_eq!(stats().requests_for("POST", START), 1);
    eprintln!(
        "spheron site: Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Steady state: a poll costs the shared project listing at most; nothing is read per
    // deployment again.
    let before = stats();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = stats();
    let delta = |method: &str, path: &str| {
        after.requests_for(method, path) - before.requests_for(method, path)
    };
    assert_eq!(
        delta("GET", "/v1/deployment/{deployment_id}"),
        0,
        "{after:?}"
    );
    assert_eq!(
        delta("GET", "/v1/project/{project_id}/deployments"),
        0,
        "{after:?}"
    );
    eprintln!(
        "spheron site steady state: {} calls in 11 s, {} of them project listings",
        after.requests_total - before.requests_total,
        delta("GET", "/v1/organization/{org_id}/projects")
    );

    // A ref change: a new deployment, of the tag.
    apply(ns, &site("shop", "tag: v2", mode)).await;
    let obj = wait_until(ns, "workspace/shop", "tag v2 deployed", |o| {
        o["status"]["sourceRef"] == "tag:v2"
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_ne!(
        obj["status"]["operation"]["id"].as_str(),
        Some(first.as_str())
    );
    assert_eq!(stats().requests_for("POST", START), 2);
    assert_eq!(id_of(&obj), project, "the same project");

    // A requested reconcile of an unchanged spec: a redeploy (same commit, latest variables).
    kubectl(&[
        "annotate",
        "-n",
        ns,
        "workspace/shop",
        "bosun.dev/reconcile-requested-at=again-1",
    ])
    .await;
    wait_until(ns, "workspace/shop", "redeployed", |o| {
        o["status"]["operation"]["kind"] == "redeploy"
            && o["status"]["operation"]["state"] == "Deployed"
            && o["status"]["lastHandledReconcileAt"] == "again-1"
    })
    .await;
    assert_eq!(stats().requests_for("POST", REDEPLOY), 1);
    assert_eq!(stats().requests_for("POST", START), 2);

    // A failed build: Stalled with Spheron's state and reason, and not retried.
    sim.fail_next_deployment(Ending::Failed, "npm ERR! missing script: build");
    apply(ns, &site("shop", "branch: broken", mode)).await;
    let stalled = wait_stalled(ns, "workspace/shop").await;
    assert_eq!(stalled["reason"], "DeployFailed", "{stalled}");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Failed") && message.contains("npm ERR! missing script: build"),
        "{message}"
    );
    let starts = stats().requests_for("POST", START);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        stats().requests_for("POST", START),
        starts,
        "a failed deployment was retried without a change"
    );

    // A build that timed out: Stalled with TimedOut.
    sim.fail_next_deployment(Ending::TimedOut, "the build took longer than 45 minutes");
    apply(ns, &site("shop", "branch: slow", mode)).await;
    let stalled = wait_stalled(ns, "workspace/shop").await;
    assert_eq!(stalled["reason"], "DeployTimedOut", "{stalled}");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("TimedOut") && message.contains("45 minutes"),
        "{message}"
    );

    // Asked again: it deploys and becomes Ready.
    kubectl(&[
        "annotate",
        "-n",
        ns,
        "workspace/shop",
        "bosun.dev/reconcile-requested-at=retry-1",
        "--overwrite",
    ])
    .await;
    let obj = wait_ready(ns, "workspace/shop").await;
    assert_eq!(obj["status"]["sourceRef"], "branch:slow");

    // Deleted while a deployment is in flight: the deployment is canceled, the project archived.
    sim.set_step_time(Duration::from_secs(20));
    apply(ns, &site("shop", "branch: main", mode)).await;
    let obj = wait_until(ns, "workspace/shop", "deploying", |o| {
        matches!(
            o["status"]["operation"]["state"].as_str(),
            Some("PreQueue" | "Queued" | "Pending")
        )
    })
    .await;
    let in_flight = obj["status"]["operation"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    kubectl(&[
        "delete",
        "-n",
        ns,
        "workspace/shop",
        "--wait=true",
        "--timeout=60s",
    ])
    .await;
    assert!(
        matches!(
            sim.deployment_status(&in_flight),
            Some("Killing" | "Canceled")
        ),
        "{:?}",
        sim.deployment_status(&in_flight)
    );
    assert!(stats().requests_for("POST", CANCEL) >= 1);
    let p = call(
        &env.server,
        reqwest::Method::GET,
        &format!("/v1/project/{project}"),
        None,
    )
    .await;
    assert_eq!(p["state"], "ARCHIVED", "{p}");
}

#[tokio::test]
async fn compute_instance_follows_kubectl_scale_heals_drift_and_service_scales() {
    let env = setup("sp-compute").await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    let started = Instant::now();

    apply(ns, &compute("api", 1)).await;
    let obj = wait_ready(ns, "workspace/api").await;
    let instance = id_of(&obj);
    assert_eq!(sim.service_counts(&instance).get("main"), Some(&1));
    assert_eq!(obj["status"]["replicas"], 1);
    assert_eq!(obj["status"]["deployedRevision"], "nginx:1.27");
    assert_eq!(obj["status"]["operation"]["state"], "Deployed");
    eprintln!(
        "spheron compute: Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let before = sim.control().stats();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = sim.control().stats();
    let deployment_reads = |s: &bosun::sim::SimStats| {
        s.requests_for("GET", "/v1/compute-instance/deployment/{deployment_id}")
    };
    assert_eq!(
        deployment_reads(&after),
        deployment_reads(&before),
        "{after:?}"
    );
    eprintln!(
        "spheron compute steady state: {} calls in 11 s",
        after.requests_total - before.requests_total
    );

    // kubectl scale drives spec.replicas through the scale subresource.
    kubectl(&["scale", "-n", ns, "workspace/api", "--replicas=3"]).await;
    let obj = wait_until(ns, "workspace/api", "3 replicas observed", |o| {
        o["status"]["replicas"] == 3
            && condition(o, "Ready").is_some_and(|c| {
                c["status"] == "True" && c["observedGeneration"] == o["metadata"]["generation"]
            })
    })
    .await;
    assert_eq!(sim.service_counts(&instance).get("main"), Some(&3));
    assert_eq!(obj["status"]["operation"]["kind"], "update");

    // Someone scales the main service to 5 through the API: set back to 3, with an Event.
    let updates = sim.control().stats().requests_for("PATCH", UPDATE);
    update_services(&env.server, &instance, |s| s[0]["serviceCount"] = json!(5)).await;
    support::wait_for("drift Event", Duration::from_secs(60), || async {
        events(ns)
            .await
            .contains("spec.replicas was changed at the platform: set back from 5 to 3")
    })
    .await;
    support::wait_for("3 replicas again", Duration::from_secs(60), || async {
        sim.service_counts(&instance).get("main") == Some(&3)
    })
    .await;
    assert!(events(ns).await.contains("DriftCorrected"));
    assert_eq!(
        sim.control().stats().requests_for("PATCH", UPDATE),
        updates + 2,
        "one change, one correction"
    );
    wait_ready(ns, "workspace/api").await;

    // Another service, added at Spheron, is scaled by a ServiceScale; the main one is refused.
    update_services(&env.server, &instance, |s| {
        let mut worker = s[0].clone();
        worker["name"] = json!("worker");
        worker["ports"] = json!([]);
        s.push(worker);
    })
    .await;
    support::wait_for("worker running", Duration::from_secs(30), || async {
        sim.service_counts(&instance).get("worker") == Some(&3)
    })
    .await;
    let scale = |name: &str, service: &str, replicas: u32| {
        format!(
            "apiVersion: bosun.dev/v1alpha1\nkind: ServiceScale\nmetadata: {{name: {name}}}\nspec:\n  workspaceRef: {{name: api}}\n  \
             service: {service}\n  replicas: {replicas}\n"
        )
    };
    apply(ns, &scale("api-worker", "worker", 2)).await;
    apply(ns, &scale("api-main", "main", 2)).await;
    let obj = wait_ready(ns, "servicescale/api-worker").await;
    assert_eq!(obj["status"]["replicas"], 2);
    assert_eq!(sim.service_counts(&instance).get("worker"), Some(&2));
    assert_eq!(
        sim.service_counts(&instance).get("main"),
        Some(&3),
        "the main service is untouched"
    );
    let stalled = wait_stalled(ns, "servicescale/api-main").await;
    assert_eq!(stalled["reason"], "ScaledByWorkspace", "{stalled}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.replicas"),
        "{stalled}"
    );
    // The Workspace keeps the worker as it is.
    wait_ready(ns, "workspace/api").await;
    assert_eq!(sim.service_counts(&instance).get("worker"), Some(&2));

    // Deleting the Workspace closes the instance.
    kubectl(&[
        "delete",
        "-n",
        ns,
        "servicescale/api-worker",
        "servicescale/api-main",
    ])
    .await;
    kubectl(&[
        "delete",
        "-n",
        ns,
        "workspace/api",
        "--wait=true",
        "--timeout=60s",
    ])
    .await;
    let got = call(
        &env.server,
        reqwest::Method::GET,
        &format!("/v1/compute-instance/{instance}"),
        None,
    )
    .await;
    assert_eq!(got["instance"]["state"], "Closed", "{got}");
}

#[tokio::test]
async fn domain_binding_reports_dns_records_and_is_ready_once_verified() {
    let env = setup("sp-domain").await;
    let ns = env.ns.as_str();
    let sim = &env.sim;
    sim.set_dns_delay(None);
    apply(ns, &site("shop", "branch: main", "")).await;
    let project = id_of(&wait_ready(ns, "workspace/shop").await);
    let binding = |routes: &str| {
        format!(
            "apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {{name: shop}}\nspec:\n  providerRef: {{name: sp}}\n  \
             domain: shop.example.com\n  routes:\n{routes}"
        )
    };

    // What a Spheron domain cannot do is refused, naming the field.
    apply(
        ns,
        &binding("  - {path: /api, workspaces: [{name: shop}]}\n"),
    )
    .await;
    let stalled = wait_stalled(ns, "domainbinding/shop").await;
    assert_eq!(stalled["reason"], "UnsupportedByProvider");
    assert!(stalled["message"]
        .as_str()
        .unwrap_or_default()
        .contains("spec.routes"));

    // Added to the project and verification asked for: Pending, with the records to create.
    apply(ns, &binding("  - {path: /, workspaces: [{name: shop}]}\n")).await;
    let obj = wait_until(ns, "domainbinding/shop", "pending verification", |o| {
        o["status"]["verification"]["state"] == "Pending"
            && o["metadata"]["generation"] == o["status"]["observedGeneration"]
    })
    .await;
    let records = &obj["status"]["verification"]["dnsRecords"];
    assert_eq!(
        records,
        &json!([{"type": "CNAME", "name": "shop.example.com", "value": CDN_CNAME}])
    );
    let ready = condition(&obj, "Ready").cloned().unwrap_or_default();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "DomainNotVerified");
    let external = obj["status"]["externalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        external.starts_with(&format!("projects/{project}/domains/")),
        "{external}"
    );

    // The DNS records are in place: verified and Ready.
    sim.set_dns_ready("shop.example.com");
    let obj = wait_ready(ns, "domainbinding/shop").await;
    assert_eq!(obj["status"]["verification"]["state"], "Verified");
    let domains = call(
        &env.server,
        reqwest::Method::GET,
        &format!("/v1/project/{project}/domains"),
        None,
    )
    .await;
    assert_eq!(domains["domains"][0]["verified"], true, "{domains}");

    // The route moves to another site: the domain leaves the first (Spheron keeps names
    // unique) and is added to the second, in one plan.
    apply(ns, &site("blog", "branch: main", "")).await;
    let blog = id_of(&wait_ready(ns, "workspace/blog").await);
    apply(ns, &binding("  - {path: /, workspaces: [{name: blog}]}\n")).await;
    let moved = format!("projects/{blog}/domains/");
    wait_until(ns, "domainbinding/shop", "moved to the second site", |o| {
        o["status"]["externalId"]
            .as_str()
            .is_some_and(|e| e.starts_with(&moved))
            && o["metadata"]["generation"] == o["status"]["observedGeneration"]
    })
    .await;
    let old = call(
        &env.server,
        reqwest::Method::GET,
        &format!("/v1/project/{project}/domains"),
        None,
    )
    .await;
    assert_eq!(old["domains"], json!([]), "{old}");
    let project = blog;

    // Deleting the binding removes the domain.
    kubectl(&[
        "delete",
        "-n",
        ns,
        "domainbinding/shop",
        "--wait=true",
        "--timeout=60s",
    ])
    .await;
    let domains = call(
        &env.server,
        reqwest::Method::GET,
        &format!("/v1/project/{project}/domains"),
        None,
    )
    .await;
    assert_eq!(domains["domains"], json!([]), "{domains}");
}

#[tokio::test]
async fn a_token_of_another_organization_leaves_the_provider_not_ready() {
    let env = setup("sp-provider").await;
    let ns = env.ns.as_str();
    env.sim.add_token("globex-token", "Globex");
    apply(
        ns,
        &provider("other", "globex-token", &env.server.base_url()),
    )
    .await;
    let obj = wait_until(ns, "provider/other", "Ready=False", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "False" && c["reason"] != "")
            && o["status"]["observedGeneration"] == o["metadata"]["generation"]
    })
    .await;
    let ready = condition(&obj, "Ready").cloned().unwrap_or_default();
    assert_eq!(ready["reason"], "PermissionDenied", "{ready}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("another organization") && message.contains(DEFAULT_ORGANIZATION_ID),
        "{message}"
    );
    assert!(
        !message.contains("globex-token"),
        "the token leaked: {message}"
    );
    // The right token is Ready.
    let obj = wait_ready(ns, "provider/sp").await;
    assert!(obj["status"]["identity"]
        .as_str()
        .unwrap_or_default()
        .contains(DEFAULT_ORGANIZATION_ID));
}

/// `examples/spheron` as they are (only the endpoint points at this test's simulator): every
/// object becomes Ready.
#[tokio::test]
async fn the_examples_converge_against_the_simulator() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("sp-examples").await.name;
    let sim = SpheronSim::new(&SimConfig::default());
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let dir = support::repo_root().join("examples/spheron");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/spheron")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("example");
        assert!(text.contains("kind:"), "{}", f.display());
        manifests.push(text.replace("http://127.0.0.1:18083", &server.base_url()));
    }
    apply(&ns, &manifests.join("\n---\n")).await;
    let _operator = support::Operator::start(cluster, &ns, &[]).await;
    wait_ready(&ns, "provider/spheron").await;
    let site = wait_ready(&ns, "workspace/docs").await;
    let api = wait_ready(&ns, "workspace/api").await;
    assert_eq!(api["status"]["replicas"], 2);
    assert_eq!(sim.service_counts(&id_of(&api)).get("main"), Some(&2));
    let domain = wait_ready(&ns, "domainbinding/docs-example-com").await;
    assert_eq!(domain["status"]["verification"]["state"], "Verified");
    assert!(
        domain["status"]["externalId"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("projects/{}/", id_of(&site))),
        "{domain}"
    );
}

/// A site cannot have replicas, and a deployment waiting for authorization says so; once a
/// person authorizes it at Spheron, it goes on to Ready.
#[tokio::test]
async fn site_replicas_are_refused_and_authorization_is_waited_for() {
    let env = setup("sp-gated").await;
    let ns = env.ns.as_str();
    apply(ns, &site("many", "branch: main", "  replicas: 2\n")).await;
    let stalled = wait_stalled(ns, "workspace/many").await;
    assert_eq!(stalled["reason"], "UnsupportedByProvider", "{stalled}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("spec.replicas"),
        "{stalled}"
    );
    assert!(env.sim.project_ids().is_empty(), "nothing was deployed");

    env.sim.require_authorization_next(1);
    apply(ns, &site("gated", "branch: main", "")).await;
    let obj = wait_until(ns, "workspace/gated", "waiting for authorization", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "AuthorizationNeeded")
    })
    .await;
    let ready = condition(&obj, "Ready").cloned().unwrap_or_default();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("authorize it in the Spheron dashboard"),
        "{ready}"
    );
    assert_eq!(obj["status"]["operation"]["state"], "AuthorizationNeeded");
    assert_eq!(
        condition(&obj, "Stalled").map(|c| c["status"].clone()),
        Some(json!("False"))
    );
    let id = obj["status"]["operation"]["id"]
        .as_str()
        .expect("deployment id")
        .to_string();
    call(
        &env.server,
        reqwest::Method::POST,
        &format!("/v1/deployment/{id}/authorize"),
        None,
    )
    .await;
    let obj = wait_ready(ns, "workspace/gated").await;
    assert_eq!(
        obj["status"]["operation"]["id"],
        id.as_str(),
        "the same deployment"
    );
    assert!(events(ns).await.contains("waits for authorization"));
}
