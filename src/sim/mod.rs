//! Provider-neutral machinery shared by the platform simulators behind `bosun sim`.
//!
//! Every platform simulator is an axum [`Router`] wrapped by [`with_sim`], which adds:
//!
//! - a middleware that, in order, counts the request, answers `503` during an outage, adds the
//!   configured latency, injects random `500`/`503` errors, and enforces the rate limit (`429`
//!   with `Retry-After`); error bodies come from the platform's [`ErrorRenderer`];
//! - admin endpoints under `/_sim/` (`GET /_sim/stats`, `GET|POST /_sim/faults`,
//!   `POST /_sim/reset-stats`) that bypass faults, rate limits and auth.
//!
//! Authentication is not part of the middleware: header names and error shapes differ per
//! platform, so each simulator checks it itself (see [`bearer_token`]).
//!
//! The shared [`SimControl`] is what tests (running a simulator in-process) use to switch faults
//! and read counters without going over HTTP.

pub mod cli;
#[cfg(test)]
pub(crate) mod spec_check;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The token every simulator accepts unless told otherwise (`bosun sim --token`).
pub const DEFAULT_TOKEN: &str = "sim-token";

/// Route key used in [`SimStats::requests_by_route`] for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Renders an error response in a platform's own error shape, from a status and a
/// human-readable message.
pub type ErrorRenderer = fn(StatusCode, &str) -> Response;

/// Settings shared by every platform simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// The only credential the simulator accepts.
    pub token: String,
    /// Requests admitted per credential and minute; `None` disables rate limiting.
    pub rate_limit_per_minute: Option<u32>,
    /// Faults active from the start (they can be changed at runtime through [`SimControl`]).
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token: DEFAULT_TOKEN.to_owned(),
            rate_limit_per_minute: None,
            faults: FaultConfig::default(),
        }
    }
}

// Hand-written so the token never lands in a log line.
impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("token", &"<redacted>")
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Injected faults.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Fraction (0.0..=1.0) of requests answered with `500` or `503`.
    pub error_rate: f64,
    /// Delay added before every answer.
    pub latency: Duration,
    /// When true, every request is answered with `503`.
    pub outage: bool,
}

impl FaultConfig {
    fn validate(&self) -> Result<(), SimError> {
        if (0.0..=1.0).contains(&self.error_rate) {
            Ok(())
        } else {
            Err(SimError::InvalidErrorRate(self.error_rate))
        }
    }
}

/// The wire form of [`FaultConfig`] (`GET /_sim/faults`, answer of `POST /_sim/faults`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultsView {
    pub error_rate: f64,
    pub latency_ms: u64,
    pub outage: bool,
}

impl From<FaultConfig> for FaultsView {
    fn from(f: FaultConfig) -> Self {
        Self {
            error_rate: f.error_rate,
            latency_ms: u64::try_from(f.latency.as_millis()).unwrap_or(u64::MAX),
            outage: f.outage,
        }
    }
}

/// A partial change of the faults (body of `POST /_sim/faults`); absent fields stay as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    #[serde(default, alias = "errorRate", skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, alias = "latencyMs", skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<bool>,
}

/// Errors of the simulator framework.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("error_rate must be between 0.0 and 1.0, got {0}")]
    InvalidErrorRate(f64),
}

/// Counters of one simulator, as served by `GET /_sim/stats`.
///
/// `requests_total` and `requests_by_route` count every API request received (admin endpoints
/// excluded). The rate maxima count only requests *admitted* to the platform API, i.e. those not
/// answered by an outage, an injected error or the rate limiter. They are global (all
/// credentials), while the limit applies per credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    pub requests_total: u64,
    /// Keyed by `"<METHOD> <path template>"`, e.g. `"GET /api/workspaces/{workspaceId}"`.
    pub requests_by_route: BTreeMap<String, u64>,
    pub rate_limited_total: u64,
    pub faults_injected_total: u64,
    /// Most requests admitted within any sliding 1-second window.
    pub max_requests_per_second: u64,
    /// Most requests admitted within any sliding 60-second window.
    pub max_requests_per_minute: u64,
    pub rate_limit_per_minute: Option<u32>,
}

