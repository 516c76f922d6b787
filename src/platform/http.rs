//! The HTTP client every platform client is built on: TLS trust, the shared request budget,
//! 429 handling and request metrics live here once.

use crate::core::budget::RateBudget;
use crate::core::metrics::Metrics;
use crate::core::seam::{Connection, ErrorKind, PlatformError};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A budgeted, instrumented HTTP client for one platform account.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    platform: &'static str,
    budget: Arc<RateBudget>,
    metrics: Metrics,
    /// `bosun plan`: refuse every write (see [`Connection::read_only`]).
    read_only: bool,
}

impl ApiClient {
    /// Builds the client. TLS is always verified; `ca_pem` adds trust, it never removes checks.
    pub fn new(connection: &Connection, platform: &'static str) -> Result<Self, PlatformError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bosun/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // Redirects are followed by the platform clients that need them, so that
            // credentials are never forwarded by accident.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &connection.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                PlatformError::new(
                    ErrorKind::Tls,
                    format!("the provider's CA bundle is not valid PEM: {e}"),
                )
            })?;
            if certs.is_empty() {
                return Err(PlatformError::new(
                    ErrorKind::Tls,
                    "the provider's CA bundle holds no certificate",
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            PlatformError::new(ErrorKind::Tls, format!("cannot build the HTTP client: {e}"))
        })?;
        Ok(ApiClient {
            http,
            base: connection.endpoint.trim_end_matches('/').to_string(),
            platform,
            budget: connection.budget.clone(),
            metrics: connection.metrics.clone(),
            read_only: connection.read_only,
        })
    }

    /// A request to `path` (relative to the endpoint).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    /// A request to an absolute URL (for redirects).
    pub fn raw(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request within the budget. `operation` names the endpoint in metrics.
    /// A 429 pauses the whole credential's budget for its `Retry-After` and is returned as a
    /// `RateLimited` error; other statuses are returned for the platform client to interpret.
    pub async fn send(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<Response, PlatformError> {
        self.dispatch(operation, request, false).await
    }

    /// Like [`ApiClient::send`], for a request that changes nothing at the platform although
    /// its method is not GET (a dry-run deploy, a login): `bosun plan` sends it too.
    pub async fn send_read_only(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<Response, PlatformError> {
        self.dispatch(operation, request, true).await
    }

    async fn dispatch(
        &self,
        operation: &str,
        mut request: RequestBuilder,
        read_only: bool,
    ) -> Result<Response, PlatformError> {
        if self.read_only && !read_only {
            let (client, built) = request.build_split();
            let built = built.map_err(|e| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} {operation}: cannot build the request: {e}",
                        self.platform
                    ),
                )
            })?;
            if !built.method().is_safe() {
                // The funnel holds every step in a plan: a write here came around it.
                return Err(PlatformError::new(
                    ErrorKind::Invalid,
                    format!(
                        "bosun plan sends no writes: {} {operation} ({} {}) was refused before it was sent; this is a bug in bosun, please report it",
                        self.platform,
                        built.method(),
                        built.url().path()
                    ),
                ));
            }
            request = RequestBuilder::from_parts(client, built);
        }
        self.budget.acquire().await;
        let started = Instant::now();
        let result = request.send().await;
        let elapsed = started.elapsed();
        match result {
            Ok(response) => {
                let status = response.status();
                self.metrics
                    .provider_request(self.platform, operation, status.as_str(), elapsed);
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let after = retry_after(&response).unwrap_or(Duration::from_secs(10));
                    self.budget.pause(after);
                    let mut err = PlatformError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "{} answered 429 Too Many Requests; waiting {}s",
                            self.platform,
                            after.as_secs()
                        ),
                    );
                    err.status = Some(429);
                    err.retry_after = Some(after);
                    return Err(err);
                }
                Ok(response)
            }
            Err(e) => {
                let label = if e.is_timeout() { "timeout" } else { "error" };
                self.metrics
                    .provider_request(self.platform, operation, label, elapsed);
                Err(transport_error(self.platform, &e))
            }
        }
    }
}

