//! `bosun plan -f` against the real control plane and the Codesphere simulator: the same
//! reconcile the controller runs, with every write held back. Checked: the plan before
//! anything exists, after the operator made it so (no changes), for an edited manifest, and
//! for drift made at the platform; and that no plan ever wrote to the platform.

use super::{apply, bosun_cluster, condition, support, wait_until};
use bosun::platform::codesphere::sim::{router, CodesphereSim};
use bosun::sim::{bind, SimConfig, SimServer};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Runs `bosun plan -o json --exit-code` as a user would; returns the exit code and the plan.
async fn plan(kubeconfig: &Path, ns: &str, file: &Path) -> (i32, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"))
        .args(["plan", "-f"])
        .arg(file)
        .args(["-n", ns, "-o", "json", "--exit-code"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run bosun plan");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plan: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "bosun plan printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), plan)
}

fn object<'a>(plan: &'a Value, kind: &str, name: &str) -> &'a Value {
    plan["objects"]
        .as_array()
        .and_then(|objects| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["name"] == name)
        })
        .unwrap_or_else(|| panic!("{kind} {name} missing from the plan:\n{plan:#}"))
}

/// Requests that change something, as the simulator counted them.
fn writes(sim: &CodesphereSim) -> u64 {
    sim.control()
        .stats()
        .requests_by_route
        .iter()
        .filter(|(route, _)| !route.starts_with("GET "))
        .map(|(_, n)| n)
        .sum()
}

