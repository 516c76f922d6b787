//! `bosun sim`: the local platform simulators, in the foreground.

use crate::platform::codemanager::sim as codemanager;
use crate::platform::codesphere::sim as codesphere;
use crate::platform::devopness::sim as devopness;
use crate::platform::spheron::sim as spheron;
use crate::sim::{bind, SimConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The bearer token every simulator accepts.
    #[arg(long, default_value = "sim-token", env = "BOSUN_SIM_TOKEN")]
    pub token: String,
    /// Codesphere listen address (the API is served under `/api`).
    #[arg(long, default_value = "127.0.0.1:18081")]
    pub codesphere_addr: SocketAddr,
    /// Devopness listen address (the API is served at the root).
    #[arg(long, default_value = devopness::DEFAULT_ADDR)]
    pub devopness_addr: SocketAddr,
    /// Spheron listen address (the API is served at the root, under `/v1`).
    #[arg(long, default_value = spheron::DEFAULT_ADDR)]
    pub spheron_addr: SocketAddr,
    /// Puppet Enterprise Code Manager listen address (HTTPS; the API is served under
    /// `/code-manager`, RBAC token minting under `/rbac-api`).
    #[arg(long, default_value = codemanager::DEFAULT_ADDR)]
    pub codemanager_addr: SocketAddr,
    /// Where to write the Code Manager simulator's CA certificate (PEM) [default:
    /// `${TMPDIR:-/tmp}/bosun-sim/codemanager-ca.pem`].
    #[arg(long)]
    pub codemanager_ca_file: Option<PathBuf>,
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
    let dv = devopness::DevopnessSim::new(&config);
    let dv_server = bind(args.devopness_addr, devopness::router(dv)).await?;
    println!(
        "devopness simulator: http://{} (token from --token; project {}, environment {})",
        dv_server.local_addr,
        devopness::DEFAULT_PROJECT_ID,
        devopness::DEFAULT_ENVIRONMENT_ID
    );
    let sp = spheron::SpheronSim::new(&config);
    let sp_server = bind(args.spheron_addr, spheron::router(sp)).await?;
    println!(
        "spheron simulator: http://{} (token from --token; organization {})",
        sp_server.local_addr,
        spheron::DEFAULT_ORGANIZATION_ID
    );
    let cm = codemanager::CodeManagerSim::new(&config)?;
    let ca_file = args
        .codemanager_ca_file
        .clone()
        .unwrap_or_else(default_codemanager_ca_file);
    let cm_server = codemanager::serve(args.codemanager_addr, &cm).await?;
    // Written once the server listens, so a script that waits for the file can connect.
    write_ca_file(&ca_file, &cm.ca_pem())?;
    println!(
        "codemanager simulator: {}{} (token from --token, or mint one at /rbac-api/v1/auth/token \
         as {}/{}); CA certificate: {}",
        cm_server.base_url(),
        codemanager::API_PREFIX,
        codemanager::DEFAULT_LOGIN,
        codemanager::DEFAULT_PASSWORD,
        ca_file.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `${TMPDIR:-/tmp}/bosun-sim/codemanager-ca.pem`.
fn default_codemanager_ca_file() -> PathBuf {
    std::env::temp_dir()
        .join("bosun-sim")
        .join("codemanager-ca.pem")
}

/// Writes the CA certificate (creating the directory if needed) through a temporary file, so a
/// reader never sees half a certificate, nor the previous run's once this returns.
fn write_ca_file(path: &Path, pem: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, pem)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod codemanager_cli_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn codemanager_flags_default_to_the_design() {
        let cli = Cli::try_parse_from(["bosun"]).expect("parse");
        assert_eq!(cli.sim.codemanager_addr.to_string(), "127.0.0.1:18170");
        assert_eq!(cli.sim.devopness_addr.to_string(), "127.0.0.1:18082");
        assert_eq!(cli.sim.spheron_addr.to_string(), "127.0.0.1:18083");
        assert_eq!(cli.sim.codemanager_ca_file, None);
        assert!(default_codemanager_ca_file().ends_with("bosun-sim/codemanager-ca.pem"));
        let cli = Cli::try_parse_from([
            "bosun",
            "--codemanager-addr",
            "127.0.0.1:0",
            "--codemanager-ca-file",
            "/x/ca.pem",
        ])
        .expect("parse");
        assert_eq!(cli.sim.codemanager_addr.port(), 0);
        assert_eq!(
            cli.sim.codemanager_ca_file,
            Some(PathBuf::from("/x/ca.pem"))
        );
    }

    #[test]
    fn codemanager_ca_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("bosun-cli-test-{}", std::process::id()));
        let path = dir.join("nested").join("ca.pem");
        write_ca_file(&path, "old").expect("write");
        write_ca_file(&path, "-----BEGIN CERTIFICATE-----\n").expect("rewrite");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "-----BEGIN CERTIFICATE-----\n"
        );
        let leftovers = std::fs::read_dir(path.parent().expect("parent"))
            .expect("dir")
            .count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
