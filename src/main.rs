use bosun::cli::{init_logging, Cli, Command, CrdFormat};
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => {
            let rendered = match args.format {
                CrdFormat::Yaml => bosun::api::crds_yaml(&bosun::api::all_crds()),
                CrdFormat::Markdown => Ok(bosun::api::reference::markdown()),
            };
            match rendered {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bosun crds: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            init_logging(cli.log_format);
            match bosun::cli::run::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "bosun run failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plan(args) => {
            // Quiet unless asked: the plan itself goes to stdout.
            if std::env::var_os("RUST_LOG").is_some() {
                init_logging(cli.log_format);
            }
            match bosun::cli::plan::run(args).await {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("bosun plan: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            init_logging(cli.log_format);
            match bosun::sim::cli::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "bosun sim failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