impl SimStats {
    /// Requests received for one route, e.g. `requests_for("GET", "/api/teams")`.
    pub fn requests_for(&self, method: &str, template: &str) -> u64 {
        self.requests_by_route
            .get(&format!("{method} {template}"))
            .copied()
            .unwrap_or(0)
    }
}

/// Runtime switches and counters of one simulator. Cheap to clone; clones share state.
///
/// The rate limit `L` per minute is enforced per credential as one sliding window: at most `L`
/// requests in any 60 s. That is how the platforms state their limits (requests per minute),
/// and a sliding window is stricter than the fixed windows servers usually count in, so a
/// client that passes here passes there.
#[derive(Clone)]
pub struct SimControl {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    faults: Mutex<FaultConfig>,
    stats: Mutex<StatsState>,
    limiter: Option<Mutex<Limiter>>,
}

#[derive(Default)]
struct StatsState {
    counters: SimStats,
    /// Admission instants of the last minute, oldest first.
    admitted: VecDeque<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a way
    // that matters for a simulator, so keep serving rather than cascade the panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimControl {
    /// A control with the config's faults and rate limit, and zeroed counters.
    pub fn new(config: &SimConfig) -> Self {
        let limiter = config.rate_limit_per_minute.map(|per_minute| {
            Mutex::new(Limiter {
                per_minute: per_minute.max(1),
                windows: HashMap::new(),
            })
        });
        let control = Self {
            inner: Arc::new(ControlInner {
                faults: Mutex::new(FaultConfig::default()),
                stats: Mutex::new(StatsState::default()),
                limiter,
            }),
        };
        // An invalid initial error rate is clamped rather than rejected: construction cannot fail.
        let mut faults = config.faults;
        faults.error_rate = faults.error_rate.clamp(0.0, 1.0);
        *lock(&control.inner.faults) = faults;
        control
    }

    /// Changes the per-minute limit of a simulator started with one (a sudden 429 storm is a
    /// limit dropped to almost nothing); returns false when it has none.
    pub fn set_rate_limit_per_minute(&self, per_minute: u32) -> bool {
        match &self.inner.limiter {
            Some(limiter) => {
                lock(limiter).per_minute = per_minute.max(1);
                true
            }
            None => false,
        }
    }

    /// The faults currently active.
    pub fn faults(&self) -> FaultConfig {
        *lock(&self.inner.faults)
    }

