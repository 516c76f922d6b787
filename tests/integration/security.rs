//! Credentials never leave their Secrets: a scenario on two platforms (Ready, a Secret-backed
//! env var, a rotation to a refused token), then every operator log line, Event, status and
//! metric is scanned for the credentials and Secret values used.

use super::{apply, bosun_cluster, condition, events, support, wait_until};
use bosun::platform::codesphere::sim::{router as codesphere_router, CodesphereSim};
use bosun::platform::devopness::sim::{router as devopness_router, DevopnessSim};
use bosun::sim::{bind, SimConfig};
use std::time::Duration;

const CODESPHERE_TOKEN: &str = "cs-tok-7c1e5a9d-do-not-leak";
const DEVOPNESS_TOKEN: &str = "dv-tok-41b2f0e8-do-not-leak";
const REFUSED_TOKEN: &str = "refused-tok-55aa01-do-not-leak";
const ENV_SECRET: &str = "env-secret-3b9f62-do-not-leak";

#[tokio::test]
async fn no_credential_reaches_logs_events_status_or_metrics() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("secrets").await.name;
    let ns = ns.as_str();
    let config = |token: &str| SimConfig {
        token: token.to_string(),
        ..SimConfig::default()
    };
    let cs = CodesphereSim::new(&config(CODESPHERE_TOKEN));
    cs.set_start_delay(Duration::from_millis(200));
    cs.set_stage_duration(Duration::from_millis(200));
    cs.set_run_delay(Duration::from_millis(200));
    let cs_server = bind(
        "127.0.0.1:0".parse().unwrap(),
        codesphere_router(cs.clone()),
    )
    .await
    .expect("codesphere simulator");
    let dv = DevopnessSim::new(&config(DEVOPNESS_TOKEN));
    dv.set_step_time(Duration::from_millis(200));
    let dv_server = bind("127.0.0.1:0".parse().unwrap(), devopness_router(dv.clone()))
        .await
        .expect("devopness simulator");
    apply(ns, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cs-token}}\nstringData: {{token: {CODESPHERE_TOKEN}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: dv-token}}\nstringData: {{token: {DEVOPNESS_TOKEN}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: app}}\nstringData: {{key: {ENV_SECRET}}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cs}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: cs-token, key: token}}}}\n  defaults: {{teamId: 1}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: dv}}\nspec:\n  type: devopness\n  endpoint: {}\n  \
         credentials: {{secretRef: {{name: dv-token, key: token}}}}\n  defaults: {{projectId: 1, environmentId: 1}}\n",
        cs_server.base_url(),
        dv_server.base_url()
    ))
    .await;
    let env = "  env:\n  - name: API_KEY\n    valueFrom: {secretKeyRef: {name: app, key: key}}\n";
    apply(ns, &format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: on-cs}}\nspec:\n  providerRef: {{name: cs}}\n  \
         source: {{repository: 'https://git.example.com/shop.git', branch: main}}\n{env}---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: on-dv}}\nspec:\n  providerRef: {{name: dv}}\n  \
         source: {{repository: 'https://github.com/acme/shop.git', branch: main}}\n  devopness: {{credentialId: 1}}\n{env}"
    ))
    .await;
    let operator = support::Operator::start(cluster, ns, &[]).await;
    for what in ["workspace/on-cs", "workspace/on-dv"] {
        wait_until(ns, what, "Ready", |o| {
            condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    }
    // The Secret-backed value reached the platforms (so it was really in play).
    assert!(dv.variable_values().iter().any(|v| v == ENV_SECRET));

    // A rotation to a token the platform refuses: a clear condition, still no token anywhere.
    apply(ns, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cs-token}}\nstringData: {{token: {REFUSED_TOKEN}}}\n"
    ))
    .await;
    wait_until(ns, "provider/cs", "refused", |o| {
        condition(o, "Ready")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "InvalidCredentials")
    })
    .await;

    let (_, metrics) = operator.get("/metrics").await;
    let statuses = cluster
        .kubectl_ok(
            &[
                "get",
                "-n",
                ns,
                "providers,workspaces,servicescales,domainbindings",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    let events = events(ns).await;
    let logs = operator.logs();
    // The log saw the whole scenario (so scanning it means something).
    for seen in [
        "CredentialsVerified",
        "on-cs",
        "on-dv",
        "InvalidCredentials",
    ] {
        assert!(
            logs.contains(seen),
            "{seen} is not in the operator log:\n{logs}"
        );
    }
    for (place, text) in [
        ("operator log", &logs),
        ("Events", &events),
        ("statuses", &statuses),
        ("metrics", &metrics),
    ] {
        for secret in [CODESPHERE_TOKEN, DEVOPNESS_TOKEN, REFUSED_TOKEN, ENV_SECRET] {
            assert!(!text.contains(secret), "{secret} found in the {place}");
        }
    }
}

/// The scan every operator runs when a test ends (`support::Operator`'s `Drop`) finds what it
/// looks for: a Secret whose value shows up in a status is reported, naming where.
#[tokio::test]
async fn the_leak_scan_every_suite_runs_finds_a_secret_value_in_status() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("leak-scan").await.name;
    let ns = ns.as_str();
    let cs = CodesphereSim::new(&SimConfig::default());
    let server = bind(
        "127.0.0.1:0".parse().unwrap(),
        codesphere_router(cs.clone()),
    )
    .await
    .expect("codesphere simulator");
    apply(ns, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cs-token}}\nstringData: {{token: sim-token}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cs}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: cs-token, key: token}}}}\n  defaults: {{teamId: 1}}\n",
        server.base_url()
    ))
    .await;
    let operator = support::Operator::start(cluster, ns, &[]).await;
    let provider = wait_until(ns, "provider/cs", "Ready", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let identity = provider["status"]["identity"].as_str().expect("identity");
    assert_eq!(
        support::credential_leak(cluster.kubeconfig(), ns, &operator.log),
        None,
        "nothing secret shows yet"
    );
    // A decoy: a "Secret" holding text that status shows anyway.
    apply(ns, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: decoy}}\nstringData: {{value: '{identity}'}}\n"
    ))
    .await;
    let found = support::credential_leak(cluster.kubeconfig(), ns, &operator.log)
        .expect("the decoy is found");
    // The log says whom the credential belongs to too, and it is scanned first.
    assert!(
        found.contains("operator log") || found.contains("status of Provider cs"),
        "{found}"
    );
    cluster
        .kubectl_ok(&["delete", "secret", "-n", ns, "decoy"], None)
        .await;
}
