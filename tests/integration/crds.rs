//! The CRDs on a real apiserver: established, examples accepted, bad input rejected with a
//! message that says what to fix, `kubectl scale` and `kubectl explain` working.

use super::{bosun_cluster, support};
use std::time::Duration;

const PROVIDER: &str = r#"
apiVersion: bosun.dev/v1alpha1
kind: Provider
metadata: {name: p}
spec:
  type: codesphere
  credentials: {secretRef: {name: s, key: token}}
"#;

fn workspace(extra_spec: &str, source: &str) -> String {
    format!(
        r#"
apiVersion: bosun.dev/v1alpha1
kind: Workspace
metadata: {{name: w}}
spec:
  providerRef: {{name: p}}
  source: {source}
{extra_spec}
"#
    )
}

const GOOD_SOURCE: &str = "{repository: 'https://example.com/r.git', branch: main}";

async fn rejected(ns: &str, manifest: &str) -> String {
    let cluster = support::cluster().await;
    let out = cluster
        .kubectl(&["apply", "-n", ns, "-f", "-"], Some(manifest))
        .await;
    assert!(
        !out.status_success,
        "the apiserver accepted an invalid manifest:\n{manifest}"
    );
    out.stderr
}

#[tokio::test]
async fn crds_are_established_and_listed_in_the_bosun_category() {
    let cluster = bosun_cluster().await;
    let out = cluster
        .kubectl_ok(&["api-resources", "--categories=bosun", "-o", "name"], None)
        .await;
    for kind in [
        "providers",
        "clusterproviders",
        "workspaces",
        "servicescales",
        "domainbindings",
    ] {
        assert!(
            out.contains(&format!("{kind}.bosun.dev")),
            "{kind} missing from the bosun category:\n{out}"
        );
    }
    let ns = cluster.test_namespace("cat").await;
    cluster
        .kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(PROVIDER))
        .await;
    let listed = cluster
        .kubectl_ok(&["get", "bosun", "-n", &ns.name, "-o", "name"], None)
        .await;
    assert!(listed.contains("provider.bosun.dev/p"), "{listed}");
}

#[tokio::test]
async fn every_example_manifest_is_accepted() {
    let cluster = bosun_cluster().await;
    let examples = support::repo_root().join("examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no examples");
    for dir in dirs {
        let ns = cluster.test_namespace("ex").await;
        let out = cluster
            .kubectl(
                &[
                    "apply",
                    "--dry-run=server",
                    "-n",
                    &ns.name,
                    "-f",
                    dir.to_str().unwrap(),
                ],
                None,
            )
            .await;
        assert!(
            out.status_success,
            "{} rejected:\n{}",
            dir.display(),
            out.stderr
        );
    }
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_a_message_that_says_what_to_fix() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("invalid").await;
    let ns = ns.name.as_str();
    let cases: Vec<(&str, String, &str)> = vec![
        ("replicas below 1", workspace("  replicas: 0", GOOD_SOURCE), "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"),
        ("two source refs", workspace("", "{repository: r, branch: main, tag: v1}"), "spec.source needs exactly one of branch, tag or commit"),
        ("no source ref", workspace("", "{repository: r}"), "spec.source needs exactly one of branch, tag or commit"),
        ("malformed commit", workspace("", "{repository: r, commit: XYZ}"), "spec.source.commit must be 7 to 40 lowercase hex digits"),
        (
            "env with value and valueFrom",
            workspace("  env: [{name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]", GOOD_SOURCE),
            "each env entry needs exactly one of value or valueFrom",
        ),
        ("bad env name", workspace("  env: [{name: '1A', value: x}]", GOOD_SOURCE), "env names start with a letter or _"),
        (
            "unknown provider type",
            PROVIDER.replace("type: codesphere", "type: heroku"),
            r#"spec.type: Unsupported value: "heroku": supported values: "codesphere", "devopness", "spheron", "puppetCodeManager""#,
        ),
        (
            "namespaced Provider with a Secret namespace",
            PROVIDER.replace("key: token}", "key: token, namespace: other}"),
            "a Provider reads its Secret from its own namespace",
        ),
        (
            "namespaced Provider with a CA Secret namespace",
            PROVIDER.replace("key: token}}", "key: token}}\n  tls: {caSecretRef: {name: ca, key: ca.crt, namespace: other}}"),
            "a Provider reads its CA Secret from its own namespace: remove spec.tls.caSecretRef.namespace",
        ),
        (
            "ClusterProvider without a Secret namespace",
            PROVIDER.replace("kind: Provider", "kind: ClusterProvider").replace("name: p}", "name: cp-invalid}"),
            "a ClusterProvider must say where its Secret is: set spec.credentials.secretRef.namespace",
        ),
        (
            "endpoint without scheme",
            PROVIDER.replace("type: codesphere", "type: codesphere\n  endpoint: cloud.codesphere.com"),
            "spec.endpoint must be an http:// or https:// URL",
        ),
        (
            "malformed domain",
            "apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {name: d}\nspec: {providerRef: {name: p}, domain: 'https://Shop.Example.com/x'}".into(),
            "spec.domain must be a lowercase fully qualified domain name",
        ),
        (
            "route path without /",
            "apiVersion: bosun.dev/v1alpha1\nkind: DomainBinding\nmetadata: {name: d}\nspec: {providerRef: {name: p}, domain: shop.example.com, routes: [{path: api, workspaces: [{name: w}]}]}".into(),
            "route paths start with / (for example / or /api)",
        ),
        (
            "ServiceScale with zero replicas",
            "apiVersion: bosun.dev/v1alpha1\nkind: ServiceScale\nmetadata: {name: s}\nspec: {workspaceRef: {name: w}, service: web, replicas: 0}".into(),
            "spec.replicas in body should be greater than or equal to 1",
        ),
    ];
    for (what, manifest, expected) in &cases {
        let err = rejected(ns, manifest).await;
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in:\n{err}"
        );
    }
}

