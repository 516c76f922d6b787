//! Codesphere: API client, simulator and mapping.

pub mod client;
#[cfg(test)]
mod conformance;
pub mod domains;
pub mod mapping;
pub mod sim;

pub use client::Codesphere;
