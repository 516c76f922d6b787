//! bosun: a Kubernetes operator that keeps workspaces, replica counts and domain bindings on
//! deployment platforms in line with custom resources.
//!
//! - [`api`]: the CRD types.
//! - [`core`]: the provider-neutral controller core (reconcile loop, conditions, backoff, ...).
//! - [`controllers`]: one reconciler per kind.
//! - [`platform`]: the platform seam and one folder per platform (client, simulator, mapping).
//! - `sim` (cargo feature `sim`): the simulator framework behind `bosun sim`.

pub mod api;
pub mod cli;
pub mod controllers;
pub mod core;
pub mod platform;
#[cfg(feature = "sim")]
pub mod sim;
