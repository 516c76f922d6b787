//! The controller core on a real apiserver, with the real `bosun run` binary and the Codesphere
//! simulator: references named in conditions, credentials verified, Secret rotation, paused,
//! reconcile-requested-at, no status write when nothing changed, probes and metrics.

use super::{bosun_cluster, support};
use bosun::platform::codesphere::sim::{router, CodesphereSim};
use bosun::sim::{bind, SimConfig, SimServer};
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn codesphere_sim() -> (CodesphereSim, SimServer) {
    let sim = CodesphereSim::new(&SimConfig::default());
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("start simulator");
    (sim, server)
}

fn provider(name: &str, endpoint: &str, secret: &str) -> String {
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: {name}}}\nspec:\n  type: codesphere\n  endpoint: {endpoint}\n  credentials: {{secretRef: {{name: {secret}, key: token}}}}\n"
    )
}

fn secret(name: &str, token: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{token: {token}}}\n")
}

use super::{condition, get_json};

/// Waits until condition `type_` has `status` and its reason (and message, if given) match.
async fn wait_condition(
    ns: &str,
    what: &str,
    type_: &str,
    status: &str,
    reason: &str,
    message_part: &str,
) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        last = get_json(ns, what).await;
        if let Some(c) = condition(&last, type_) {
            let msg = c["message"].as_str().unwrap_or_default();
            if c["status"] == status && c["reason"] == reason && msg.contains(message_part) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{what}: {type_} never became {status}/{reason} with {message_part:?}; last status:\n{:#}",
        last["status"]
    );
}

/// kstatus: `Ready=True` means no abnormal-true condition and observedGeneration current.
fn assert_kstatus_current(obj: &Value) {
    let generation = &obj["metadata"]["generation"];
    assert_eq!(
        &obj["status"]["observedGeneration"], generation,
        "observedGeneration lags"
    );
    for t in ["Reconciling", "Stalled"] {
        assert_eq!(
            condition(obj, t).map(|c| c["status"].clone()),
            Some(Value::from("False")),
            "{t} is not False"
        );
    }
    for c in obj["status"]["conditions"].as_array().unwrap() {
        assert_eq!(
            &c["observedGeneration"], generation,
            "condition {} lags",
            c["type"]
        );
    }
}

