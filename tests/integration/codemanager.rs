//! Puppet Enterprise Code Manager end to end: the real control plane, the real `bosun run`
//! binary and the Code Manager simulator over HTTPS with its own CA.

use super::{apply, bosun_cluster, condition, get_json, support, wait_until};
use bosun::platform::codemanager::sim::{serve, unrelated_ca_pem, CodeManagerSim};
use bosun::sim::{SimConfig, SimServer};
use serde_json::Value;
use std::time::Duration;

async fn wait_reason(ns: &str, what: &str, type_: &str, status: &str, reason: &str) -> Value {
    wait_until(ns, what, &format!("{type_}={status}/{reason}"), |o| {
        condition(o, type_).is_some_and(|c| c["status"] == status && c["reason"] == reason)
    })
    .await
}

struct Env {
    ns: String,
    sim: CodeManagerSim,
    server: SimServer,
    _operator: support::Operator,
}

fn ca_secret(pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: cm-ca}}\nstringData:\n  ca.crt: |\n{indented}")
}

fn provider(endpoint: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cm}}\nspec:\n  type: puppetCodeManager\n  endpoint: {endpoint}/code-manager\n  \
         credentials: {{secretRef: {{name: cm-token, key: token}}}}\n  tls: {{caSecretRef: {{name: cm-ca, key: ca.crt}}}}\n"
    )
}

fn token_secret(value: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: cm-token}}\nstringData:\n  token: '{value}'\n")
}

async fn setup(prefix: &str, token: &str, ca: Option<String>) -> Env {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace(prefix).await.name;
    let sim = CodeManagerSim::new(&SimConfig::default()).expect("simulator certificates");
    sim.set_step_duration(Duration::from_millis(200));
    let server = serve("127.0.0.1:0".parse().unwrap(), &sim)
        .await
        .expect("simulator");
    apply(&ns, &ca_secret(&ca.unwrap_or_else(|| sim.ca_pem()))).await;
    // The simulator serves RBAC next to Code Manager (PE serves it on port 4433).
    let token = token.replace("RBAC_ENDPOINT", &format!("{}/rbac-api", server.base_url()));
    apply(&ns, &token_secret(&token)).await;
    apply(&ns, &provider(&server.base_url())).await;
    let operator = support::Operator::start(cluster, &ns, &[]).await;
    Env {
        ns,
        sim,
        server,
        _operator: operator,
    }
}

fn workspace(name: &str, branch: &str, extra: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: cm}}\n  \
         source: {{repository: 'https://git.example.com/control-repo.git', branch: {branch}}}\n{extra}"
    )
}

