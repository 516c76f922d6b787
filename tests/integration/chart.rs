//! The Helm chart against the real control plane: lint, server-side dry run of what it
//! renders, and the operator running under exactly the chart's RBAC (impersonating its
//! ServiceAccount) while it reconciles the Codesphere example, without one forbidden call.

use super::{apply, bosun_cluster, condition, support, wait_until};
use bosun::platform::codesphere::sim::{router, CodesphereSim};
use bosun::sim::{bind, SimConfig};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn chart() -> PathBuf {
    support::repo_root().join("charts/bosun")
}

/// Runs `scripts/helm` (helm built from its Go module and cached) and returns stdout.
fn helm(args: &[&str]) -> String {
    let out = Command::new(support::repo_root().join("scripts/helm"))
        .args(args)
        .output()
        .expect("run scripts/helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn render(namespace: &str, values: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "bosun",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    helm(&args)
}

#[tokio::test]
async fn chart_lints_and_renders_objects_the_apiserver_accepts() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("chart").await.name;
    let chart = chart();
    let lint = helm(&["lint", "--strict", chart.to_str().expect("utf-8 path")]);
    assert!(
        lint.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{lint}"
    );

    // Cluster-wide and one-namespace installs, with leader election and a metrics Service.
    for values in [
        vec!["leaderElection.enabled=true", "replicaCount=2"],
        vec![&*format!("watchNamespace={ns}"), "logFormat=text"],
    ] {
        let rendered = render(&ns, &values);
        for kind in ["Deployment", "ServiceAccount", "Service"] {
            assert!(
                rendered.contains(&format!("kind: {kind}\n")),
                "{kind} missing"
            );
        }
        let out = cluster
            .kubectl_ok(
                &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
                Some(&rendered),
            )
            .await;
        assert!(
            out.contains("deployment.apps/bosun created (server dry run)"),
            "{out}"
        );
    }
    // More than one replica without a Lease would have every replica act: refused.
    let refused = Command::new(support::repo_root().join("scripts/helm"))
        .args([
            "template",
            "bosun",
            chart.to_str().expect("utf-8 path"),
            "--set",
            "replicaCount=2",
        ])
        .output()
        .expect("run helm");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("leaderElection.enabled"));
}

#[tokio::test]
async fn operator_works_under_exactly_the_charts_rbac() {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace("chart-rbac").await.name;
    let ns = ns.as_str();

    // The chart's ServiceAccount and RBAC, as installed into this namespace.
    let rendered = render(
        ns,
        &[
            &format!("watchNamespace={ns}"),
            "leaderElection.enabled=true",
        ],
    );
    let rbac: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| {
            [
                "kind: ServiceAccount",
                "kind: Role",
                "kind: RoleBinding",
                "kind: ClusterRole",
            ]
            .iter()
            .any(|k| doc.contains(&format!("{k}\n")))
        })
        .collect();
    assert!(rbac.len() >= 6, "{rendered}");
    // Cluster-scoped names are per release; give this test's its own.
    let rbac = rbac.join("\n---").replace(
        "name: bosun-clusterproviders",
        &format!("name: {ns}-clusterproviders"),
    );
    cluster
        .kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&rbac))
        .await;

    // A kubeconfig that impersonates the ServiceAccount (and its groups).
    let admin = std::fs::read_to_string(cluster.kubeconfig()).expect("kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).expect("kubeconfig yaml");
    for user in config["users"].as_sequence_mut().expect("users") {
        user["user"]["as"] = format!("system:serviceaccount:{ns}:bosun").into();
        user["user"]["as-groups"] = serde_yaml::to_value([
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_string(),
        ])
        .expect("groups");
    }
    let kubeconfig = std::env::temp_dir().join(format!("bosun-{ns}-sa.kubeconfig"));
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config).expect("yaml")).expect("write");

    let sim = CodesphereSim::new(&SimConfig::default());
    sim.set_start_delay(Duration::from_millis(300));
    sim.set_stage_duration(Duration::from_millis(300));
    sim.set_run_delay(Duration::from_millis(300));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let operator = support::Operator::start_with_env(
        cluster,
        ns,
        &["--leader-elect", "--leader-election-namespace", ns],
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))],
    )
    .await;
    let examples = support::repo_root().join("examples/codesphere");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example");
        apply(
            ns,
            &text.replace("http://127.0.0.1:18081", &server.base_url()),
        )
        .await;
    }
    for what in ["provider/codesphere", "workspace/shop"] {
        wait_until(ns, what, "Ready", |o| {
            condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    }
    // Every kind got its status written.
    for what in ["servicescale/shop-web", "domainbinding/shop-example-com"] {
        wait_until(ns, what, "status written", |o| {
            o["status"]["observedGeneration"].is_i64()
        })
        .await;
    }
    let logs = operator.logs();
    for needle in ["forbidden", "Forbidden", " 403"] {
        assert!(
            !logs.contains(needle),
            "a call was refused under the chart's RBAC:\n{logs}"
        );
    }
}