#[tokio::test]
async fn fields_that_cannot_change_once_set_are_protected() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("immutable").await;
    let ns = ns.name.as_str();
    let adopted = workspace("  externalId: '42'", GOOD_SOURCE);
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&adopted))
        .await;

    let changed = rejected(ns, &adopted.replace("'42'", "'43'")).await;
    assert!(
        changed.contains("spec.externalId cannot change or be removed once set"),
        "{changed}"
    );
    let removed = rejected(ns, &workspace("", GOOD_SOURCE)).await;
    assert!(
        removed.contains("spec.externalId cannot change or be removed once set"),
        "{removed}"
    );
    let moved = rejected(
        ns,
        &adopted.replace("providerRef: {name: p}", "providerRef: {name: other}"),
    )
    .await;
    assert!(moved.contains("spec.providerRef cannot change"), "{moved}");

    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(PROVIDER))
        .await;
    let retyped = rejected(ns, &PROVIDER.replace("type: codesphere", "type: devopness")).await;
    assert!(retyped.contains("spec.type cannot change"), "{retyped}");

    // Setting externalId for the first time (adopting later) is allowed.
    let plain = workspace("", GOOD_SOURCE).replace("name: w}", "name: w2}");
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&plain))
        .await;
    let adopt_later = workspace("  externalId: '7'", GOOD_SOURCE).replace("name: w}", "name: w2}");
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&adopt_later))
        .await;
}

#[tokio::test]
async fn kubectl_scale_sets_spec_replicas() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("scale").await;
    let ns = ns.name.as_str();
    cluster
        .kubectl_ok(
            &["apply", "-n", ns, "-f", "-"],
            Some(&workspace("", GOOD_SOURCE)),
        )
        .await;
    cluster
        .kubectl_ok(&["scale", "-n", ns, "workspace/w", "--replicas=3"], None)
        .await;
    let replicas = cluster
        .kubectl_ok(
            &[
                "get",
                "-n",
                ns,
                "workspace/w",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .await;
    assert_eq!(replicas, "3");

    let scale = "apiVersion: bosun.dev/v1alpha1\nkind: ServiceScale\nmetadata: {name: web}\nspec: {workspaceRef: {name: w}, service: web, replicas: 1}";
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(scale))
        .await;
    cluster
        .kubectl_ok(
            &["scale", "-n", ns, "servicescale/web", "--replicas=4"],
            None,
        )
        .await;
    let replicas = cluster
        .kubectl_ok(
            &[
                "get",
                "-n",
                ns,
                "servicescale/web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .await;
    assert_eq!(replicas, "4");
    // The scale subresource refuses what the schema refuses.
    let out = cluster
        .kubectl(&["scale", "-n", ns, "workspace/w", "--replicas=0"], None)
        .await;
    assert!(!out.status_success, "scaled to 0: {}", out.stdout);
}

#[tokio::test]
async fn kubectl_explain_teaches_the_api() {
    let cluster = bosun_cluster().await;
    // Discovery of new CRDs by explain can lag a moment behind Established.
    support::wait_for(
        "kubectl explain workspace.spec.source",
        Duration::from_secs(30),
        || async {
            let out = cluster
                .kubectl(&["explain", "workspace.spec.source"], None)
                .await;
            out.status_success
                && out.stdout.contains("exactly one of branch, tag or commit")
                && out.stdout.contains("Git repository URL")
        },
    )
    .await;
    let out = cluster
        .kubectl_ok(&["explain", "domainbinding.spec.routes"], None)
        .await;
    assert!(
        out.contains("starting with `/`") || out.contains("path prefix"),
        "{out}"
    );
}
