//! Command line and environment -> `Config`. Every flag also reads
//! `KVNODE_<FLAG>` (see docs/api.md for the table).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "kvnode", version, about = "raftkv replicated key-value node")]
pub struct Config {
    /// Raft node id. Optional: kept in the data dir; generated on an empty one.
    #[arg(long, env = "KVNODE_ID")]
    pub id: Option<u64>,

    /// Member name kept in the membership (in Kubernetes: the pod name). Default: $HOSTNAME.
    #[arg(long, env = "KVNODE_NAME")]
    pub name: Option<String>,

    /// RocksDB and all node state.
    #[arg(long, env = "KVNODE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Client + admin HTTP listener.
    #[arg(long, env = "KVNODE_CLIENT_ADDR", default_value = "0.0.0.0:7379")]
    pub client_addr: SocketAddr,

    /// Raft RPC listener (never expose it to clients).
    #[arg(long, env = "KVNODE_PEER_ADDR", default_value = "0.0.0.0:7380")]
    pub peer_addr: SocketAddr,

    /// Client URL other nodes and clients are told. Default: derived from --client-addr.
    #[arg(long, env = "KVNODE_ADVERTISE_CLIENT_URL")]
    pub advertise_client_url: Option<String>,

    /// Peer URL other nodes are told. Default: derived from --peer-addr.
    #[arg(long, env = "KVNODE_ADVERTISE_PEER_URL")]
    pub advertise_peer_url: Option<String>,

    /// Single node that initializes itself: the zero-config way to try raftkv.
    #[arg(long, env = "KVNODE_DEV")]
    pub dev: bool,

    /// Leader heartbeat interval.
    #[arg(long, env = "KVNODE_HEARTBEAT_INTERVAL_MS", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,

    /// Minimum election timeout; the maximum is twice this.
    #[arg(long, env = "KVNODE_ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,

    /// Build a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, env = "KVNODE_SNAPSHOT_LOG_THRESHOLD", default_value_t = 10_000)]
    pub snapshot_log_threshold: u64,

    /// Largest accepted value in bytes.
    #[arg(long, env = "KVNODE_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// How long a graceful shutdown may take before the node exits anyway.
    #[arg(long, env = "KVNODE_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,

    /// Log output: `text` or `json`.
    #[arg(long, env = "KVNODE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {msg}")]
    Invalid { flag: &'static str, msg: String },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |flag, msg: &str| {
            Err(ConfigError::Invalid {
                flag,
                msg: msg.to_owned(),
            })
        };
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat-interval-ms", "must be > 0");
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return bad(
                "election-timeout-ms",
                "must be at least twice the heartbeat interval",
            );
        }
        if self.snapshot_log_threshold == 0 {
            return bad("snapshot-log-threshold", "must be > 0");
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return bad("max-value-bytes", "must be between 1 and 67108864");
        }
        for (flag, url) in [
            ("advertise-client-url", &self.advertise_client_url),
            ("advertise-peer-url", &self.advertise_peer_url),
        ] {
            if let Some(u) = url {
                let ok = url::Url::parse(u)
                    .map(|p| p.scheme() == "http" && p.host().is_some())
                    .unwrap_or(false);
                if !ok {
                    return bad(flag, "must be an http:// URL with a host");
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> String {
        self.name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_default()
    }

    pub fn client_url(&self) -> String {
        self.advertise_client_url
            .clone()
            .unwrap_or_else(|| derive_url(self.client_addr))
    }

    pub fn peer_url(&self) -> String {
        self.advertise_peer_url
            .clone()
            .unwrap_or_else(|| derive_url(self.peer_addr))
    }
}

/// A listener on a wildcard address is advertised as 127.0.0.1: good for a
/// laptop; anything multi-host passes --advertise-*-url explicitly.
fn derive_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("http://{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_derive_from_listeners() {
        let c = Config::parse_from(["kvnode", "--client-addr", "127.0.0.2:9000"]);
        assert_eq!(c.client_url(), "http://127.0.0.2:9000");
        assert_eq!(c.peer_url(), "http://127.0.0.1:7380");
    }

    #[test]
    fn bad_timings_are_rejected() {
        let c = Config::parse_from([
            "kvnode",
            "--heartbeat-interval-ms",
            "500",
            "--election-timeout-ms",
            "600",
        ]);
        assert!(c.validate().is_err());
        let c = Config::parse_from(["kvnode", "--advertise-peer-url", "localhost:1"]);
        assert!(c.validate().is_err());
    }
}
