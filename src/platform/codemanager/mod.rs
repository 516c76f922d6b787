//! Puppet Enterprise Code Manager: API client, simulator and mapping.

pub mod client;
pub mod mapping;
#[cfg(feature = "sim")]
pub mod sim;