    /// Replaces all faults.
    ///
    /// # Errors
    ///
    /// [`SimError::InvalidErrorRate`] when the error rate is outside 0.0..=1.0.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), SimError> {
        faults.validate()?;
        *lock(&self.inner.faults) = faults;
        Ok(())
    }

    /// Changes the given faults and returns the resulting set.
    ///
    /// # Errors
    ///
    /// [`SimError::InvalidErrorRate`] when the error rate is outside 0.0..=1.0; nothing changes.
    pub fn update_faults(&self, update: FaultUpdate) -> Result<FaultConfig, SimError> {
        let mut faults = lock(&self.inner.faults);
        let mut next = *faults;
        if let Some(rate) = update.error_rate {
            next.error_rate = rate;
        }
        if let Some(ms) = update.latency_ms {
            next.latency = Duration::from_millis(ms);
        }
        if let Some(outage) = update.outage {
            next.outage = outage;
        }
        next.validate()?;
        *faults = next;
        Ok(next)
    }

    /// Sets the fraction of requests answered with an injected `500`/`503`.
    ///
    /// # Errors
    ///
    /// [`SimError::InvalidErrorRate`] when outside 0.0..=1.0.
    pub fn set_error_rate(&self, error_rate: f64) -> Result<(), SimError> {
        self.update_faults(FaultUpdate {
            error_rate: Some(error_rate),
            ..FaultUpdate::default()
        })
        .map(drop)
    }

    /// Sets the delay added before every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.faults).latency = latency;
    }

    /// Switches the simulated outage (every request answered `503`).
    pub fn set_outage(&self, outage: bool) {
        lock(&self.inner.faults).outage = outage;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        let mut stats = lock(&self.inner.stats).counters.clone();
        if let Some(limiter) = &self.inner.limiter {
            let limiter = lock(limiter);
            stats.rate_limit_per_minute = Some(limiter.per_minute);
        }
        stats
    }

    /// Zeroes the counters (faults and rate-limit state are left alone).
    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = StatsState::default();
    }

    fn record_request(&self, route: String) {
        let mut stats = lock(&self.inner.stats);
        stats.counters.requests_total += 1;
        *stats.counters.requests_by_route.entry(route).or_insert(0) += 1;
    }

    fn record_fault(&self) {
        lock(&self.inner.stats).counters.faults_injected_total += 1;
    }

    fn record_rate_limited(&self) {
        lock(&self.inner.stats).counters.rate_limited_total += 1;
    }

    /// Decides whether a request with this credential is within the limit; `Err` carries how
    /// long until it would be.
    fn admit(&self, credential: &str) -> Result<(), Duration> {
        // Lock order is always limiter, then stats; `now` is taken under the locks so the
        // admission log stays sorted.
        let limiter = self.inner.limiter.as_ref().map(lock);
        let mut stats = lock(&self.inner.stats);
        let now = Instant::now();
        if let Some(mut limiter) = limiter {
            limiter.admit(credential, now)?;
        }
        let StatsState { counters, admitted } = &mut *stats;
        admitted.push_back(now);
        while admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            admitted.pop_front();
        }
        let per_minute = admitted.len() as u64;
        let per_second = count_within(admitted, now, SECOND) as u64;
        counters.max_requests_per_minute = counters.max_requests_per_minute.max(per_minute);
        counters.max_requests_per_second = counters.max_requests_per_second.max(per_second);
        Ok(())
    }
}

/// How many instants of a sorted window lie in `(now - span, now]`.
fn count_within(window: &VecDeque<Instant>, now: Instant, span: Duration) -> usize {
    let first = window.partition_point(|t| now.saturating_duration_since(*t) >= span);
    let last = window.partition_point(|t| *t <= now);
    last.saturating_sub(first)
}

/// Sliding-window-log limiter, one log per credential.
struct Limiter {
    per_minute: u32,
    windows: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// Bounds the number of logs kept for credentials nobody uses any more.
    const MAX_IDLE_LOGS: usize = 1024;

    fn admit(&mut self, credential: &str, now: Instant) -> Result<(), Duration> {
        if self.windows.len() > Self::MAX_IDLE_LOGS {
            self.windows.retain(|_, log| {
                log.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < MINUTE)
            });
        }
        let log = self.windows.entry(credential.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            log.pop_front();
        }
        if log.len() >= self.per_minute as usize {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(MINUTE.saturating_sub(now.saturating_duration_since(oldest)));
        }
        log.push_back(now);
        Ok(())
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1 (0 would invite a hot loop).
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The credential of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Clone)]
struct Layered {
    control: SimControl,
    render: ErrorRenderer,
}

/// Wraps a platform router with the fault/limit middleware, a fallback that answers unknown
/// paths with `404` in the platform's error shape, and the `/_sim/` admin endpoints.
pub fn with_sim(platform: Router, control: SimControl, render: ErrorRenderer) -> Router {
    let layered = Layered {
        control: control.clone(),
        render,
    };
    platform
        .fallback(move || async move { render(StatusCode::NOT_FOUND, "No such API path.") })
        .layer(middleware::from_fn_with_state(layered, sim_middleware))
        .merge(admin_router(control))
}

