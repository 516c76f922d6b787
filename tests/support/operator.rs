//! Runs the real `bosun run` binary against the test control plane.

use super::cluster::Cluster;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running operator process; killed when dropped.
///
/// When it is dropped at the end of a test that passed, every Secret value of its namespace is
/// looked for in its log, the namespace's Events and every bosun object's status: a hit fails
/// the test. So every scenario suite doubles as a credential-leak check.
pub struct Operator {
    child: Child,
    pub http: String,
    pub log: PathBuf,
    namespace: String,
    /// The cluster's admin kubeconfig (the operator may run with another).
    admin_kubeconfig: PathBuf,
}

/// A free loopback port (the listener is dropped before the operator binds it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Operator {
    /// Starts `bosun run` watching `namespace`, with extra flags.
    pub async fn start(cluster: &Cluster, namespace: &str, extra: &[&str]) -> Operator {
        Self::start_with_env(cluster, namespace, extra, &[]).await
    }

    /// Like [`Operator::start`], with extra environment variables (e.g. `BOSUN_FAILPOINTS`).
    pub async fn start_with_env(
        cluster: &Cluster,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("bosun-operator-{namespace}-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create operator log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bosun"));
        cmd.arg("run")
            .args([
                "--http-addr",
                &http,
                "--namespace",
                namespace,
                "--poll-interval",
                "5s",
            ])
            .args(extra)
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info,bosun=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .envs(env.iter().copied())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn bosun run");
        let op = Operator {
            child,
            http,
            log,
            namespace: namespace.to_string(),
            admin_kubeconfig: cluster.kubeconfig().to_path_buf(),
        };
        op.wait_healthy().await;
        op
    }

    async fn wait_healthy(&self) {
        let url = format!("http://{}/healthz", self.http);
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator did not become healthy; log:\n{}", self.logs());
    }

    /// GET a path of the operator's HTTP server: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{}", self.http, path))
            .await
            .expect("operator HTTP");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub async fn terminate(mut self) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// Waits for the process to exit on its own (a failpoint aborted it); true if it did.
    pub async fn exited_within(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.child.wait()).await,
            Ok(Ok(_))
        )
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(leak) = credential_leak(&self.admin_kubeconfig, &self.namespace, &self.log) {
            panic!("{leak}");
        }
    }
}

/// Runs kubectl against the cluster synchronously (this runs in `Drop`); None if it fails (a
/// private control plane may already be gone).
fn kubectl_json(kubeconfig: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = std::process::Command::new(super::repo_root().join("scripts/kubectl"))
        .args(args)
        .args(["-o", "json"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The Secret values of a namespace worth looking for: long enough not to match ordinary
/// words, and not certificates (public by design).
fn secret_values(kubeconfig: &Path, namespace: &str) -> Vec<String> {
    let Some(list) = kubectl_json(kubeconfig, &["get", "secrets", "-n", namespace]) else {
        return Vec::new();
    };
    // kubectl prints a generic `kind: List`, which `k8s_openapi::List` refuses: read the items.
    let secrets: Vec<k8s_openapi::api::core::v1::Secret> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| serde_json::from_value(item.clone()).expect("a Secret as kubectl prints it"))
        .collect();
    let mut values: Vec<String> = secrets
        .iter()
        .flat_map(|s| s.data.iter().flatten())
        .filter_map(|(_, v)| String::from_utf8(v.0.clone()).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| v.len() >= 8 && !v.starts_with("-----BEGIN CERTIFICATE"))
        .collect();
    values.sort();
    values.dedup();
    values
}

/// Where a Secret value of the namespace was found, if anywhere.
pub fn credential_leak(kubeconfig: &Path, namespace: &str, log: &Path) -> Option<String> {
    let secrets = secret_values(kubeconfig, namespace);
    if secrets.is_empty() {
        return None;
    }
    let mut places = vec![(
        format!("operator log {}", log.display()),
        std::fs::read_to_string(log).unwrap_or_default(),
    )];
    if let Some(events) = kubectl_json(kubeconfig, &["get", "events", "-n", namespace]) {
        places.push(("Events".to_string(), events.to_string()));
    }
    if let Some(objects) = kubectl_json(kubeconfig, &["get", "bosun", "-n", namespace]) {
        for o in objects["items"].as_array().into_iter().flatten() {
            let what = format!(
                "status of {} {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            places.push((what, o["status"].to_string()));
        }
    }
    for (place, text) in &places {
        if let Some(secret) = secrets.iter().find(|s| text.contains(s.as_str())) {
            let shown: String = secret.chars().take(3).collect();
            return Some(format!(
                "a Secret value of namespace {namespace} ({shown}…) appears in the {place}"
            ));
        }
    }
    None
}
