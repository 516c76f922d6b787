//! Runs the real `bosun run` binary against the test control plane.

use super::cluster::Cluster;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    pub http: String,
    pub log: PathBuf,
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
        let op = Operator { child, http, log };
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