async fn sim_middleware(State(layer): State<Layered>, req: Request, next: Next) -> Response {
    let Layered { control, render } = layer;
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    control.record_request(format!("{} {}", req.method(), template));

    let faults = control.faults();
    if faults.outage {
        control.record_fault();
        return render(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is unavailable (simulated outage).",
        );
    }
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        control.record_fault();
        return if rand::random::<bool>() {
            render(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Simulated internal error.",
            )
        } else {
            render(
                StatusCode::SERVICE_UNAVAILABLE,
                "Simulated temporary unavailability.",
            )
        };
    }
    if let Err(wait) = control.admit(bearer_token(req.headers()).unwrap_or_default()) {
        control.record_rate_limited();
        let secs = retry_after_secs(wait);
        let mut response = render(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Rate limit exceeded. Retry in {secs} s."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    next.run(req).await
}

fn admin_router(control: SimControl) -> Router {
    Router::new()
        .route("/_sim/stats", get(admin_stats))
        .route("/_sim/faults", get(admin_get_faults).post(admin_set_faults))
        .route("/_sim/reset-stats", post(admin_reset_stats))
        .with_state(control)
}

async fn admin_stats(State(control): State<SimControl>) -> Json<SimStats> {
    Json(control.stats())
}

async fn admin_get_faults(State(control): State<SimControl>) -> Json<FaultsView> {
    Json(control.faults().into())
}

async fn admin_set_faults(State(control): State<SimControl>, body: axum::body::Bytes) -> Response {
    let update: FaultUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => return admin_error(&err.to_string()),
    };
    match control.update_faults(update) {
        Ok(faults) => Json(FaultsView::from(faults)).into_response(),
        Err(err) => admin_error(&err.to_string()),
    }
}

async fn admin_reset_stats(State(control): State<SimControl>) -> Json<SimStats> {
    control.reset_stats();
    Json(control.stats())
}

fn admin_error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// A simulator serving on a socket. Stops when dropped or on [`SimServer::shutdown`].
pub struct SimServer {
    pub local_addr: SocketAddr,
    /// `"http"` from [`bind`], `"https"` from [`bind_tls`].
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimServer {
    /// `http://<local_addr>` (`https://` when served by [`bind_tls`]), without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// Stops accepting connections and waits (at most a few seconds) for open ones to finish.
    ///
    /// # Errors
    ///
    /// What the server task ended with, if it failed or panicked.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            // The server may already be gone; then there is nothing to signal.
            let _ = tx.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_elapsed) => {
                // A client holding a request open must not keep the process alive.
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and serves `router` in a spawned task.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr, router: Router) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // A dropped sender means the same as an explicit shutdown.
                let _ = rx.await;
            })
            .await
    });
    Ok(SimServer {
        local_addr,
        scheme: "http",
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// How long a client may take to finish the TLS handshake before its connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Like [`bind`], but serves HTTPS (HTTP/1.1 over TLS) with `tls`; [`SimServer::base_url`]
/// then says `https`. Shutdown works the same way: the listener closes at once, open
/// connections finish their current request and close.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn bind_tls(
    addr: SocketAddr,
    router: Router,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(serve_tls(listener, acceptor, router, rx));
    Ok(SimServer {
        local_addr,
        scheme: "https",
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// The accept loop of [`bind_tls`]: one task per connection, stopped gracefully on `stop`
/// (an explicit signal or the sender being dropped).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _peer)) => tcp,
                    Err(err) => {
                        // Usually a transient shortage (e.g. file descriptors); like
                        // `axum::serve`, wait a moment instead of spinning.
                        tracing::debug!(error = %err, "sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                connections.spawn(serve_tls_connection(
                    tcp,
                    acceptor.clone(),
                    router.clone(),
                    closing_rx.clone(),
                ));
            }
        }
    }
    drop(listener);
    // Receivers may all be gone already; then there is nobody left to tell.
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once the server is closing (or gone).
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it at once.
    let _ = closing.wait_for(|closing| *closing).await;
}

