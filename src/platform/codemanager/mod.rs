//! Puppet Enterprise Code Manager: API client, simulator and mapping.

pub mod client;
mod errors;
pub mod mapping;
mod rbac;
#[cfg(feature = "sim")]
pub mod sim;
mod wire;
