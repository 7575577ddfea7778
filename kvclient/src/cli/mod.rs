//! kvctl's command line: the clap definitions and the context every command
//! runs with. The commands themselves are in `kv` (keys and values),
//! `cluster` (membership and status) and `misc` (health, version, bench);
//! all output goes through `print`.

pub mod cluster;
pub mod kv;
pub mod misc;
pub mod print;

use clap::{Parser, Subcommand};
use kvclient::Client;

use crate::bench::BenchArgs;
use print::Output;

#[derive(Parser, Debug)]
#[command(name = "kvctl", version, about = "raftkv command-line client")]
pub struct Cli {
    /// Comma-separated node URLs; each is tried in turn.
    // `global`: accepted after the subcommand too (`kvctl get k --endpoints ...`).
    #[arg(
        long,
        env = "KVCTL_ENDPOINTS",
        default_value = "http://127.0.0.1:7379",
        value_delimiter = ',',
        global = true
    )]
    pub endpoints: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,

    /// CA bundle (PEM) to verify https endpoints with.
    #[arg(long, env = "KVCTL_CACERT", global = true)]
    pub cacert: Option<std::path::PathBuf>,

    /// Client certificate (PEM) to present; its CN is the user name.
    // Ids apart from the flag names: subcommands have a `key` argument.
    #[arg(
        long = "cert",
        env = "KVCTL_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        env = "KVCTL_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,

    /// Accept any server certificate (trying things out only).
    #[arg(long, env = "KVCTL_INSECURE_SKIP_TLS_VERIFY", global = true)]
    pub insecure_skip_tls_verify: bool,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Write a value (`-` reads it from stdin).
    Put(kv::PutArgs),
    /// Read a value (raw bytes to stdout in table mode), or with --prefix every key under a prefix.
    Get(kv::GetArgs),
    /// Delete a key, every key under a prefix (--prefix), or the range [KEY, RANGE_END).
    Del(kv::DelArgs),
    /// List keys in order.
    Ls(kv::LsArgs),
    /// Run a transaction given as JSON (see docs/api.md), from a file or `-` for stdin.
    Txn(kv::TxnArgs),
    /// Status of every endpoint.
    Status,
    /// Cluster membership.
    Members,
    /// Initialize a cluster of every endpoint's node (or of the --member list) on the first endpoint.
    Init(cluster::InitArgs),
    /// Add a learner.
    AddLearner(cluster::AddLearnerArgs),
    /// Make learners voters (keeps the current voters).
    Promote(cluster::PromoteArgs),
    /// Remove a learner or voter.
    Remove(cluster::IdArg),
    /// Hand leadership to a voter.
    TransferLeader(cluster::IdArg),
    /// Liveness and readiness of every endpoint.
    Health,
    /// kvctl's version and the version of every endpoint's node.
    Version,
    /// Closed-loop load generator.
    Bench(BenchArgs),
}

/// What every command gets: a client over all endpoints (with retries) and
/// the output format.
pub struct Ctx {
    pub client: Client,
    pub out: Output,
}

impl Ctx {
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        let tls = kvclient::TlsOptions {
            ca: cli.cacert.clone(),
            cert: cli.client_cert.clone(),
            key: cli.client_key.clone(),
            insecure_skip_verify: cli.insecure_skip_tls_verify,
        };
        Ok(Ctx {
            client: Client::with_tls(&cli.endpoints, &tls)?,
            out: cli.output,
        })
    }

    /// The validated endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        self.client.endpoints()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kvctl").chain(args.iter().copied()))
    }

    fn parsed(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn tls_flags_are_global_and_come_in_pairs() {
        let cli = parsed(&[
            "get", "k", "--cacert", "ca.crt", "--cert", "u.crt", "--key", "u.key",
        ]);
        assert!(matches!(&cli.cmd, Cmd::Get(g) if g.key == "k"));
        assert_eq!(cli.cacert.as_deref(), Some(std::path::Path::new("ca.crt")));
        assert_eq!(
            cli.client_key.as_deref(),
            Some(std::path::Path::new("u.key"))
        );
        assert!(
            parse(&["--cert", "u.crt", "status"]).is_err(),
            "--cert without --key"
        );
        let ctx = Ctx::new(&parsed(&["--cacert", "/nonexistent/ca.crt", "status"]));
        let err = ctx
            .err()
            .expect("a missing CA file is an error")
            .to_string();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        for args in [
            &["-o", "json", "get", "foo"][..],
            &["get", "foo", "-o", "json"],
            &["get", "-o", "json", "foo"],
        ] {
            let cli = parsed(args);
            assert_eq!(cli.output, Output::Json, "{args:?}");
            assert!(
                matches!(&cli.cmd, Cmd::Get(g) if g.key == "foo"),
                "{args:?}"
            );
        }
        let cli = parsed(&["status", "--endpoints", "http://a:1,http://b:2"]);
        assert_eq!(cli.endpoints, ["http://a:1", "http://b:2"]);
        let cli = parsed(&["--endpoints", "http://a:1", "members", "--output", "table"]);
        assert_eq!(cli.endpoints, ["http://a:1"]);
        assert_eq!(cli.output, Output::Table);
    }

    #[test]
    fn get_flags() {
        let cli = parsed(&["get", "app/", "--prefix", "--keys-only", "--limit", "5"]);
        let Cmd::Get(g) = cli.cmd else {
            panic!("not get")
        };
        assert!(g.prefix && g.keys_only && !g.print_value_only);
        assert_eq!(g.limit, Some(5));
        // Accepted without --prefix (it changes nothing there, as in etcdctl).
        assert!(parse(&["get", "k", "--print-value-only", "--serializable"]).is_ok());
        for bad in [
            &["get", "k", "--keys-only", "--print-value-only"][..],
            &["get", "k", "--limit", "5"],
            &["get", "k", "--prefix", "--limit", "0"],
            &["get", "k", "--prefix", "--limit", "-1"],
            &["get"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn del_takes_a_key_a_prefix_or_a_range() {
        let Cmd::Del(d) = parsed(&["del", "a", "b"]).cmd else {
            panic!("not del")
        };
        assert_eq!((d.key.as_str(), d.range_end.as_deref()), ("a", Some("b")));
        assert!(!d.prefix);
        let Cmd::Del(d) = parsed(&["del", "--prefix", ""]).cmd else {
            panic!("not del")
        };
        assert!(d.prefix && d.key.is_empty() && d.range_end.is_none());
        let Cmd::Del(d) = parsed(&["del", "k", "--if-revision", "3"]).cmd else {
            panic!("not del")
        };
        assert_eq!(d.if_revision, Some(3));
        for bad in [
            &["del", "a", "b", "--prefix"][..],
            &["del", "a", "--prefix", "--if-revision", "3"],
            &["del", "a", "b", "--if-revision", "3"],
            &["del", "a", "b", "c"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn the_other_commands_still_parse() {
        for args in [
            &["put", "k", "-", "--if-absent"][..],
            &[
                "ls",
                "--prefix",
                "p",
                "--start",
                "s",
                "--limit",
                "3",
                "--keys-only",
            ],
            &["txn", "-"],
            &["init", "--member", "1=http://p:1,http://c:1"],
            &["init"],
            &[
                "add-learner",
                "4",
                "http://p:4",
                "http://c:4",
                "--name",
                "n4",
            ],
            &["promote", "4", "5"],
            &["remove", "4"],
            &["transfer-leader", "2"],
            &["health"],
            &["version"],
            &["bench", "--clients", "2", "--duration", "1"],
        ] {
            parsed(args);
        }
        assert!(parse(&["promote"]).is_err());
    }
}