#[tokio::test]
async fn missing_references_are_named_in_conditions() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("refs").await;
    let ns = ns.name.as_str();
    let operator = support::Operator::start(cluster, ns, &[]).await;

    // A Workspace whose Provider does not exist.
    let ws = "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {name: w}\nspec: {providerRef: {name: nowhere}, source: {repository: r, branch: main}}";
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(ws))
        .await;
    let obj = wait_condition(
        ns,
        "workspace/w",
        "Ready",
        "False",
        "ProviderNotFound",
        &format!("Provider {ns}/nowhere not found"),
    )
    .await;
    // Waiting for a dependency is progress (kstatus InProgress), not a failure.
    assert_eq!(condition(&obj, "Reconciling").unwrap()["status"], "True");
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "False");
    // The finalizer is in place before anything happens at a platform.
    assert_eq!(obj["metadata"]["finalizers"][0], "bosun.dev/cleanup");

    // A Provider whose Secret does not exist, then whose Secret lacks the key.
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&provider("p", "http://127.0.0.1:9/api", "creds")),
        )
        .await;
    wait_condition(
        ns,
        "provider/p",
        "Ready",
        "False",
        "SecretNotFound",
        &format!("Secret {ns}/creds not found"),
    )
    .await;
    let wrong_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {other: x}";
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(wrong_key))
        .await;
    wait_condition(
        ns,
        "provider/p",
        "Ready",
        "False",
        "SecretKeyNotFound",
        &format!("Secret {ns}/creds has no key \"token\""),
    )
    .await;

    // A ServiceScale whose Workspace does not exist.
    let scale = "apiVersion: bosun.dev/v1alpha1\nkind: ServiceScale\nmetadata: {name: s}\nspec: {workspaceRef: {name: ghost}, service: web, replicas: 2}";
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(scale))
        .await;
    wait_condition(
        ns,
        "servicescale/s",
        "Ready",
        "False",
        "WorkspaceNotFound",
        &format!("Workspace {ns}/ghost not found"),
    )
    .await;

    // A Workspace on an existing but unverified Provider waits for it.
    let ws2 = ws.replace("nowhere", "p").replace("name: w}", "name: w2}");
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&ws2))
        .await;
    wait_condition(
        ns,
        "workspace/w2",
        "Ready",
        "False",
        "ProviderNotReady",
        &format!("Provider {ns}/p is not Ready (SecretKeyNotFound"),
    )
    .await;

    // Deleting objects that never reached a platform finishes.
    cluster
        .kubectl_ok(
            &[
                "delete",
                "-n",
                ns,
                "workspace/w",
                "workspace/w2",
                "servicescale/s",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert!(
        operator.terminate().await,
        "the operator did not shut down cleanly"
    );
}

#[tokio::test]
async fn provider_is_ready_only_after_the_platform_accepts_the_credential() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("creds").await;
    let ns = ns.name.as_str();
    let (sim, server) = codesphere_sim().await;
    let endpoint = format!("{}/api", server.base_url());
    let operator = support::Operator::start(cluster, ns, &[]).await;

    // A wrong token: Stalled with the platform's refusal, naming the Secret but not the token.
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&secret("creds", "wrong-token")),
        )
        .await;
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&provider("p", &endpoint, "creds")),
        )
        .await;
    let obj = wait_condition(
        ns,
        "provider/p",
        "Stalled",
        "True",
        "InvalidCredentials",
        &format!("Secret {ns}/creds key \"token\""),
    )
    .await;
    assert_eq!(condition(&obj, "Ready").unwrap()["status"], "False");
    assert!(
        !obj.to_string().contains("wrong-token"),
        "the credential leaked into status"
    );

    // No retry storm: a user-fixable error waits for a change (the poll is 5 s).
    let before = sim.control().stats().requests_total;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = sim.control().stats().requests_total - before;
    assert!(
        during <= 2,
        "{during} requests in 6 s with a refused credential"
    );

    // Rotating the Secret takes effect at once (the Secret watch wakes the Provider).
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&secret("creds", "sim-token")),
        )
        .await;
    let obj = wait_condition(
        ns,
        "provider/p",
        "Ready",
        "True",
        "CredentialsVerified",
        "authenticated as team 1",
    )
    .await;
    assert_kstatus_current(&obj);
    assert!(obj["status"]["identity"]
        .as_str()
        .unwrap()
        .starts_with("team 1"));

    // Events say what happened.
    let events = cluster
        .kubectl_ok(&["get", "events", "-n", ns, "-o", "json"], None)
        .await;
    assert!(
        events.contains("CredentialsVerified"),
        "no CredentialsVerified event"
    );
    assert!(
        events.contains("InvalidCredentials"),
        "no InvalidCredentials event"
    );
    assert!(
        !events.contains("wrong-token") && !events.contains("sim-token"),
        "a credential leaked into an Event"
    );
    assert!(
        !operator.logs().contains("wrong-token") && !operator.logs().contains("sim-token"),
        "a credential leaked into the log"
    );

    // A Workspace on the ready provider gets past every reference (the mapping is the platform's).
    let ws = "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {name: w}\nspec: {providerRef: {name: p}, source: {repository: r, branch: main}, env: [{name: K, valueFrom: {secretKeyRef: {name: app, key: k}}}]}";
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(ws))
        .await;
    wait_condition(
        ns,
        "workspace/w",
        "Ready",
        "False",
        "SecretNotFound",
        &format!("Secret {ns}/app not found"),
    )
    .await;
    drop(server);
}

