//! The provider-neutral controller core: it knows Kubernetes and the reconcile loop, and no
//! platform.

pub mod annotations;
pub mod backoff;
pub mod budget;
pub mod conditions;
pub mod context;
pub mod deletion;
pub mod drivers;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod leader;
pub mod locate;
pub mod metrics;
pub mod plan;
pub mod reason;
pub mod reconciler;
pub mod references;
pub mod seam;
