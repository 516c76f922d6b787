//! `bosun sim`: the local platform simulators, in the foreground.

use crate::platform::codesphere::sim as codesphere;
use crate::sim::{bind, SimConfig};
use std::net::SocketAddr;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The bearer token every simulator accepts.
    #[arg(long, default_value = "sim-token", env = "BOSUN_SIM_TOKEN")]
    pub token: String,
    /// Codesphere listen address (the API is served under `/api`).
    #[arg(long, default_value = "127.0.0.1:18081")]
    pub codesphere_addr: SocketAddr,
    /// Requests per minute each simulator answers per token before 429 (default: unlimited).
    #[arg(long)]
    pub rate_limit: Option<u32>,
}

/// Serves every simulator until Ctrl-C.
pub async fn run(args: SimArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = SimConfig {
        token: args.token.clone(),
        rate_limit_per_minute: args.rate_limit,
        ..SimConfig::default()
    };
    let cs = codesphere::CodesphereSim::new(&config);
    let server = bind(args.codesphere_addr, codesphere::router(cs)).await?;
    println!(
        "codesphere simulator: http://{}/api (token from --token)",
        server.local_addr
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
