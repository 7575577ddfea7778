//! kvctl's command line: the clap definitions and the context every command
//! runs with. The commands themselves are in `kv` (keys and values),
//! `cluster` (membership and status), `auth` (users, roles, the auth
//! switch), `watch` (changes as they happen), `lease` (leases),
//! `concurrency` (lock, elect), `snapshot` (backups) and `misc` (health,
//! version, bench); all output goes through `print`.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod kv;
pub mod lease;
pub mod misc;
pub mod print;
pub mod snapshot;
pub mod watch;

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

    /// NAME[:PASSWORD] to authenticate as; without the password it is asked for.
    // `hide_env_values`: --help must not print a password taken from the
    // environment.
    #[arg(long, env = "KVCTL_USER", global = true, hide_env_values = true)]
    pub user: Option<auth::UserFlag>,

    /// Password of --user (then all of --user is the name, colons included).
    #[arg(
        long,
        env = "KVCTL_PASSWORD",
        global = true,
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<auth::Secret>,

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
    /// Print changes to a key, a prefix (--prefix) or a range (--range-end) as they happen, until Ctrl-C.
    Watch(watch::WatchArgs),
    /// Run a transaction given as JSON (see docs/api.md), from a file or `-` for stdin.
    Txn(kv::TxnArgs),
    /// Leases: grant, keep-alive, revoke, timetolive, list.
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Acquire a distributed lock; run a command while holding it (after `--`), or hold it until Ctrl-C.
    Lock(concurrency::LockArgs),
    /// Campaign for leadership with a proposal and lead until Ctrl-C, or (--listen) print each new leader.
    Elect(concurrency::ElectArgs),
    /// Backups: save a snapshot of the whole store, check a saved one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
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
    /// Disaster recovery: the first endpoint's node keeps its data and becomes the only voter (it restarts).
    ForceNewCluster(cluster::ForceNewClusterArgs),
    /// Liveness and readiness of every endpoint.
    Health,
    /// kvctl's version and the version of every endpoint's node.
    Version,
    /// Closed-loop load generator.
    Bench(BenchArgs),
    /// Turn authentication on or off, or show whether it is on.
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Users: add, delete, list, get, passwd, grant-role, revoke-role.
    #[command(subcommand)]
    User(auth::UserCmd),
    /// Roles and their permissions: add, delete, list, get, grant-permission, revoke-permission.
    #[command(subcommand)]
    Role(auth::RoleCmd),
}

