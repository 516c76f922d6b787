//! Codesphere: API client, simulator and mapping.

pub mod client;
#[cfg(test)]
mod conformance;
pub mod domains;
pub mod mapping;
pub mod sim;
#[cfg(test)]
mod spec_check;

pub use client::Codesphere;
