//! The `bosun` command line: `run`, `plan`, `crds`, `sim`.

pub mod plan;
pub mod run;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bosun",
    version,
    about = "Keeps workspaces, replicas and domains on deployment platforms in line with Kubernetes custom resources"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "BOSUN_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(run::RunArgs),
    /// Print every CRD as YAML, or the CRD reference as Markdown.
    Crds(CrdsArgs),
    /// Show what bosun would change at the platforms for some manifests, changing nothing.
    Plan(plan::PlanArgs),
    /// Run the local platform simulators.
    #[cfg(feature = "sim")]
    Sim(crate::sim::cli::SimArgs),
}

#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// `yaml`: the CRDs to apply (as in `crds/`); `markdown`: the field reference (as in
    /// `docs/reference/crds.md`).
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: CrdFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrdFormat {
    Yaml,
    Markdown,
}

/// Sets up logging; `RUST_LOG` refines the level (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_runtime::controller=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
