//! Devopness: the real control plane, the real `bosun run` binary and the Devopness simulator.

use super::{apply, bosun_cluster, condition, support, wait_until};
use bosun::platform::devopness::sim::{router, DevopnessSim};
use bosun::sim::{bind, SimConfig};
use serde_json::Value;
use std::time::Duration;

fn workspace(name: &str, branch: &str, extra: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: dv}}\n  \
         source: {{repository: 'https://github.com/acme/shop.git', branch: {branch}}}\n  devopness: {{credentialId: 1}}\n{extra}"
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

#[tokio::test]
async fn application_deploys_redeploys_and_reports_failures() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("dv").await.name;
    let ns = ns.as_str();
    let sim = DevopnessSim::new(&SimConfig::default());
    sim.set_step_time(Duration::from_millis(200));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    apply(ns, "apiVersion: v1\nkind: Secret\nmetadata: {name: dv-token}\nstringData: {token: sim-token}\n").await;
    apply(ns, &format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: dv}}\nspec:\n  type: devopness\n  endpoint: {}\n  \
         credentials: {{secretRef: {{name: dv-token, key: token}}}}\n  defaults: {{projectId: 1, environmentId: 1}}\n",
        server.base_url()
    ))
    .await;
    let _operator = support::Operator::start(cluster, ns, &[]).await;

    // create → Ready once the deploy action completed.
    apply(
        ns,
        &workspace("shop", "main", "  env:\n  - {name: MODE, value: prod}\n"),
    )
    .await;
    let obj = wait_ready(ns, "workspace/shop").await;
    let id: u64 = obj["status"]["externalId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sim.deployed_ref(id).as_deref(), Some("main"));
    assert_eq!(obj["status"]["deployedRevision"], "main");
    assert_eq!(sim.deploy_count(id), 1);

    // A new ref: exactly one new deployment, Synced.
    apply(
        ns,
        &workspace("shop", "release", "  env:\n  - {name: MODE, value: prod}\n"),
    )
    .await;
    wait_until(ns, "workspace/shop", "release deployed", |o| {
        o["status"]["sourceRef"] == "branch:release"
    })
    .await;
    wait_ready(ns, "workspace/shop").await;
    assert_eq!(sim.deployed_ref(id).as_deref(), Some("release"));
    assert_eq!(sim.deploy_count(id), 2);

    // A failing action: Stalled with the platform's reason, not retried.
    sim.fail_next_deploy(id, "npm install exited with code 1");
    apply(
        ns,
        &workspace("shop", "broken", "  env:\n  - {name: MODE, value: prod}\n"),
    )
    .await;
    let obj = wait_until(ns, "workspace/shop", "Stalled", |o| {
        condition(o, "Stalled").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let stalled = condition(&obj, "Stalled").unwrap();
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
        3,
        "a failed deployment was retried without a change"
    );
}
