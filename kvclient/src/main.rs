//! kvctl: the raftkv command-line client.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kvclient::{
    AddLearnerRequest, Client, Consistency, InitRequest, MemberInfo, RangeOptions, TxnRequest,
};

mod bench;
mod table;

#[derive(Parser)]
#[command(name = "kvctl", version, about = "raftkv command-line client")]
struct Cli {
    /// Comma-separated node URLs; each is tried in turn.
    #[arg(
        long,
        env = "KVCTL_ENDPOINTS",
        default_value = "http://127.0.0.1:7379",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a value (`-` reads it from stdin).
    Put {
        key: String,
        value: String,
        /// Only write if the key does not exist.
        #[arg(long)]
        if_absent: bool,
        /// Only write if the key is at this revision (0 = absent).
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Read a value (raw bytes to stdout in table mode).
    Get {
        key: String,
        /// Serve from the contacted node's local state (possibly stale).
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// List keys in order.
    Ls {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        keys_only: bool,
    },
    /// Run a transaction given as JSON (see docs/api.md), from a file or `-` for stdin.
    Txn { file: String },
    /// Status of every endpoint.
    Status,
    /// Cluster membership.
    Members,
    /// Initialize a cluster on the first endpoint (alone, or with --member).
    Init {
        /// ID=PEER_URL,CLIENT_URL[,NAME]; repeat for each initial member.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add a learner.
    AddLearner {
        id: u64,
        peer_url: String,
        client_url: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Make learners voters (keeps the current voters).
    Promote {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Remove a learner or voter.
    Remove { id: u64 },
    /// Hand leadership to a voter.
    TransferLeader { id: u64 },
    /// Liveness and readiness of every endpoint.
    Health,
    /// Closed-loop load generator.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("kvctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.endpoints)?;
    let json = cli.output == Output::Json;
    match cli.cmd {
        Cmd::Put {
            key,
            value,
            if_absent,
            if_revision,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading value from stdin")?;
                buf
            } else {
                value.into_bytes()
            };
            let rev = match (if_absent, if_revision) {
                (true, Some(_)) => bail!("use either --if-absent or --if-revision"),
                (true, None) => client.put_if_absent(&key, value).await?,
                (false, Some(r)) => client.put_if_revision(&key, value, r).await?,
                (false, None) => client.put(&key, value).await?,
            };
            if json {
                print_json(&serde_json::json!({ "revision": rev }))?;
            } else {
                println!("OK revision {rev}");
            }
        }
        Cmd::Get { key, serializable } => {
            let c = if serializable {
                Consistency::Serializable
            } else {
                Consistency::Linearizable
            };
            let Some(got) = client.get_with(&key, c).await? else {
                bail!("key {key:?} not found");
            };
            if json {
                let v = kvclient::JsonValue::from_bytes(&got.value);
                print_json(&serde_json::json!({
                    "key": key, "value": v.value, "value_encoding": v.value_encoding,
                    "revision": got.revision,
                }))?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&got.value)?;
                if !got.value.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
            }
        }
        Cmd::Del { key, if_revision } => {
            let resp = match if_revision {
                Some(r) => client.delete_if_revision(&key, r).await?,
                None => client.delete(&key).await?,
            };
            if json {
                print_json(&resp)?;
            } else if resp.deleted {
                println!("deleted (revision {})", resp.revision);
            } else {
                println!("not found (revision {})", resp.revision);
            }
        }
        Cmd::Ls {
            prefix,
            start,
            limit,
            keys_only,
        } => {
            let resp = client
                .range(&RangeOptions {
                    prefix,
                    start,
                    limit,
                    keys_only,
                    consistency: Consistency::Linearizable,
                })
                .await?;
            if json {
                print_json(&resp)?;
            } else {
                let mut t = table::Table::new(&["KEY", "REVISION", "VALUE"]);
                for it in &resp.items {
                    let v = it
                        .value
                        .as_ref()
                        .map(|v| v.value.clone())
                        .unwrap_or_default();
                    t.row(vec![it.key.clone(), it.revision.to_string(), v]);
                }
                t.print();
                if let Some(n) = resp.next {
                    println!("(more: --start {n:?})");
                }
            }
        }
        Cmd::Txn { file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let txn: TxnRequest = serde_json::from_str(&text).context("parsing transaction")?;
            print_json(&client.txn(&txn).await?)?;
        }
        Cmd::Status => {
            let mut rows = Vec::new();
            for ep in client.endpoints() {
                let one = Client::new(&[ep])?.single_shot();
                rows.push((ep.clone(), one.status().await));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(ep, r)| match r {
                        Ok(s) => serde_json::json!({ "endpoint": ep, "status": s }),
                        Err(e) => serde_json::json!({ "endpoint": ep, "error": e.to_string() }),
                    })
                    .collect();
                print_json(&v)?;
            } else {
                let mut t = table::Table::new(&[
                    "ENDPOINT",
                    "ID",
                    "NAME",
                    "ROLE",
                    "TERM",
                    "LEADER",
                    "COMMITTED",
                    "APPLIED",
                ]);
                for (ep, r) in &rows {
                    match r {
                        Ok(s) => t.row(vec![
                            ep.clone(),
                            s.id.to_string(),
                            s.name.clone(),
                            format!("{:?}", s.role).to_lowercase(),
                            s.term.to_string(),
                            s.leader
                                .as_ref()
                                .map(|l| l.id.to_string())
                                .unwrap_or("-".into()),
                            opt(s.committed_index),
                            opt(s.applied_index),
                        ]),
                        Err(e) => t.row(vec![ep.clone(), format!("error: {e}")]),
                    }
                }
                t.print();
            }
            if rows.iter().all(|(_, r)| r.is_err()) {
                bail!("no endpoint answered");
            }
        }
        Cmd::Members => {
            let s = client.status().await?;
            if json {
                print_json(&s.membership)?;
            } else {
                let mut t = table::Table::new(&["ID", "NAME", "ROLE", "PEER URL", "CLIENT URL"]);
                let leader = s.leader.as_ref().map(|l| l.id);
                for (role, list) in [
                    ("voter", &s.membership.voters),
                    ("learner", &s.membership.learners),
                ] {
                    for m in list {
                        let r = if Some(m.id) == leader { "leader" } else { role };
                        t.row(vec![
                            m.id.to_string(),
                            m.info.name.clone(),
                            r.into(),
                            m.info.peer_url.clone(),
                            m.info.client_url.clone(),
                        ]);
                    }
                }
                t.print();
            }
        }
        Cmd::Init { members } => {
            let mut req = InitRequest::default();
            for m in members {
                let (id, rest) = m
                    .split_once('=')
                    .with_context(|| format!("--member {m:?}: expected ID=PEER_URL,CLIENT_URL"))?;
                let parts: Vec<&str> = rest.split(',').collect();
                let (peer, client_url, name) = match parts.as_slice() {
                    [p, c] => (*p, *c, ""),
                    [p, c, n] => (*p, *c, *n),
                    _ => bail!("--member {m:?}: expected ID=PEER_URL,CLIENT_URL[,NAME]"),
                };
                req.members.insert(
                    id.to_owned(),
                    MemberInfo {
                        name: name.into(),
                        peer_url: peer.into(),
                        client_url: client_url.into(),
                    },
                );
            }
            let first = Client::new(&client.endpoints()[..1])?;
            let resp = first.init(&req).await?;
            if json {
                print_json(&resp)?;
            } else {
                println!("initialized: voters {:?}", resp.membership.voter_ids());
            }
        }
        Cmd::AddLearner {
            id,
            peer_url,
            client_url,
            name,
        } => {
            let resp = client
                .add_learner(&AddLearnerRequest {
                    id,
                    name,
                    peer_url,
                    client_url,
                })
                .await?;
            if json {
                print_json(&resp)?;
            } else {
                println!("learners: {:?}", resp.membership.learner_ids());
            }
        }
        Cmd::Promote { ids } => {
            let s = client.status().await?;
            let mut voters = s.membership.voter_ids();
            for id in ids {
                if !s.membership.contains(id) {
                    bail!("node {id} is not a member; add it as a learner first");
                }
                if !voters.contains(&id) {
                    voters.push(id);
                }
            }
            let resp = client.set_voters(&voters).await?;
            if json {
                print_json(&resp)?;
            } else {
                println!("voters: {:?}", resp.membership.voter_ids());
            }
        }
        Cmd::Remove { id } => {
            let resp = client.remove_member(id).await?;
            if json {
                print_json(&resp)?;
            } else {
                println!(
                    "removed {id}; voters {:?}, learners {:?}",
                    resp.membership.voter_ids(),
                    resp.membership.learner_ids()
                );
            }
        }
        Cmd::TransferLeader { id } => {
            let resp = client.transfer_leader(id).await?;
            if json {
                print_json(&resp)?;
            } else {
                println!("leader is now {id}");
            }
        }
        Cmd::Health => {
            let mut healthy = 0;
            let mut t = table::Table::new(&["ENDPOINT", "HEALTH", "READY"]);
            let mut out = Vec::new();
            for ep in client.endpoints() {
                let one = Client::new(&[ep])?
                    .single_shot()
                    .with_timeout(Duration::from_secs(2))?;
                let h = one.health().await;
                let r = one.ready().await;
                let ready = match &r {
                    Ok(Ok(())) => "ready".to_string(),
                    Ok(Err(reason)) => format!("not ready: {reason}"),
                    Err(e) => format!("error: {e}"),
                };
                if h.is_ok() {
                    healthy += 1;
                }
                out.push(serde_json::json!({
                    "endpoint": ep, "healthy": h.is_ok(), "ready": matches!(r, Ok(Ok(()))),
                    "detail": ready,
                }));
                t.row(vec![
                    ep.clone(),
                    if h.is_ok() {
                        "ok".into()
                    } else {
                        "down".into()
                    },
                    ready,
                ]);
            }
            if json {
                print_json(&out)?;
            } else {
                t.print();
            }
            if healthy < client.endpoints().len() {
                bail!(
                    "{} of {} endpoints unhealthy",
                    client.endpoints().len() - healthy,
                    client.endpoints().len()
                );
            }
        }
        Cmd::Bench(args) => bench::run(&cli.endpoints, args, json).await?,
    }
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