#[tokio::test]
async fn steering_annotations_and_quiet_status() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("steer").await;
    let ns = ns.name.as_str();
    let (_sim, server) = codesphere_sim().await;
    let endpoint = format!("{}/api", server.base_url());
    let operator = support::Operator::start(cluster, ns, &[]).await;
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&secret("creds", "sim-token")),
        )
        .await;
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&provider("p", &endpoint, "creds")),
        )
        .await;
    let first = wait_condition(ns, "provider/p", "Ready", "True", "CredentialsVerified", "").await;

    // Polls that find nothing new write nothing: resourceVersion and transition times stay.
    cluster
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "provider/p",
                "bosun.dev/poll-interval=5s",
            ],
            None,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = get_json(ns, "provider/p").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = get_json(ns, "provider/p").await;
    assert_eq!(
        settled["metadata"]["resourceVersion"], later["metadata"]["resourceVersion"],
        "status rewritten with nothing changed"
    );
    assert_eq!(
        condition(&first, "Ready").unwrap()["lastTransitionTime"],
        condition(&later, "Ready").unwrap()["lastTransitionTime"]
    );
    let (_, metrics) = operator.get("/metrics").await;
    assert!(
        metrics.contains("bosun_status_writes_total{kind=\"Provider\",outcome=\"unchanged\"}"),
        "{metrics}"
    );

    // reconcile-requested-at is echoed once handled.
    cluster
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "provider/p",
                "bosun.dev/reconcile-requested-at=token-1",
            ],
            None,
        )
        .await;
    support::wait_for("lastHandledReconcileAt echoed", TIMEOUT, || async {
        get_json(ns, "provider/p").await["status"]["lastHandledReconcileAt"] == "token-1"
    })
    .await;

    // Paused: Synced=False with the fixed reason.
    cluster
        .kubectl_ok(
            &["annotate", "-n", ns, "provider/p", "bosun.dev/paused=true"],
            None,
        )
        .await;
    wait_condition(ns, "provider/p", "Synced", "False", "ReconcilePaused", "").await;
    cluster
        .kubectl_ok(
            &["annotate", "-n", ns, "provider/p", "bosun.dev/paused-"],
            None,
        )
        .await;
    wait_condition(ns, "provider/p", "Synced", "True", "ReconcileSuccess", "").await;

    // Probes and metrics.
    assert_eq!(operator.get("/healthz").await.0, 200);
    support::wait_for("/readyz after the first sync", TIMEOUT, || async {
        operator.get("/readyz").await.0 == 200
    })
    .await;
    let (_, metrics) = operator.get("/metrics").await;
    assert!(metrics.contains("bosun_provider_requests_total{platform=\"codesphere\",operation=\"listTeams\",code=\"200\"}"), "{metrics}");
    assert!(
        metrics.contains("bosun_reconciles_total{kind=\"Provider\",result=\"success\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn leader_election_lets_one_replica_act() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("leader").await;
    let ns = ns.name.as_str();
    let lease_args = [
        "--leader-elect",
        "--leader-election-namespace",
        ns,
        "--lease-duration",
        "6s",
    ];
    let first = support::Operator::start(cluster, ns, &lease_args).await;
    support::wait_for("first replica leads", TIMEOUT, || async {
        first.logs().contains("became leader")
    })
    .await;
    let second = support::Operator::start(cluster, ns, &lease_args).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        !second.logs().contains("became leader"),
        "two leaders at once"
    );
    // A standby is healthy and ready (so a rolling update can proceed), and says why.
    let (code, body) = second.get("/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "standby: waiting for leadership")
    );
    let holder = cluster
        .kubectl_ok(
            &[
                "get",
                "lease",
                "-n",
                ns,
                "bosun-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .await;
    assert!(!holder.is_empty());

    // Killing the leader hands over within the lease duration plus a few seconds.
    let killed_at = tokio::time::Instant::now();
    first.kill().await;
    support::wait_for(
        "second replica takes over",
        Duration::from_secs(20),
        || async { second.logs().contains("became leader") },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(12), "handover took {took:?}");
    // A clean shutdown releases the lease at once.
    assert!(second.terminate().await);
    let holder = cluster
        .kubectl_ok(
            &[
                "get",
                "lease",
                "-n",
                ns,
                "bosun-leader",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .await;
    assert!(holder.is_empty(), "lease still held by {holder}");
}

#[tokio::test]
async fn cluster_provider_reads_its_secret_from_the_named_namespace() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("cprov").await;
    let ns = ns.name.as_str();
    let (sim, server) = codesphere_sim().await;
    let operator = support::Operator::start(cluster, ns, &[]).await;
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&secret("creds", "sim-token")),
        )
        .await;
    let name = format!("cp-{ns}");
    // Only namespaces named `elsewhere`, or labelled for this test's tenant, may use it.
    let manifest = format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: ClusterProvider\nmetadata: {{name: {name}}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: creds, key: token, namespace: {ns}}}}}\n  \
         allowedNamespaces: {{names: [elsewhere], selector: {{matchLabels: {{bosun.dev/tenant: {ns}}}}}}}\n",
        server.base_url()
    );
    cluster
        .kubectl_ok(&["apply", "-f", "-"], Some(&manifest))
        .await;
    support::wait_for("ClusterProvider Ready", TIMEOUT, || async {
        let out = cluster
            .kubectl(&["get", "clusterprovider", &name, "-o", "json"], None)
            .await;
        let obj: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        condition(&obj, "Ready")
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "CredentialsVerified")
    })
    .await;
    // A Workspace in a namespace the ClusterProvider does not allow: Stalled, nothing sent.
    let ws = format!("apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata: {{name: w}}\nspec: {{providerRef: {{kind: ClusterProvider, name: {name}}}, source: {{repository: r, branch: main}}, codesphere: {{teamId: 1}}}}");
    let before = sim.control().stats().requests_total;
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&ws))
        .await;
    let obj = wait_condition(
        ns,
        "workspace/w",
        "Stalled",
        "True",
        "ProviderNotAllowed",
        &format!("does not allow namespace {ns}"),
    )
    .await;
    assert!(obj["status"]["externalId"].is_null());
    let sent = sim.control().stats().requests_total - before;
    println!("requests for a Workspace of a namespace not allowed: {sent}");
    assert_eq!(
        sent, 0,
        "something was sent with a credential the namespace may not use"
    );
    // Labelled for the tenant, the namespace may use it by kind.
    cluster
        .kubectl_ok(
            &["label", "namespace", ns, &format!("bosun.dev/tenant={ns}")],
            None,
        )
        .await;
    cluster
        .kubectl_ok(
            &[
                "annotate",
                "-n",
                ns,
                "workspace/w",
                "bosun.dev/reconcile-requested-at=labelled",
            ],
            None,
        )
        .await;
    support::wait_for(
        "Workspace created through the ClusterProvider",
        TIMEOUT,
        || async { get_json(ns, "workspace/w").await["status"]["externalId"].is_string() },
    )
    .await;
    cluster
        .kubectl_ok(&["delete", "clusterprovider", &name], None)
        .await;
    drop(operator);
}

