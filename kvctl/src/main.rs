//! kvctl: the raftkv command-line client. This file parses the command line
//! and dispatches; the commands live in `cli/`.

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod bench_watch;
mod cli;
mod table;

use cli::{Cli, Cmd, Ctx, auth, cluster, concurrency, kv, lease, misc, snapshot, watch};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(cli::ExitWith(code)) = e.downcast_ref() {
                return ExitCode::from(*code);
            }
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("kvctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cli)?;
    match cli.cmd {
        Cmd::Put(a) => kv::put(&ctx, a).await,
        Cmd::Get(a) => kv::get(&ctx, a).await,
        Cmd::Del(a) => kv::del(&ctx, a).await,
        Cmd::Ls(a) => kv::ls(&ctx, a).await,
        Cmd::Watch(a) => watch::watch(&ctx, a).await,
        Cmd::Txn(a) => kv::txn(&ctx, a).await,
        Cmd::Lease(c) => lease::lease(&ctx, c).await,
        Cmd::Lock(a) => concurrency::lock(&ctx, a).await,
        Cmd::Elect(a) => concurrency::elect(&ctx, a).await,
        Cmd::Snapshot(c) => snapshot::snapshot(&ctx, &c).await,
        Cmd::Status => cluster::status(&ctx).await,
        Cmd::Members => cluster::members(&ctx).await,
        Cmd::Init(a) => cluster::init(&ctx, a).await,
        Cmd::AddLearner(a) => cluster::add_learner(&ctx, a).await,
        Cmd::Promote(a) => cluster::promote(&ctx, a).await,
        Cmd::Remove(a) => cluster::remove(&ctx, a).await,
        Cmd::TransferLeader(a) => cluster::transfer_leader(&ctx, a).await,
        Cmd::ForceNewCluster(a) => cluster::force_new_cluster(&ctx, a).await,
        Cmd::Health => misc::health(&ctx).await,
        Cmd::Version => misc::version(&ctx).await,
        Cmd::Bench(a) => misc::bench(&ctx, a).await,
        Cmd::Auth(c) => auth::auth(&ctx, c).await,
        Cmd::User(c) => auth::user(&ctx, c).await,
        Cmd::Role(c) => auth::role(&ctx, c).await,
    }
}