/// An error that ends kvctl with this exit status and no message (the
/// command has said what it had to, or passes on a status, as `lock` does
/// its command's).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: how the long-running commands
/// (lock, elect, lease keep-alive) are told to stop. The handlers are in
/// place when this returns (before the command prints that it holds
/// something), not only once the future is first polled.
pub type Interrupt = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub fn on_interrupt() -> anyhow::Result<Interrupt> {
    use anyhow::Context;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
    }
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
        let mut client = Client::with_tls(&cli.endpoints, &tls)?;
        if let Some((name, password)) =
            auth::user_and_password(cli.user.as_ref(), cli.password.as_ref())?
        {
            // Asked for before the command runs, as etcdctl does; the
            // client authenticates with it on its first request.
            let password = match password {
                Some(p) => p,
                None => auth::read_password("Password: ", None)?,
            };
            client = client.with_credentials(name, password);
        }
        Ok(Ctx {
            client,
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
    fn user_and_password_are_global_flags() {
        let cli = parsed(&["get", "k", "--user", "root:pw"]);
        assert_eq!(cli.user, Some(auth::UserFlag("root:pw".into())));
        let cli = parsed(&["--user", "root", "--password", "pw", "status"]);
        assert_eq!(cli.password, Some(auth::Secret("pw".into())));
        // The parsed command line can be logged: no password in it.
        let shown = format!(
            "{:?}",
            parsed(&["--user", "a:pw1", "--password", "pw2", "status"])
        );
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
        // Credentials given whole need no prompt, and make the client
        // authenticate (whose Debug shows the user, not the password).
        let ctx = Ctx::new(&parsed(&["--user", "root:pw", "status"])).expect("ctx");
        let client = format!("{:?}", ctx.client);
        assert!(
            client.contains("\"root\"") && !client.contains("pw\""),
            "{client}"
        );
        let err = Ctx::new(&parsed(&["--user", ":pw", "status"]))
            .err()
            .expect("no name");
        assert!(err.to_string().contains("user name"), "{err}");
    }

    #[test]
    fn auth_user_and_role_commands_parse() {
        use auth::{AuthCmd, RoleCmd, UserCmd};
        assert!(matches!(
            parsed(&["auth", "enable"]).cmd,
            Cmd::Auth(AuthCmd::Enable)
        ));
        assert!(matches!(
            parsed(&["auth", "status"]).cmd,
            Cmd::Auth(AuthCmd::Status)
        ));
        assert!(matches!(
            parsed(&["auth", "disable"]).cmd,
            Cmd::Auth(AuthCmd::Disable)
        ));

        let Cmd::User(UserCmd::Add(a)) =
            parsed(&["user", "add", "bob", "--new-user-password", "x"]).cmd
        else {
            panic!("not user add")
        };
        assert_eq!(a.new_user_password, Some(auth::Secret("x".into())));
        assert!(a.interactive.interactive && !a.no_password);
        let Cmd::User(UserCmd::Add(a)) = parsed(&["user", "add", "bob", "--interactive=false"]).cmd
        else {
            panic!("not user add")
        };
        assert!(!a.interactive.interactive);
        let Cmd::User(UserCmd::Add(a)) = parsed(&["user", "add", "c", "--no-password"]).cmd else {
            panic!("not user add")
        };
        assert!(a.no_password);
        let Cmd::User(UserCmd::Passwd(a)) =
            parsed(&["user", "passwd", "bob", "--new-user-password", "y"]).cmd
        else {
            panic!("not user passwd")
        };
        assert_eq!(a.new_user_password, Some(auth::Secret("y".into())));
        let Cmd::User(UserCmd::GrantRole(a)) = parsed(&["user", "grant-role", "bob", "app"]).cmd
        else {
            panic!("not grant-role")
        };
        assert_eq!((a.name.as_str(), a.role.as_str()), ("bob", "app"));

        let Cmd::Role(RoleCmd::GrantPermission(g)) = parsed(&[
            "role",
            "grant-permission",
            "app",
            "READWRITE",
            "app/",
            "--prefix",
        ])
        .cmd
        else {
            panic!("not grant-permission")
        };
        assert_eq!(
            g.to_permission(),
            kvclient::Permission {
                permission: kvclient::PermissionKind::Readwrite,
                key: "app/".into(),
                range_end: None,
                prefix: true,
            }
        );
        let Cmd::Role(RoleCmd::GrantPermission(g)) =
            parsed(&["role", "grant-permission", "app", "read", "a", "c"]).cmd
        else {
            panic!("not grant-permission")
        };
        assert_eq!(g.to_permission().range_end.as_deref(), Some("c"));
        let Cmd::Role(RoleCmd::RevokePermission(r)) =
            parsed(&["role", "revoke-permission", "app", "", "--prefix"]).cmd
        else {
            panic!("not revoke-permission")
        };
        assert_eq!(
            r.keys.to_keys(),
            kvclient::PermissionKeys {
                key: String::new(),
                range_end: None,
                prefix: true,
            }
        );
        for args in [
            &["user", "list"][..],
            &["user", "get", "bob"],
            &["user", "get", "bob", "--detail"],
            &["user", "delete", "bob"],
            &["user", "revoke-role", "bob", "app"],
            &["role", "add", "app"],
            &["role", "get", "app"],
            &["role", "list"],
            &["role", "delete", "app"],
            &["role", "revoke-permission", "app", "a", "c"],
        ] {
            parsed(args);
        }
        for bad in [
            &[
                "user",
                "add",
                "bob",
                "--new-user-password",
                "x",
                "--no-password",
            ][..],
            &["user", "add", "bob", "--interactive", "false"],
            &["user", "grant-role", "bob"],
            &["role", "grant-permission", "app", "admin", "k"],
            &["role", "grant-permission", "app", "read"],
            &[
                "role",
                "grant-permission",
                "app",
                "read",
                "a",
                "c",
                "--prefix",
            ],
            &["role", "revoke-permission", "app", "a", "c", "--prefix"],
            &["--password", "pw", "status"],
            &["auth"],
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
