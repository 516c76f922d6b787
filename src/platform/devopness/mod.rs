//! Devopness: API client, simulator and mapping.

pub mod client;
pub mod domains;
mod errors;
pub mod mapping;
pub mod sim;
mod wire;
