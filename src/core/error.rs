//! Errors of one reconcile, classified by what bosun does next.

use super::reason::Reason;
use super::seam::PlatformError;
use std::time::Duration;

/// Why a reconcile could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Talking to the Kubernetes API failed; retried with backoff.
    #[error("kubernetes API: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// The platform answered with an error; transient ones are retried, others stall.
    #[error("{0}")]
    Platform(#[from] PlatformError),
    /// Something the object depends on is missing or not ready yet; bosun waits for it (a watch
    /// triggers the next reconcile as soon as it appears).
    #[error("{message}")]
    Waiting { reason: Reason, message: String },
    /// The user must change something; bosun waits for that change.
    #[error("{message}")]
    UserFixable { reason: Reason, message: String },
}

impl ReconcileError {
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        ReconcileError::Kube {
            context: context.into(),
            source,
        }
    }

    pub fn waiting(reason: Reason, message: impl Into<String>) -> Self {
        ReconcileError::Waiting {
            reason,
            message: message.into(),
        }
    }

    pub fn user(reason: Reason, message: impl Into<String>) -> Self {
        ReconcileError::UserFixable {
            reason,
            message: message.into(),
        }
    }

    /// The condition reason.
    pub fn reason(&self) -> Reason {
        match self {
            ReconcileError::Kube { .. } => Reason::KubernetesApiError,
            ReconcileError::Platform(e) => e.reason(),
            ReconcileError::Waiting { reason, .. } | ReconcileError::UserFixable { reason, .. } => {
                *reason
            }
        }
    }

    /// Whether retrying with backoff can help without a change from the user.
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Kube { .. } => true,
            ReconcileError::Platform(e) => e.is_transient(),
            ReconcileError::Waiting { .. } => false,
            ReconcileError::UserFixable { .. } => false,
        }
    }

    /// The platform's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReconcileError::Platform(e) => e.retry_after,
            _ => None,
        }
    }
}
