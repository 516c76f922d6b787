//! Integration tests against a real control plane: kube-apiserver and etcd built from their Go
//! modules and started by `scripts/cluster` (see `tests/support/cluster.rs`). All of them live
//! in this one test binary, so one `cargo test` run starts one control plane.

#[path = "../support/mod.rs"]
mod support;

mod chart;
mod codemanager;
mod codesphere;
mod core;
mod crds;
mod devopness;
mod plan;
mod resilience;
mod security;
mod spheron;

/// The test control plane with bosun's CRDs installed (once per test binary).
pub async fn bosun_cluster() -> &'static support::Cluster {
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = support::cluster().await;
    CRDS.get_or_init(|| async {
        cluster
            .install_crds(&support::repo_root().join("crds"))
            .await;
    })
    .await;
    cluster
}

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn control_plane_serves_namespaces() {
    let cluster = support::cluster().await;
    let ns = cluster.test_namespace("smoke").await;

    // The admin client (verified TLS, token auth) sees the new namespace and the system ones.
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    let got = namespaces
        .get(&ns.name)
        .await
        .expect("get the test namespace");
    assert_eq!(got.metadata.name.as_deref(), Some(ns.name.as_str()));
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(
        names.iter().any(|n| n == "default"),
        "no default namespace in {names:?}"
    );
    assert!(
        names.contains(&ns.name),
        "{} missing from {names:?}",
        ns.name
    );

    // kubectl (at the control plane's minor) works against the same cluster.
    let out = cluster
        .kubectl_ok(
            &[
                "get",
                "namespace",
                &ns.name,
                "-o",
                "jsonpath={.metadata.name}",
            ],
            None,
        )
        .await;
    assert_eq!(out, ns.name);

    // RBAC is enforced for anyone but the admin: a ServiceAccount with no bindings is refused.
    let sa = format!("system:serviceaccount:{}:nobody", ns.name);
    let as_sa: Api<Namespace> = Api::all(cluster.client_as(&sa, &[]).await);
    match as_sa.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("an unbound ServiceAccount listed namespaces: {other:?}"),
    }
}

/// An object as JSON (`kubectl get -o json`), or null when it does not exist.
pub async fn get_json(ns: &str, what: &str) -> serde_json::Value {
    let out = support::cluster()
        .await
        .kubectl(&["get", "-n", ns, what, "-o", "json"], None)
        .await;
    if !out.status_success {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Every Event of a namespace, as `kubectl get events -o json` prints them.
pub async fn events(ns: &str) -> String {
    support::cluster()
        .await
        .kubectl_ok(&["get", "events", "-n", ns, "-o", "json"], None)
        .await
}

/// A condition of an object's status by type.
pub fn condition<'a>(obj: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `kubectl apply` of a manifest into a namespace; panics with kubectl's message on failure.
pub async fn apply(ns: &str, manifest: &str) {
    support::cluster()
        .await
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(manifest))
        .await;
}

/// `kubectl annotate --overwrite` of one object, e.g. a `bosun.dev/reconcile-requested-at` token.
pub async fn annotate(ns: &str, what: &str, annotation: &str) {
    support::cluster()
        .await
        .kubectl_ok(
            &["annotate", "-n", ns, what, annotation, "--overwrite"],
            None,
        )
        .await;
}

/// Polls an object until `f` holds, for up to 90 s; panics with its last status otherwise.
pub async fn wait_until(
    ns: &str,
    what: &str,
    describe: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut last = serde_json::Value::Null;
    while tokio::time::Instant::now() < deadline {
        last = get_json(ns, what).await;
        if f(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!(
        "{what}: never {describe}; last status:\n{:#}",
        last["status"]
    );
}
