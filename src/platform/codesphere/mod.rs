//! Codesphere: API client, simulator and mapping.

pub mod client;
#[cfg(all(test, feature = "sim"))]
mod conformance;
mod deletion;
pub mod domains;
mod errors;
pub mod mapping;
mod scale;
#[cfg(feature = "sim")]
pub mod sim;
mod wire;
mod workspace;

pub use client::Codesphere;
