//! Spheron (`api-v2.spheron.network`): API client, simulator and mapping.

pub mod client;
pub mod domains;
mod errors;
pub mod mapping;
#[cfg(feature = "sim")]
pub mod sim;
mod wire;
