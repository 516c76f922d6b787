//! The seam between the controller core and the platforms, on the core's side: what a
//! platform is (`Platform`), what it can do (`Capabilities`), how its errors are classified
//! (`PlatformError`), the credential it is given, and the `Connector` through which the core
//! gets platform clients without naming any platform.

use crate::api::{PlatformDefaults, PlatformType};
use crate::core::budget::RateBudget;
use crate::core::drivers;
use crate::core::reason::Reason;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to a platform, classified by what bosun should do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credential was refused (401): the user must fix the Secret.
    Unauthorized,
    /// The credential lacks a permission (403), or belongs to another account.
    Forbidden,
    /// The object does not exist (404).
    NotFound,
    /// Another change is in progress (409): retry soon.
    Conflict,
    /// The platform rejected the request as invalid (400/422): the user must fix the spec.
    Invalid,
    /// A plan, seat, billing or usage limit (402, or a 400 that says so): the user must act.
    QuotaExceeded,
    /// Too many requests (429): wait for `retry_after`.
    RateLimited,
    /// The platform is down or erring (5xx, connection refused).
    Unavailable,
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed (untrusted or mismatched certificate): the user must fix trust.
    Tls,
    /// The platform answered something bosun cannot read.
    Protocol,
}

/// An error from a platform API, with what is needed to report it well.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    pub kind: ErrorKind,
    /// A human-readable message, with the platform's own words where it gave some.
    pub message: String,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// The spec field the platform complained about, where it said.
    pub field: Option<String>,
    /// The platform's trace or request id, for support tickets.
    pub trace_id: Option<String>,
}

impl PlatformError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PlatformError {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            field: None,
            trace_id: None,
        }
    }

    /// Whether retrying later can help without a change from the user.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Conflict
                | ErrorKind::RateLimited
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Protocol
        )
    }

    /// The condition reason for this error.
    pub fn reason(&self) -> Reason {
        match self.kind {
            ErrorKind::Unauthorized => Reason::InvalidCredentials,
            ErrorKind::Forbidden => Reason::PermissionDenied,
            ErrorKind::NotFound => Reason::NotFoundAtPlatform,
            ErrorKind::Conflict => Reason::PlatformConflict,
            ErrorKind::Invalid => Reason::RejectedByPlatform,
            ErrorKind::QuotaExceeded => Reason::QuotaExceeded,
            ErrorKind::RateLimited => Reason::RateLimited,
            ErrorKind::Unavailable => Reason::PlatformUnavailable,
            ErrorKind::Timeout => Reason::PlatformTimeout,
            ErrorKind::Tls => Reason::TlsError,
            ErrorKind::Protocol => Reason::UnexpectedAnswer,
        }
    }
}

/// What a platform can do, from the design contract's capability table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `Workspace.spec.replicas` above 1.
    pub workspace_replicas: bool,
    /// `ServiceScale`.
    pub service_scale: bool,
    /// `DomainBinding`.
    pub domain_binding: bool,
    /// `spec.strategy: BlueGreen`.
    pub blue_green: bool,
}

impl Capabilities {
    /// The capability table of the design contract.
    pub fn of(platform: PlatformType) -> Capabilities {
        match platform {
            PlatformType::Codesphere => Capabilities {
                workspace_replicas: true,
                service_scale: true,
                domain_binding: true,
                blue_green: true,
            },
            PlatformType::Devopness => Capabilities {
                workspace_replicas: false,
                service_scale: false,
                domain_binding: true,
                blue_green: false,
            },
            PlatformType::Spheron => Capabilities {
                workspace_replicas: true,
                service_scale: true,
                domain_binding: true,
                blue_green: false,
            },
            PlatformType::PuppetCodeManager => Capabilities {
                workspace_replicas: false,
                service_scale: false,
                domain_binding: false,
                blue_green: false,
            },
        }
    }
}

/// A credential read from a Secret. Its `Debug` never shows the value, so it cannot leak
/// through logs or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: impl Into<String>) -> Self {
        Credential(value.into())
    }
    /// The secret value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Everything needed to talk to one platform account.
#[derive(Clone)]
pub struct Connection {
    pub platform: PlatformType,
    /// Base URL without a trailing slash.
    pub endpoint: String,
    pub credential: Credential,
    /// Extra PEM CA certificates to trust.
    pub ca_pem: Option<String>,
    pub defaults: PlatformDefaults,
    pub budget: Arc<RateBudget>,
    pub metrics: crate::core::metrics::Metrics,
    /// For `bosun plan`: the write funnel holds every step, and the HTTP layer refuses any
    /// write that would still reach it, so nothing is ever sent.
    pub read_only: bool,
}

/// A platform account bosun can act on.
#[async_trait]
pub trait Platform: Send + Sync {
    fn platform_type(&self) -> PlatformType;

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(self.platform_type())
    }

    /// Proves the credential with an authenticated call; returns who it belongs to.
    async fn verify(&self) -> Result<String, PlatformError>;

    /// How this platform manages Workspaces, once its mapping exists.
    fn workspaces(&self) -> Option<&dyn drivers::WorkspaceDriver> {
        None
    }

    /// How this platform scales services, where it can.
    fn service_scales(&self) -> Option<&dyn drivers::ServiceScaleDriver> {
        None
    }

    /// How this platform serves custom domains, where it can.
    fn domains(&self) -> Option<&dyn drivers::DomainDriver> {
        None
    }
}

/// What builds platform clients. The platforms supply it, so the core reaches every platform
/// through this one trait object and names none of them.
pub trait Connector: Send + Sync {
    /// The platform's public URL, used when `spec.endpoint` is omitted.
    fn default_endpoint(&self, platform: PlatformType) -> Option<&'static str>;
    /// The documented (or a conservative) request limit per minute of the platform.
    fn default_requests_per_minute(&self, platform: PlatformType) -> u32;
    /// Builds the platform client for a connection.
    fn connect(&self, connection: Connection) -> Result<Arc<dyn Platform>, PlatformError>;
    /// The client last remembered for `key` if it was built from `fingerprint`.
    fn cached(&self, key: &str, fingerprint: u64) -> Option<Arc<dyn Platform>>;
    /// The client last remembered for `key`, whatever it was built from.
    fn last(&self, key: &str) -> Option<Arc<dyn Platform>>;
    /// Remembers the client built for `key` from `fingerprint`.
    fn remember(&self, key: &str, fingerprint: u64, platform: Arc<dyn Platform>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let c = Credential::new("s3cr3t-token");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Some(c)).contains("s3cr3t"));
    }

    #[test]
    fn transient_errors_are_retried_and_user_errors_are_not() {
        for kind in [
            ErrorKind::RateLimited,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Conflict,
        ] {
            assert!(PlatformError::new(kind, "x").is_transient(), "{kind:?}");
        }
        for kind in [
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::Invalid,
            ErrorKind::QuotaExceeded,
            ErrorKind::Tls,
        ] {
            assert!(!PlatformError::new(kind, "x").is_transient(), "{kind:?}");
        }
    }

    #[test]
    fn capability_table_matches_the_design() {
        assert!(Capabilities::of(PlatformType::Codesphere).service_scale);
        assert!(!Capabilities::of(PlatformType::Devopness).workspace_replicas);
        assert!(Capabilities::of(PlatformType::Devopness).domain_binding);
        assert!(Capabilities::of(PlatformType::Spheron).workspace_replicas);
        let cm = Capabilities::of(PlatformType::PuppetCodeManager);
        assert!(!cm.workspace_replicas && !cm.service_scale && !cm.domain_binding);
    }
}
