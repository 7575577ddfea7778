use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use raftkv_operator::cli::{Cli, Command, CrdName, LogFormat, RunArgs};
use raftkv_operator::{controller, crd, metrics};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { name } => {
            let yaml = match name {
                CrdName::Kvclusters => crd::crd_yaml(),
                CrdName::Kvbackups => crd::backup_crd_yaml(),
            };
            print!("{}", yaml.context("rendering the CRD")?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).context("invalid --log-level")?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(metrics::Metrics::default());
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone()));

    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("raftkv-operator-{}", std::process::id()));
    let election = args.leader_election(std::env::var("POD_NAMESPACE").ok(), identity);
    let result = tokio::select! {
        result = controller::run(client, args.settings(), metrics, election) => {
            result.context("controller")
        }
        served = server => match served {
            Ok(Ok(())) => Err(anyhow::anyhow!("metrics server stopped")),
            Ok(Err(e)) => Err(e).context("metrics server"),
            Err(e) => Err(e).context("metrics server task"),
        },
    };
    result
}