/// Reads `Retry-After` in seconds (the HTTP-date form is rare for APIs and treated as absent).
pub fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Classifies a failure to get any answer. The URL is left out: it may carry a query token.
fn transport_error(platform: &str, e: &reqwest::Error) -> PlatformError {
    let mut chain = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_ascii_lowercase();
    let kind =
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            ErrorKind::Tls
        } else if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Unavailable
        };
    let what = match kind {
        ErrorKind::Tls => "TLS verification failed",
        ErrorKind::Timeout => "no answer in time",
        _ => "cannot reach the platform",
    };
    PlatformError::new(kind, format!("{platform}: {what}{chain}"))
}

/// Passes a 2xx answer through; any other becomes the platform's typed error, built by
/// `classify` from the status and the body.
pub async fn check_answer(
    response: Response,
    classify: impl FnOnce(StatusCode, &str) -> PlatformError,
) -> Result<Response, PlatformError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(classify(status, &body))
}

/// Puts the operation after the platform's name in an error message (`"<platform> <op>: ..."`).
pub fn name_operation(platform: &str, operation: &str, mut err: PlatformError) -> PlatformError {
    let prefix = format!("{platform} ");
    err.message = match err.message.strip_prefix(&prefix) {
        Some(rest) => format!("{platform} {operation}: {rest}"),
        None => format!("{platform} {operation}: {}", err.message),
    };
    err
}

/// Reads a JSON answer; one that breaks off is `Unavailable`, one that cannot be read `Protocol`.
pub async fn read_json_answer<T: DeserializeOwned>(
    platform: &str,
    operation: &str,
    response: Response,
) -> Result<T, PlatformError> {
    let bytes = response.bytes().await.map_err(|e| {
        PlatformError::new(
            ErrorKind::Unavailable,
            format!("{platform} {operation}: the answer broke off: {e}"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        PlatformError::new(
            ErrorKind::Protocol,
            format!("{platform} {operation}: unreadable answer: {e}"),
        )
    })
}

/// Encodes a request body.
pub fn to_value<T: serde::Serialize + ?Sized>(
    body: &T,
) -> Result<serde_json::Value, PlatformError> {
    serde_json::to_value(body).map_err(|e| {
        PlatformError::new(ErrorKind::Protocol, format!("cannot encode a request: {e}"))
    })
}

/// A read whose "not found" means "absent", not an error.
pub fn not_found_is_none<T>(result: Result<T, PlatformError>) -> Result<Option<T>, PlatformError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The status-code classes every platform shares; platform clients refine the message.
pub fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 | 410 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        402 => ErrorKind::QuotaExceeded,
        429 => ErrorKind::RateLimited,
        408 | 504 => ErrorKind::Timeout,
        500..=599 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::Invalid,
        _ => ErrorKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plans_client_refuses_writes_without_sending_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let connection = Connection {
            platform: crate::api::PlatformType::Codesphere,
            endpoint: base,
            credential: crate::core::seam::Credential::new("t0k3n-never-sent"),
            ca_pem: None,
            defaults: Default::default(),
            budget: Arc::new(RateBudget::new(600, 10)),
            metrics: Metrics::new(),
            read_only: true,
        };
        let client = ApiClient::new(&connection, "codesphere").unwrap();
        let e = client
            .send(
                "setEnvVar",
                client.request(Method::PUT, "/workspaces/1/env-vars"),
            )
            .await
            .expect_err("a write in a plan is refused");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message.contains("setEnvVar") && e.message.contains("PUT"),
            "{e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            reached.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing reached the platform"
        );
    }

    #[test]
    fn status_codes_map_to_what_they_mean() {
        assert_eq!(
            kind_for_status(StatusCode::UNAUTHORIZED),
            ErrorKind::Unauthorized
        );
        assert_eq!(kind_for_status(StatusCode::FORBIDDEN), ErrorKind::Forbidden);
        assert_eq!(
            kind_for_status(StatusCode::PAYMENT_REQUIRED),
            ErrorKind::QuotaExceeded
        );
        assert_eq!(
            kind_for_status(StatusCode::UNPROCESSABLE_ENTITY),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind_for_status(StatusCode::BAD_GATEWAY),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind_for_status(StatusCode::GATEWAY_TIMEOUT),
            ErrorKind::Timeout
        );
        assert_eq!(kind_for_status(StatusCode::CONFLICT), ErrorKind::Conflict);
    }
}
