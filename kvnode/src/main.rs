use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use kvnode::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(kvnode::config::Tool::Certs(cmd)) = &config.command {
        return match kvnode::certs::run(cmd) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kvnode certs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let offline = match &config.command {
        Some(kvnode::config::Tool::Restore { snapshot }) => {
            Some(("restore", kvnode::offline::restore(&config, snapshot)))
        }
        Some(kvnode::config::Tool::ForceNewCluster) => Some((
            "force-new-cluster",
            kvnode::offline::force_new_cluster(&config),
        )),
        _ => None,
    };
    if let Some((tool, outcome)) = offline {
        return match outcome {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kvnode {tool}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_env("KVNODE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    if let Err(e) = kvnode::crash::announce() {
        eprintln!("kvnode: {e}");
        return ExitCode::from(2);
    }
    match kvnode::server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kvnode failed");
            eprintln!("kvnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}
