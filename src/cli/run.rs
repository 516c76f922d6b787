//! `bosun run`: the controller, its probes and metrics, and leader election.

use crate::controllers::{self, Readiness, Scope};
use crate::core::context::{Context, Settings};
use crate::core::leader::{self, LeaseConfig};
use crate::core::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Address of the health (`/healthz`, `/readyz`) and metrics (`/metrics`) server.
    #[arg(long, default_value = "0.0.0.0:8080", env = "BOSUN_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "BOSUN_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often objects are checked for drift at the platform, unless they set
    /// `bosun.dev/poll-interval`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "BOSUN_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// Only act while holding a Lease, so several replicas can run for availability.
    #[arg(long, env = "BOSUN_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace from `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "BOSUN_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "bosun-leader")]
    pub leader_election_name: String,
    /// How long a Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Allow Provider endpoints with plain `http://` to hosts that are not loopback. Off, such a
    /// Provider is refused (`EndpointRefused`) and its credential is never sent in clear text.
    #[arg(long, env = "BOSUN_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// The only hosts Provider endpoints may name (comma-separated; `*.example.com` for
    /// subdomains). Empty: any host but link-local ones. Others are refused
    /// (`EndpointNotAllowed`) before anything is sent.
    #[arg(long, value_delimiter = ',', env = "BOSUN_ALLOWED_ENDPOINT_HOSTS")]
    pub allowed_endpoint_hosts: Vec<String>,
}

#[derive(Clone)]
struct Probes {
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<Probes>) -> (StatusCode, &'static str) {
    if p.readiness.standby() {
        (StatusCode::OK, "standby: waiting for leadership")
    } else if p.readiness.ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

async fn metrics_handler(
    State(p): State<Probes>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.metrics.render(),
    )
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs the controller until a shutdown signal.
pub async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let instance = std::env::var("POD_NAME").ok().or_else(|| hostname().ok());

    let probes = Probes {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
    info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
        .boxed()
        .shared()
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(stopping.clone());
    let server = tokio::spawn(async move { serve.await });
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let lease = if args.leader_elect {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let holder = format!(
            "{}-{}",
            instance.clone().unwrap_or_else(|| "bosun".into()),
            std::process::id()
        );
        let cfg = LeaseConfig {
            namespace,
            name: args.leader_election_name.clone(),
            holder,
            duration: args.lease_duration,
        };
        readiness.set_standby(true);
        if !wait_for_leadership(&client, &cfg, stop_rx.clone()).await {
            let _ = server.await;
            return Ok(());
        }
        readiness.set_standby(false);
        info!(lease = %cfg.name, holder = %cfg.holder, "became leader");
        tokio::spawn(keep_leading(client.clone(), cfg.clone(), stop_rx.clone()));
        Some(cfg)
    } else {
        None
    };

    let ctx = Context::new(
        client.clone(),
        metrics,
        Settings {
            poll_interval: args.poll_interval,
            endpoints: crate::core::endpoint::EndpointPolicy {
                allow_plain_http: args.allow_plain_http,
                allowed_hosts: args
                    .allowed_endpoint_hosts
                    .iter()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect(),
            },
            ..Default::default()
        },
        instance,
        Arc::new(crate::platform::Connectors::default()),
    );
    let scope = match args.namespace {
        Some(ns) => Scope::Namespace(ns),
        None => Scope::All,
    };
    controllers::run_all(ctx, scope, readiness, stopping).await;
    if let Some(cfg) = lease {
        // Bounded: shutting down must not hang on the apiserver (the next leader then waits
        // for the lease to expire instead).
        match tokio::time::timeout(RELEASE_TIMEOUT, leader::release(&client, &cfg)).await {
            Ok(Ok(())) => info!(lease = %cfg.name, "released the lease"),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot release the lease; the next leader waits for it to expire")
            }
            Err(_) => {
                warn!("releasing the lease timed out; the next leader waits for it to expire")
            }
        }
    }
    let _ = server.await;
    info!("stopped");
    Ok(())
}

/// Waits until this replica holds the lease; false if shutdown came first.
async fn wait_for_leadership(
    client: &kube::Client,
    cfg: &LeaseConfig,
    mut stop: watch::Receiver<bool>,
) -> bool {
    info!(lease = %cfg.name, namespace = %cfg.namespace, "waiting for leadership");
    loop {
        match leader::try_acquire(client, cfg).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot read the lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.renew_every()) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews the lease; exits the process when it cannot be renewed within its duration, so a
/// replica that lost leadership never keeps acting.
/// How long a shutting-down leader tries to hand its lease back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

async fn keep_leading(client: kube::Client, cfg: LeaseConfig, mut stop: watch::Receiver<bool>) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.renew_every()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match leader::try_acquire(&client, &cfg).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                error!("lost the lease to another replica; exiting");
                std::process::exit(1);
            }
            Err(e) => warn!(error = %e, "cannot renew the lease"),
        }
        if last_renewed.elapsed() >= cfg.duration {
            error!("could not renew the lease within its duration; exiting");
            std::process::exit(1);
        }
    }
}

fn hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string())
}
