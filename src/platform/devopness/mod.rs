//! Devopness: API client, simulator and mapping.

pub mod client;
pub mod mapping;
pub mod sim;