fn examples_for(server: &SimServer) -> String {
    let dir = support::repo_root().join("examples/codesphere");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/codesphere")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .expect("example")
                .replace("http://127.0.0.1:18081", &server.base_url())
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[tokio::test]
async fn plan_shows_creates_no_changes_edits_and_drift_without_writing() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("plan").await.name;
    let sim = CodesphereSim::new(&SimConfig::default());
    sim.set_start_delay(Duration::from_millis(300));
    sim.set_stage_duration(Duration::from_millis(300));
    sim.set_run_delay(Duration::from_millis(300));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let manifests = examples_for(&server);
    let dir = std::env::temp_dir().join(format!("bosun-plan-{ns}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("codesphere.yaml");
    std::fs::write(&file, &manifests).expect("write manifests");
    let kubeconfig = cluster.kubeconfig();

    // Nothing applied yet: the Workspace would be created; what depends on it waits.
    let (code, before) = plan(kubeconfig, &ns, &file).await;
    assert_eq!(code, 2, "changes → exit code 2:\n{before:#}");
    let ws = object(&before, "Workspace", "shop");
    assert_eq!(ws["outcome"], "change", "{ws:#}");
    // The whole rollout is one plan: create, wait for it to run, then prepare and run.
    let steps = ws["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["action"], "create", "{ws:#}");
    assert_eq!(steps[0]["object"]["kind"], "workspace");
    assert_eq!(steps[0]["object"]["name"], format!("{ns}-shop"));
    let summaries: Vec<&str> = steps.iter().filter_map(|s| s["summary"].as_str()).collect();
    assert!(
        summaries.iter().any(|s| s.contains("prepare"))
            && summaries.iter().any(|s| s.contains("run stage")),
        "{summaries:?}"
    );
    assert!(
        steps[1..].iter().all(|s| s["object"]["idFromStep"] == 1),
        "later steps act on what step 1 creates: {ws:#}"
    );
    assert!(
        !ws.to_string().contains("not-a-real-key"),
        "a Secret-backed value was shown: {ws:#}"
    );
    assert_eq!(
        object(&before, "Provider", "codesphere")["outcome"],
        "unchanged"
    );
    for (kind, name) in [
        ("ServiceScale", "shop-web"),
        ("DomainBinding", "shop-example-com"),
    ] {
        let o = object(&before, kind, name);
        assert_eq!(o["outcome"], "waiting", "{o:#}");
        assert_eq!(o["reason"], "WorkspaceNotCreated", "{o:#}");
    }
    assert!(sim.workspaces().is_empty(), "a plan created something");
    assert_eq!(writes(&sim), 0, "a plan wrote to the platform");

    // Applied and reconciled: the same files plan to nothing.
    apply(&ns, &manifests).await;
    let operator = support::Operator::start(cluster, &ns, &[]).await;
    let live = wait_until(&ns, "workspace/shop", "Ready", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let id: u64 = live["status"]["externalId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("externalId");
    wait_until(&ns, "servicescale/shop-web", "Ready", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    wait_until(&ns, "domainbinding/shop-example-com", "created", |o| {
        o["status"]["externalId"].is_string()
    })
    .await;
    // Until its DNS is in place, bosun would keep asking Codesphere to verify the domain.
    sim.verify_domain_dns("shop.example.com");
    wait_until(&ns, "domainbinding/shop-example-com", "Ready", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert!(operator.terminate().await, "operator stopped");
    let written = writes(&sim);

    let (code, settled) = plan(kubeconfig, &ns, &file).await;
    for (kind, name) in [
        ("Provider", "codesphere"),
        ("Workspace", "shop"),
        ("ServiceScale", "shop-web"),
        ("DomainBinding", "shop-example-com"),
    ] {
        let o = object(&settled, kind, name);
        assert_eq!(o["outcome"], "unchanged", "{o:#}");
        assert!(o["steps"].as_array().is_none_or(|s| s.is_empty()), "{o:#}");
    }
    assert_eq!(code, 0, "no changes → exit code 0:\n{settled:#}");

    // An edited manifest: the update the controller would send, and nothing sent.
    let edited = dir.join("edited.yaml");
    std::fs::write(&edited, manifests.replace("replicas: 1", "replicas: 3")).expect("write");
    let (code, change) = plan(kubeconfig, &ns, &edited).await;
    assert_eq!(code, 2);
    let ws = object(&change, "Workspace", "shop");
    assert_eq!(ws["outcome"], "change", "{ws:#}");
    let update = &ws["steps"][0];
    assert_eq!(update["action"], "update", "{ws:#}");
    assert_eq!(update["object"]["id"], id.to_string(), "{ws:#}");
    assert_eq!(update["drift"], false, "a spec change is not drift: {ws:#}");
    assert_eq!(
        update["changes"][0],
        serde_json::json!({"field": "spec.replicas", "from": "1", "to": "3"}),
        "{ws:#}"
    );
    assert!(
        ws["events"]
            .as_array()
            .is_none_or(|e| e.iter().all(|e| e["reason"] != "DriftCorrected")),
        "a spec change is not drift: {ws:#}"
    );
    assert_eq!(sim.workspace(id).expect("workspace").replicas, 1);

    // Drift made through the platform's API: the correction, with the Event it would record.
    let r = reqwest::Client::new()
        .patch(format!("{}/api/workspaces/{id}", server.base_url()))
        .bearer_auth("sim-token")
        .json(&serde_json::json!({"replicas": 2}))
        .send()
        .await
        .expect("patch at the simulator");
    assert!(r.status().is_success());
    let written = written + 1;
    let (code, drift) = plan(kubeconfig, &ns, &file).await;
    assert_eq!(code, 2);
    let ws = object(&drift, "Workspace", "shop");
    let correction = &ws["steps"][0];
    assert_eq!(correction["drift"], true, "{ws:#}");
    assert_eq!(
        correction["changes"][0],
        serde_json::json!({"field": "spec.replicas", "from": "2", "to": "1"}),
        "{ws:#}"
    );
    assert_eq!(sim.workspace(id).expect("workspace").replicas, 2);
    assert_eq!(writes(&sim), written, "a plan wrote to the platform");
}

/// A credential the platform refuses makes the plan fail with the reason, exit code 1.
#[tokio::test]
async fn plan_reports_a_refused_credential() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("plan-bad").await.name;
    let sim = CodesphereSim::new(&SimConfig::default());
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let manifests = examples_for(&server).replace("token: sim-token", "token: wrong-token");
    let file = std::env::temp_dir().join(format!("bosun-plan-{ns}.yaml"));
    std::fs::write(&file, manifests).expect("write manifests");
    let (code, plan) = plan(cluster.kubeconfig(), &ns, &file).await;
    assert_eq!(code, 1, "{plan:#}");
    let provider = object(&plan, "Provider", "codesphere");
    assert_eq!(provider["outcome"], "failed");
    assert_eq!(provider["reason"], "InvalidCredentials", "{provider:#}");
    assert!(
        !plan.to_string().contains("wrong-token"),
        "the credential was shown"
    );
    assert_eq!(writes(&sim), 0);
}
