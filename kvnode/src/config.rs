//! Command line and environment -> `Config`. Every flag also reads
//! `KVNODE_<FLAG>` (see docs/api.md for the table).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "kvnode", version, about = "raftkv replicated key-value node")]
pub struct Config {
    /// Raft node id. Optional: kept in the data dir; generated on an empty one.
    #[arg(long, global = true, env = "KVNODE_ID")]
    pub id: Option<u64>,

    /// Member name kept in the membership (in Kubernetes: the pod name). Default: $HOSTNAME.
    #[arg(long, global = true, env = "KVNODE_NAME")]
    pub name: Option<String>,

    /// RocksDB and all node state.
    #[arg(long, global = true, env = "KVNODE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Client + admin HTTP listener.
    #[arg(
        long,
        global = true,
        env = "KVNODE_CLIENT_ADDR",
        default_value = "0.0.0.0:7379"
    )]
    pub client_addr: SocketAddr,

    /// Raft RPC listener (never expose it to clients).
    #[arg(
        long,
        global = true,
        env = "KVNODE_PEER_ADDR",
        default_value = "0.0.0.0:7380"
    )]
    pub peer_addr: SocketAddr,

    /// Client URL other nodes and clients are told. Default: derived from --client-addr.
    #[arg(long, global = true, env = "KVNODE_ADVERTISE_CLIENT_URL")]
    pub advertise_client_url: Option<String>,

    /// Peer URL other nodes are told. Default: derived from --peer-addr.
    #[arg(long, global = true, env = "KVNODE_ADVERTISE_PEER_URL")]
    pub advertise_peer_url: Option<String>,

    /// Single node that initializes itself: the zero-config way to try raftkv.
    #[arg(long, env = "KVNODE_DEV")]
    pub dev: bool,

    /// Leader heartbeat interval.
    #[arg(long, env = "KVNODE_HEARTBEAT_INTERVAL_MS", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,

    /// Election timeout: a follower that hears nothing from a leader for
    /// this long (randomised up to 1.2x) campaigns.
    #[arg(long, env = "KVNODE_ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,

    /// Build a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, env = "KVNODE_SNAPSHOT_LOG_THRESHOLD", default_value_t = 100_000)]
    pub snapshot_log_threshold: u64,

    /// RocksDB block cache in MiB, shared by all column families; index and
    /// filter blocks are held in it too. With the memtables, this bounds
    /// what RocksDB holds in memory whatever the data size.
    #[arg(long, env = "KVNODE_ROCKSDB_BLOCK_CACHE_MB", default_value_t = 64)]
    pub rocksdb_block_cache_mb: usize,

    /// RocksDB memtables in MiB, all column families together.
    #[arg(long, env = "KVNODE_ROCKSDB_MEMTABLE_MB", default_value_t = 64)]
    pub rocksdb_memtable_mb: usize,

    /// Largest accepted value in bytes.
    #[arg(long, env = "KVNODE_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// How long a graceful shutdown may take before the node exits anyway.
    #[arg(long, env = "KVNODE_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,

    /// Log output: `text` or `json`.
    #[arg(long, env = "KVNODE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Client port TLS: this node's certificate chain (PEM). With
    /// --key-file, the client port speaks only TLS.
    #[arg(long, env = "KVNODE_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// Client port TLS: the private key of --cert-file (PEM).
    #[arg(long, env = "KVNODE_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// CA bundle (PEM) that client certificates are verified against. Alone,
    /// a certificate is optional but verified when presented.
    #[arg(long, env = "KVNODE_TRUSTED_CA_FILE", requires = "cert_file")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Refuse client connections without a certificate signed by
    /// --trusted-ca-file.
    #[arg(long, env = "KVNODE_CLIENT_CERT_AUTH", requires = "trusted_ca_file")]
    pub client_cert_auth: bool,

    /// Peer port mutual TLS: this node's certificate (PEM), presented as a
    /// server to peers and as a client on outgoing raft RPCs.
    #[arg(long, env = "KVNODE_PEER_CERT_FILE", requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,

    /// Peer port mutual TLS: the private key of --peer-cert-file (PEM).
    #[arg(long, env = "KVNODE_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,

    /// Peer port mutual TLS: the CA bundle (PEM) every peer certificate,
    /// incoming and outgoing, must be signed by.
    #[arg(long, env = "KVNODE_PEER_TRUSTED_CA_FILE", requires = "peer_cert_file")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "KVNODE_HEADER_TIMEOUT_MS", default_value_t = 15_000)]
    pub header_timeout_ms: u64,

    /// Byte budget of one response: a range page ends early (with a `next`
    /// cursor) before its keys and values pass it; a transaction whose gets
    /// would pass it is refused with 413.
    #[arg(long, env = "KVNODE_MAX_RESPONSE_BYTES", default_value_t = 16 << 20)]
    pub max_response_bytes: usize,

    /// Client requests served at once; more are answered 503 `unavailable`
    /// at once instead of queueing without bound.
    #[arg(long, env = "KVNODE_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Lifetime of the tokens `POST /v1/auth/authenticate` issues, in
    /// seconds (etcd's --auth-token-ttl).
    #[arg(long, env = "KVNODE_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// With auth enabled, `/metrics` needs an authenticated user too
    /// (default: open, as Prometheus scrapes without credentials).
    #[arg(long, env = "KVNODE_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// Open client connections beyond this are closed at once.
    #[arg(long, env = "KVNODE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Change history kept for watches, in seconds: events older than this
    /// are compacted (a watch from before them gets `compacted`).
    #[arg(long, env = "KVNODE_HISTORY_RETENTION_SECS", default_value_t = 600)]
    pub history_retention_secs: u64,

    /// At most this many revisions of history are kept, whatever their age
    /// (bounds the disk the history takes under heavy write load).
    #[arg(
        long,
        env = "KVNODE_HISTORY_MAX_REVISIONS",
        default_value_t = 2_000_000
    )]
    pub history_max_revisions: u64,

    /// Open watches on this node beyond this are refused with 503.
    #[arg(long, env = "KVNODE_MAX_WATCHERS", default_value_t = 10_000)]
    pub max_watchers: usize,

    /// A watch that falls this many revisions further behind the writes
    /// than it started is cancelled (`lagging`) and may resume.
    #[arg(long, env = "KVNODE_WATCH_MAX_LAG", default_value_t = 100_000)]
    pub watch_max_lag: u64,

    /// A tool instead of a node (see `kvnode certs --help`).
    #[command(subcommand)]
    pub command: Option<Tool>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// A small CA for clusters without one: writes PEM files into --dir.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Build the data dir of the first member of a NEW cluster from a
    /// snapshot (`kvctl snapshot save`): new cluster id, this node its only
    /// voter. Uses the node's flags (--data-dir, --id, --name,
    /// --advertise-*-url), which must be those it will start with. Refuses
    /// a data dir that holds a node, and a corrupt or truncated snapshot.
    Restore {
        /// The snapshot file.
        #[arg(long)]
        snapshot: PathBuf,
    },
    /// Disaster recovery, with the node stopped: keep this data dir's data
    /// and make its node the only voter of its cluster, dropping every
    /// other member and any log entry it had not applied. Only when a
    /// majority is lost for good; add new members as learners after.
    ForceNewCluster,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Create `ca.crt` and `ca.key` (kept if they exist).
    Ca {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue `<name>.crt`/`<name>.key` for a node (server and client use).
    Node {
        #[arg(long)]
        dir: PathBuf,
        /// Common name, and the file name.
        #[arg(long)]
        name: String,
        /// DNS name or IP address the node is reached at; repeat.
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Issue `<name>.crt`/`<name>.key` for a client; the common name is the
    /// user name the node sees.
    Client {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
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
        // openraft needs its shortest timeout (0.4 x this; see
        // node::election_timeouts) above the heartbeat interval.
        if self.election_timeout_ms < 3 * self.heartbeat_interval_ms {
            return bad(
                "election-timeout-ms",
                "must be at least three times the heartbeat interval",
            );
        }
        if self.snapshot_log_threshold == 0 {
            return bad("snapshot-log-threshold", "must be > 0");
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return bad("max-value-bytes", "must be between 1 and 67108864");
        }
        // Below a few MiB RocksDB flushes tiny files constantly; above 1 TiB
        // the shift to bytes would be a typo, not a setting.
        for (flag, mb) in [
            ("rocksdb-block-cache-mb", self.rocksdb_block_cache_mb),
            ("rocksdb-memtable-mb", self.rocksdb_memtable_mb),
        ] {
            if !(4..=1 << 20).contains(&mb) {
                return bad(flag, "must be between 4 and 1048576 (MiB)");
            }
        }
        if self.header_timeout_ms == 0 {
            return bad("header-timeout-ms", "must be > 0");
        }
        if self.max_connections == 0 {
            return bad("max-connections", "must be > 0");
        }
        if self.max_concurrent_requests == 0 {
            return bad("max-concurrent-requests", "must be > 0");
        }
        if self.history_retention_secs == 0 {
            return bad("history-retention-secs", "must be > 0");
        }
        if self.history_max_revisions == 0 {
            return bad("history-max-revisions", "must be > 0");
        }
        if self.max_watchers == 0 {
            return bad("max-watchers", "must be > 0");
        }
        if self.watch_max_lag == 0 {
            return bad("watch-max-lag", "must be > 0");
        }
        if self.auth_token_ttl == 0 {
            return bad("auth-token-ttl", "must be > 0");
        }
        if self.max_response_bytes < self.max_value_bytes {
            return bad(
                "max-response-bytes",
                "must be at least --max-value-bytes (one value must fit a response)",
            );
        }
        // An advertised URL names the scheme the listener really speaks, so
        // peers and clients never try plaintext against a TLS port.
        for (flag, url, tls) in [
            (
                "advertise-client-url",
                &self.advertise_client_url,
                self.client_tls().is_some(),
            ),
            (
                "advertise-peer-url",
                &self.advertise_peer_url,
                self.peer_tls().is_some(),
            ),
        ] {
            if let Some(u) = url {
                let want = if tls { "https" } else { "http" };
                let ok = url::Url::parse(u)
                    .map(|p| p.scheme() == want && p.host().is_some())
                    .unwrap_or(false);
                if !ok {
                    return Err(ConfigError::Invalid {
                        flag,
                        msg: format!("must be an {want}:// URL with a host"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The client listener's TLS files, when TLS is on.
    pub fn client_tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.cert_file.clone()?,
            key: self.key_file.clone()?,
            ca: self.trusted_ca_file.clone(),
        })
    }

    /// The peer listener's (and outgoing RPCs') TLS files, when TLS is on.
    pub fn peer_tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.peer_cert_file.clone()?,
            key: self.peer_key_file.clone()?,
            ca: Some(self.peer_trusted_ca_file.clone()?),
        })
    }

    pub fn client_auth(&self) -> crate::tls::ClientAuth {
        match (&self.trusted_ca_file, self.client_cert_auth) {
            (None, _) => crate::tls::ClientAuth::None,
            (Some(_), false) => crate::tls::ClientAuth::Optional,
            (Some(_), true) => crate::tls::ClientAuth::Required,
        }
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
            .unwrap_or_else(|| derive_url(self.client_addr, self.client_tls().is_some()))
    }

    pub fn peer_url(&self) -> String {
        self.advertise_peer_url
            .clone()
            .unwrap_or_else(|| derive_url(self.peer_addr, self.peer_tls().is_some()))
    }
}

/// A listener on a wildcard address is advertised as 127.0.0.1: good for a
/// laptop; anything multi-host passes --advertise-*-url explicitly.
fn derive_url(addr: SocketAddr, tls: bool) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{}", addr.port())
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
            "1400",
        ]);
        assert!(
            c.validate().is_err(),
            "openraft's 560 ms minimum is too close to 500 ms heartbeats"
        );
        let c = Config::parse_from([
            "kvnode",
            "--heartbeat-interval-ms",
            "500",
            "--election-timeout-ms",
            "1500",
        ]);
        assert!(c.validate().is_ok());
        let c = Config::parse_from(["kvnode", "--advertise-peer-url", "localhost:1"]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn memory_budgets_are_bounded() {
        let parse = |flag: &str, v: &str| Config::parse_from(["kvnode", flag, v]).validate();
        assert!(parse("--rocksdb-block-cache-mb", "256").is_ok());
        assert!(parse("--rocksdb-block-cache-mb", "0").is_err());
        assert!(parse("--rocksdb-memtable-mb", "3").is_err());
        assert!(parse("--rocksdb-memtable-mb", "2000000").is_err());
    }
}