async fn serve_tls_connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "sim: TLS handshake failed");
            return;
        }
        Err(_elapsed) => return,
    };
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "sim: connection ended with an error");
            }
        }
        () = until_closing(&mut closing) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use serde_json::Value;

    fn render_test(status: StatusCode, message: &str) -> Response {
        (
            status,
            Json(serde_json::json!({ "code": status.as_u16(), "message": message })),
        )
            .into_response()
    }

    async fn start(config: &SimConfig) -> (SimServer, SimControl) {
        let control = SimControl::new(config);
        let platform = Router::new()
            .route("/things/{id}", get(|| async { "thing" }))
            .route("/things", get(|| async { "things" }));
        let app = with_sim(platform, control.clone(), render_test);
        let server = bind("127.0.0.1:0".parse().expect("addr"), app)
            .await
            .expect("bind");
        (server, control)
    }

    #[test]
    fn bearer_token_parses_only_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("hv"));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  xyz ".parse().expect("hv"));
        assert_eq!(bearer_token(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("hv"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("hv"));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn limiter_enforces_a_sliding_minute_per_credential() {
        let mut limiter = Limiter {
            per_minute: 3,
            windows: HashMap::new(),
        };
        let t0 = Instant::now();
        assert!(limiter.admit("a", t0).is_ok());
        assert!(limiter.admit("a", t0).is_ok());
        // Other credentials have their own budget.
        assert!(limiter.admit("b", t0).is_ok());
        assert!(limiter.admit("a", t0 + SECOND).is_ok());
        // Per-minute cap reached; wait until the first admission leaves the minute.
        let wait = limiter
            .admit("a", t0 + 2 * SECOND)
            .expect_err("per-minute cap");
        assert_eq!(wait, Duration::from_secs(58));
        // Both admissions of t0 have left the window; the one of t0 + 1 s has not.
        assert!(limiter.admit("a", t0 + MINUTE).is_ok());
        assert!(limiter.admit("a", t0 + MINUTE).is_ok());
        assert!(limiter.admit("a", t0 + MINUTE).is_err());
    }

    #[test]
    fn fault_updates_validate() {
        let control = SimControl::new(&SimConfig::default());
        assert_eq!(
            control.set_error_rate(1.5),
            Err(SimError::InvalidErrorRate(1.5))
        );
        let faults = control
            .update_faults(FaultUpdate {
                latency_ms: Some(20),
                outage: Some(true),
                ..FaultUpdate::default()
            })
            .expect("valid");
        assert_eq!(faults.latency, Duration::from_millis(20));
        assert!(faults.outage);
        assert!(faults.error_rate.abs() < f64::EPSILON);
    }

    #[tokio::test]
    async fn middleware_counts_faults_and_admin_bypasses() {
        let (server, control) = start(&SimConfig::default()).await;
        let http = reqwest::Client::new();
        let base = server.base_url();

        for _ in 0..3 {
            let r = http
                .get(format!("{base}/things/7"))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 200);
        }
        let r = http.get(format!("{base}/nope")).send().await.expect("send");
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], 404, "fallback uses the platform renderer");

        let stats = control.stats();
        assert_eq!(stats.requests_total, 4);
        assert_eq!(stats.requests_for("GET", "/things/{id}"), 3);
        assert_eq!(stats.requests_for("GET", UNMATCHED_ROUTE), 1);

        // Outage through the admin API; admin calls keep working and are not counted.
        let r = http
            .post(format!("{base}/_sim/faults"))
            .json(&serde_json::json!({ "outage": true }))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let r = http
            .get(format!("{base}/things"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], 503);
        let stats: SimStats = http
            .get(format!("{base}/_sim/stats"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(stats.requests_total, 5);
        assert_eq!(stats.faults_injected_total, 1);

        // Error rate 1.0 answers every request with 500 or 503.
        control.set_outage(false);
        control.set_error_rate(1.0).expect("valid");
        for _ in 0..5 {
            let r = http
                .get(format!("{base}/things"))
                .send()
                .await
                .expect("send");
            assert!(r.status() == 500 || r.status() == 503, "got {}", r.status());
        }
        control.set_error_rate(0.0).expect("valid");

        // Latency is added.
        control.set_latency(Duration::from_millis(150));
        let started = std::time::Instant::now();
        let r = http
            .get(format!("{base}/things"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        let r = http
            .post(format!("{base}/_sim/faults"))
            .json(&serde_json::json!({ "error_rate": 2.0 }))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "invalid error rate is rejected");

        let r = http
            .post(format!("{base}/_sim/reset-stats"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(control.stats().requests_total, 0);
        server.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn server_stops_on_drop() {
        let (server, _control) = start(&SimConfig::default()).await;
        let addr = server.local_addr;
        drop(server);
        // The listener closes once the serve task sees the signal.
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "server still accepting after drop");
    }
}