/// A non-loopback address of this machine, if it has one: the route a UDP socket would take
/// (connecting a UDP socket sends nothing).
fn lan_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn refused_endpoints_are_never_called() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("endpoints").await;
    let ns = ns.name.as_str();
    // Reachable on every interface, so only the policy can keep requests from it.
    let sim = CodesphereSim::new(&SimConfig::default());
    let server = bind("0.0.0.0:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("start simulator");
    let port = server
        .base_url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let lan = lan_address()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "192.0.2.1".into());
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&secret("creds", "sim-token")),
        )
        .await;

    // The default operator: plain http off loopback, and a link-local (metadata) address.
    let operator = support::Operator::start(cluster, ns, &[]).await;
    let plain = format!("http://{lan}:{port}/api");
    let refused = [
        (
            "plain",
            plain.as_str(),
            "EndpointRefused",
            "--allow-plain-http",
        ),
        (
            "metadata",
            "https://169.254.169.254/api",
            "EndpointNotAllowed",
            "link-local",
        ),
    ];
    for (name, endpoint, reason, hint) in refused {
        cluster
            .kubectl_ok(
                &["apply", "-n", ns, "-f", "-"],
                Some(&provider(name, endpoint, "creds")),
            )
            .await;
        let obj = wait_condition(
            ns,
            &format!("provider/{name}"),
            "Stalled",
            "True",
            reason,
            hint,
        )
        .await;
        assert_eq!(condition(&obj, "Ready").unwrap()["status"], "False");
    }
    let events = cluster
        .kubectl_ok(&["get", "events", "-n", ns, "-o", "json"], None)
        .await;
    assert!(
        events.contains("EndpointRefused"),
        "an Event says why: {events}"
    );
    assert!(operator.terminate().await);

    // An allowlist: only 127.0.0.1 may be called, so `localhost` is refused though it is the
    // same simulator.
    let operator =
        support::Operator::start(cluster, ns, &["--allowed-endpoint-hosts=127.0.0.1"]).await;
    let named = format!("http://localhost:{port}/api");
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&provider("named", &named, "creds")),
        )
        .await;
    wait_condition(
        ns,
        "provider/named",
        "Stalled",
        "True",
        "EndpointNotAllowed",
        "--allowed-endpoint-hosts (127.0.0.1)",
    )
    .await;
    let reached = sim.control().stats().requests_total;
    println!("requests that reached the refused endpoints: {reached}");
    assert_eq!(reached, 0, "a refused endpoint was called");

    // The allowed one works, through the same simulator.
    let allowed = format!("http://127.0.0.1:{port}/api");
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&provider("allowed", &allowed, "creds")),
        )
        .await;
    wait_condition(
        ns,
        "provider/allowed",
        "Ready",
        "True",
        "CredentialsVerified",
        "team 1",
    )
    .await;
    assert!(operator.terminate().await);
}
