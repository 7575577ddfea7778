//! Command line of `raftkv-operator`. Every `run` flag also reads an
//! environment variable `RAFTKV_OPERATOR_<FLAG>` (what the Helm chart sets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::build::OperatorPeer;
use crate::controller::{LeaderElection, Settings};
use crate::plan::PlanConfig;

#[derive(Debug, Parser)]
#[command(
    name = "raftkv-operator",
    version,
    about = "Kubernetes operator for raftkv KvClusters"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print a CustomResourceDefinition as YAML (crds/NAME.raftkv.io.yaml).
    Crd {
        #[arg(value_enum, default_value = "kvclusters")]
        name: CrdName,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrdName {
    Kvclusters,
    Kvbackups,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "RAFTKV_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Address of the /metrics and /healthz HTTP server.
    #[arg(
        long,
        env = "RAFTKV_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that
    /// several replicas can run.
    #[arg(long, env = "RAFTKV_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    #[arg(
        long,
        env = "RAFTKV_OPERATOR_LEASE_NAME",
        default_value = "raftkv-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to the operator pod's namespace
    /// (env POD_NAMESPACE), else the watched namespace, else `default`.
    #[arg(long, env = "RAFTKV_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a learner must stay caught up and healthy before it is
    /// promoted to voter (e.g. `30s`, `500ms`, `2m`).
    #[arg(long, env = "RAFTKV_OPERATOR_STABILIZATION", default_value = "30s", value_parser = parse_duration)]
    pub stabilization: Duration,
    /// A learner is caught up when at most this many log entries behind.
    #[arg(long, env = "RAFTKV_OPERATOR_MAX_LAG", default_value_t = 1000)]
    pub max_lag: u64,
    /// DNS suffix of the Kubernetes cluster, used in the nodes' advertised URLs.
    #[arg(
        long,
        env = "RAFTKV_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Namespace of the operator's pods, let through to the kvnode client
    /// port by every cluster's NetworkPolicy (with `networkPolicy.clientFrom`).
    #[arg(long, env = "RAFTKV_OPERATOR_OPERATOR_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Labels of the operator's pods, `k=v,k=v` (the Helm chart passes its
    /// selector labels). Empty: the NetworkPolicies name no operator peer.
    #[arg(long, env = "RAFTKV_OPERATOR_OPERATOR_POD_LABELS", default_value = "", value_parser = parse_labels)]
    pub operator_pod_labels: BTreeMap<String, String>,
    /// A rollout stops (condition Degraded=True/RolloutStuck) when a pod
    /// it replaced is not back Ready and caught up within this time.
    #[arg(long, env = "RAFTKV_OPERATOR_ROLLOUT_DEADLINE", default_value = "5m", value_parser = parse_duration)]
    pub rollout_deadline: Duration,
    /// Timeout of one node status call.
    #[arg(long, env = "RAFTKV_OPERATOR_NODE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// Timeout of one membership call (init, add learner, set voters, ...).
    #[arg(long, env = "RAFTKV_OPERATOR_STEP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub step_timeout: Duration,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,raftkv_operator=debug`).
    #[arg(long, env = "RAFTKV_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "RAFTKV_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            namespace: self.watch_namespace.clone(),
            plan: PlanConfig {
                stabilization: self.stabilization,
                max_lag: self.max_lag,
                cluster_domain: self.cluster_domain.clone(),
                operator_peer: OperatorPeer {
                    namespace: self.operator_namespace.clone(),
                    pod_labels: self.operator_pod_labels.clone(),
                },
                rollout_deadline: self.rollout_deadline,
            },
            node_timeout: self.node_timeout,
            step_timeout: self.step_timeout,
        }
    }

    /// `pod_namespace` and `identity` come from the environment of the
    /// operator pod (downward API); passed in to keep this testable.
    pub fn leader_election(
        &self,
        pod_namespace: Option<String>,
        identity: String,
    ) -> Option<LeaderElection> {
        self.leader_election.then(|| LeaderElection {
            lease_name: self.lease_name.clone(),
            lease_namespace: self
                .lease_namespace
                .clone()
                .or(pod_namespace)
                .or_else(|| self.watch_namespace.clone())
                .unwrap_or_else(|| "default".to_owned()),
            identity,
        })
    }
}

/// `k=v,k2=v2`; empty text is no labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("invalid label {pair:?}: expected key=value")),
        })
        .collect()
}

/// `500ms`, `30s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 30s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("invalid duration unit in {text:?}: use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn operator_pod_labels_parse() {
        assert_eq!(parse_labels(""), Ok(BTreeMap::new()));
        assert_eq!(
            parse_labels("a=1, b=x"),
            Ok(BTreeMap::from([
                ("a".into(), "1".into()),
                ("b".into(), "x".into())
            ]))
        );
        assert!(parse_labels("novalue").is_err());
    }

    #[test]
    fn run_flags_have_defaults_and_lease_namespace_falls_back() {
        let cli = Cli::try_parse_from(["raftkv-operator", "run", "--stabilization", "200ms"])
            .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(
            args.settings().plan.stabilization,
            Duration::from_millis(200)
        );
        assert_eq!(args.metrics_addr.port(), 8080);
        assert_eq!(
            args.settings().plan.rollout_deadline,
            Duration::from_secs(300)
        );
        let election = args
            .leader_election(Some("ops".into()), "op-0".into())
            .expect("on by default");
        assert_eq!(
            (
                election.lease_namespace.as_str(),
                election.identity.as_str()
            ),
            ("ops", "op-0")
        );

        let cli = Cli::try_parse_from(["raftkv-operator", "run", "--leader-election=false"])
            .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert!(args.leader_election(None, "x".into()).is_none());
    }
}