#[tokio::test]
async fn environment_deployed_then_a_bad_branch_stalls() {
    let env = setup("cm-deploy", "sim-token", None).await;
    let ns = env.ns.as_str();
    let provider = wait_reason(ns, "provider/cm", "Ready", "True", "CredentialsVerified").await;
    assert!(
        provider["status"]["identity"]
            .as_str()
            .unwrap_or_default()
            .contains("environments"),
        "{:#}",
        provider["status"]
    );

    apply(ns, &workspace("staging", "staging", "")).await;
    let obj = wait_reason(ns, "workspace/staging", "Ready", "True", "Deployed").await;
    let signature = env
        .sim
        .deployed("staging")
        .expect("deployed at the simulator");
    assert_eq!(
        obj["status"]["deployedRevision"],
        Value::from(signature.clone())
    );
    assert_eq!(condition(&obj, "Reconciling").unwrap()["status"], "False");
    let stages = obj["status"]["stages"].to_string();
    assert!(
        stages.contains("file-sync-storage") && stages.contains("deployed"),
        "{stages}"
    );

    // The deployed commit is checked against spec.source.commit when the environment is named.
    let pinned = workspace(
        "pinned",
        "staging",
        "  puppetCodeManager: {environment: staging}\n",
    )
    .replace("branch: staging", "commit: deadbee");
    apply(ns, &pinned).await;
    let obj = wait_reason(
        ns,
        "workspace/pinned",
        "Stalled",
        "True",
        "RevisionMismatch",
    )
    .await;
    assert!(condition(&obj, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .contains(&signature));

    // A branch that does not exist: Stalled with the platform's kind and message, no retry.
    apply(ns, &workspace("ghost", "feature/ghost", "")).await;
    let obj = wait_reason(ns, "workspace/ghost", "Stalled", "True", "DeployFailed").await;
    let msg = condition(&obj, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("puppetlabs.code-manager/deploy-failure")
            && msg.contains("cannot be found in any source"),
        "{msg}"
    );
    assert!(
        msg.contains("feature_ghost"),
        "the corrected environment name is reported: {msg}"
    );
    let ghost_deploys = || {
        env.sim
            .deploy_requests()
            .iter()
            .filter(|r| r.to_string().contains("feature_ghost"))
            .count()
    };
    assert_eq!(ghost_deploys(), 1);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        ghost_deploys(),
        1,
        "a failed deploy was retried without a change"
    );

    // Replicas and the other kinds are answered, not ignored.
    apply(ns, &workspace("scaled", "production", "  replicas: 2\n")).await;
    let obj = wait_reason(
        ns,
        "workspace/scaled",
        "Stalled",
        "True",
        "UnsupportedByProvider",
    )
    .await;
    assert!(condition(&obj, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .starts_with("spec.replicas"));
    apply(ns, "apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {name: d}\nspec: {providerRef: {name: cm}, domain: puppet.example.com}\n").await;
    wait_reason(
        ns,
        "domainbinding/d",
        "Stalled",
        "True",
        "UnsupportedByProvider",
    )
    .await;
    drop(env.server);
}

#[tokio::test]
async fn an_expired_token_is_reported_and_not_retried_in_a_loop() {
    let env = setup("cm-expired", "sim-token", None).await;
    let ns = env.ns.as_str();
    wait_reason(ns, "provider/cm", "Ready", "True", "CredentialsVerified").await;
    env.sim.expire_token("sim-token");
    support::cluster()
        .await
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "provider/cm",
                "bosun.dev/reconcile-requested-at=now",
            ],
            None,
        )
        .await;
    let obj = wait_reason(ns, "provider/cm", "Stalled", "True", "InvalidCredentials").await;
    let msg = condition(&obj, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("expired"), "{msg}");
    let before = env.sim.control().stats().requests_total;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = env.sim.control().stats().requests_total - before;
    assert!(
        during <= 2,
        "{during} requests in 6 s with an expired token"
    );
}

#[tokio::test]
async fn a_ca_that_does_not_match_is_a_tls_error_and_sends_nothing_until_the_ca_is_fixed() {
    let env = setup("cm-tls", "sim-token", Some(unrelated_ca_pem())).await;
    let ns = env.ns.as_str();
    let obj = wait_reason(ns, "provider/cm", "Ready", "False", "TLSError").await;
    let msg = condition(&obj, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.to_ascii_lowercase().contains("certificate") || msg.contains("TLS"),
        "{msg}"
    );
    assert_eq!(
        env.sim.control().stats().requests_total,
        0,
        "a request reached the server through an untrusted TLS session"
    );

    // The right CA in the Secret makes the Provider Ready (it watches its CA Secret too).
    apply(ns, &ca_secret(&env.sim.ca_pem())).await;
    wait_reason(ns, "provider/cm", "Ready", "True", "CredentialsVerified").await;
}

#[tokio::test]
async fn a_login_mints_tokens_and_refreshes_them_after_expiry() {
    let login = r#"{"login": "deployer", "password": "sim-password", "lifetime": "1h", "rbacEndpoint": "RBAC_ENDPOINT"}"#;
    let env = setup("cm-login", login, None).await;
    let ns = env.ns.as_str();
    wait_reason(ns, "provider/cm", "Ready", "True", "CredentialsVerified").await;
    assert_eq!(env.sim.minted_tokens(), 1);
    apply(ns, &workspace("production", "production", "")).await;
    wait_reason(ns, "workspace/production", "Ready", "True", "Deployed").await;
    // The minted token expires at the platform; the next call refreshes it and goes through.
    assert!(env.sim.expire_minted_tokens() >= 1);
    env.sim.push_branch("production");
    apply(
        ns,
        &workspace(
            "production",
            "production",
            "  puppetCodeManager: {deployModules: false}\n",
        ),
    )
    .await;
    wait_until(ns, "workspace/production", "deployed again", |o| {
        o["status"]["observedGeneration"] == 2
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert!(env.sim.minted_tokens() >= 2, "no new token was minted");
    let obj = get_json(ns, "workspace/production").await;
    assert_eq!(
        obj["status"]["deployedRevision"],
        Value::from(env.sim.deployed("production").unwrap())
    );
}
