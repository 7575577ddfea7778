//! `lock` and `elect`: a distributed lock and leader election (etcdctl's
//! commands of the same names), on kvclient's recipes.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use futures::StreamExt;
use kvclient::recipes::{Election, Leader, Mutex, Session};

use super::print;
use super::{Ctx, ExitWith, on_interrupt};

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name; the holder's key is NAME/<lease id in hex>.
    pub name: String,
    /// Seconds the lock outlives a kvctl that dies without releasing it (the lease TTL).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub ttl: u64,
    /// A command to run while holding the lock (after `--`); kvctl exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// The election's name; each candidate's key is NAME/<lease id in hex>.
    pub name: String,
    /// The value to campaign with; without it, print each new leader's value.
    #[arg(conflicts_with = "listen")]
    pub proposal: Option<String>,
    /// Print each new leader's value as it changes, without campaigning.
    #[arg(short, long)]
    pub listen: bool,
    /// Seconds a leadership outlives a kvctl that dies without resigning (the lease TTL).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub ttl: u64,
}

/// How long a command may take to exit after kvctl is interrupted (it
/// normally got the same Ctrl-C) before it is killed. The lock is held
/// meanwhile.
const COMMAND_GRACE: Duration = Duration::from_secs(5);

/// Environment variables the command gets: the lock's key and revision.
pub const LOCK_KEY_ENV: &str = "KVCTL_LOCK_KEY";
pub const LOCK_REV_ENV: &str = "KVCTL_LOCK_REV";

/// `lock NAME [--ttl S] [-- COMMAND...]`: acquires the lock; runs COMMAND
/// while holding it and exits with its status, or without one prints the
/// key and holds it until Ctrl-C (or SIGTERM). Losing the lease (kvctl
/// could not renew it for a TTL, or it was revoked) loses the lock: the
/// command is killed and kvctl fails.
pub async fn lock(ctx: &Ctx, a: LockArgs) -> anyhow::Result<()> {
    let mut stop = on_interrupt()?;
    let session = Session::new(&ctx.client, a.ttl)
        .await
        .context("granting the lock's lease")?;
    let mut mutex = Mutex::new(&session, &a.name);
    let acquired = tokio::select! {
        r = mutex.lock() => r.map_err(anyhow::Error::new),
        _ = &mut stop => Err(anyhow!("interrupted while waiting")),
    };
    if let Err(e) = acquired {
        let _ = session.close().await;
        return Err(e.context(format!("lock {}", a.name)));
    }
    let revision = mutex.revision().unwrap_or_default();
    let lost = mutex.lost();
    tokio::pin!(lost);
    let Some((program, args)) = a.command.split_first() else {
        ctx.out.emit(
            &serde_json::json!({
                "name": a.name, "key": mutex.key(), "revision": revision,
                "lease": session.lease(),
            }),
            || mutex.key().to_owned(),
        )?;
        tokio::select! {
            l = &mut lost => {
                let _ = session.close().await;
                bail!("lost lock {}: {l}", a.name);
            }
            _ = &mut stop => {}
        }
        return release(mutex, session, &a.name).await;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env(LOCK_KEY_ENV, mutex.key())
        .env(LOCK_REV_ENV, revision.to_string())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = release(mutex, session, &a.name).await;
            return Err(anyhow::Error::new(e).context(format!("running {program:?}")));
        }
    };
    let pid = child.id().unwrap_or_default();
    let status = tokio::select! {
        s = child.wait() => s.context("waiting for the command")?,
        l = &mut lost => {
            return killed(child, session, &a.name, pid, &l.to_string()).await;
        }
        _ = &mut stop => {
            // The command normally got the same Ctrl-C; the lock is held
            // until it has exited.
            tokio::select! {
                s = tokio::time::timeout(COMMAND_GRACE, child.wait()) => match s {
                    Ok(s) => s.context("waiting for the command")?,
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await.context("waiting for the command")?
                    }
                },
                l = &mut lost => {
                    return killed(child, session, &a.name, pid, &l.to_string()).await;
                }
            }
        }
    };
    if let Err(e) = release(mutex, session, &a.name).await {
        // The lease ends by itself after its TTL; the command's status
        // is what the caller asked for.
        eprintln!("kvctl: {e:#}");
    }
    match exit_code(status) {
        0 => Ok(()),
        code => Err(ExitWith(code).into()),
    }
}

/// The lock was lost while the command ran: kill it and fail.
async fn killed(
    mut child: tokio::process::Child,
    session: Session,
    name: &str,
    pid: u32,
    why: &str,
) -> anyhow::Result<()> {
    let _ = child.kill().await;
    let _ = session.close().await;
    bail!("lost lock {name}: {why}; killed the command (pid {pid})")
}

/// Unlock, then revoke the session's lease.
async fn release(mut mutex: Mutex, session: Session, name: &str) -> anyhow::Result<()> {
    let unlocked = mutex.unlock().await;
    let closed = session.close().await;
    unlocked
        .and(closed)
        .with_context(|| format!("releasing lock {name}"))
}

/// A command's exit code, as a shell reports it (128 + the signal that
/// killed it).
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return u8::try_from(128 + sig).unwrap_or(1);
        }
    }
    1
}

/// `elect NAME [PROPOSAL] [--listen] [--ttl S]`: campaign with PROPOSAL,
/// print it once elected and lead until Ctrl-C (then resign); or, without
/// a proposal or with --listen, print each new leader's value.
pub async fn elect(ctx: &Ctx, a: ElectArgs) -> anyhow::Result<()> {
    match a.proposal.clone() {
        Some(p) if !a.listen => campaign(ctx, a, p).await,
        _ => listen(ctx, &a.name).await,
    }
}

async fn campaign(ctx: &Ctx, a: ElectArgs, proposal: String) -> anyhow::Result<()> {
    let mut stop = on_interrupt()?;
    let session = Session::new(&ctx.client, a.ttl)
        .await
        .context("granting the candidate's lease")?;
    let mut election = Election::new(&session, &a.name);
    let elected = tokio::select! {
        r = election.campaign(proposal.clone()) => r.map_err(anyhow::Error::new),
        _ = &mut stop => Err(anyhow!("interrupted while campaigning")),
    };
    if let Err(e) = elected {
        let _ = session.close().await;
        return Err(e.context(format!("elect {}", a.name)));
    }
    let lost = election.lost();
    ctx.out.emit(
        &serde_json::json!({
            "name": a.name, "key": election.key(), "value": proposal,
            "revision": election.revision(), "lease": session.lease(),
        }),
        || proposal.clone(),
    )?;
    tokio::select! {
        l = lost => {
            let _ = session.close().await;
            bail!("lost the leadership of {}: {l}", a.name);
        }
        _ = &mut stop => {}
    }
    let resigned = election.resign().await;
    let closed = session.close().await;
    resigned
        .and(closed)
        .with_context(|| format!("resigning from {}", a.name))
}

/// Prints each new leader until Ctrl-C.
async fn listen(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let mut stop = on_interrupt()?;
    let mut leaders = kvclient::recipes::observe(&ctx.client, name);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            l = leaders.next() => match l {
                Some(Ok(l)) => show_leader(ctx, &l)?,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("observing {name}"))),
                None => return Ok(()),
            },
        }
    }
}

/// The leader's value as stored (one line), or with `-o json` one compact
/// object per line.
fn show_leader(ctx: &Ctx, l: &Leader) -> anyhow::Result<()> {
    if ctx.out.is_json() {
        let v = kvclient::JsonValue::from_bytes(&l.value);
        let mut obj = serde_json::json!({"key": l.key, "value": v.value, "revision": l.revision});
        if let Some(enc) = v.value_encoding {
            obj["value_encoding"] = serde_json::to_value(enc)?;
        }
        return print::line(&serde_json::to_string(&obj)?);
    }
    print::raw(&l.value)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Cmd};

    fn parse(argv: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("kvctl").chain(argv.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn lock_takes_a_command_after_double_dash() {
        let Ok(Cmd::Lock(l)) = parse(&["lock", "jobs"]) else {
            panic!("not lock")
        };
        assert_eq!((l.name.as_str(), l.ttl), ("jobs", 10));
        assert!(l.command.is_empty());
        let Ok(Cmd::Lock(l)) = parse(&[
            "lock",
            "jobs",
            "--ttl",
            "3",
            "--",
            "sh",
            "-c",
            "echo --ttl $$",
        ]) else {
            panic!("not lock")
        };
        assert_eq!(l.ttl, 3);
        // Everything after `--` is the command's, flags included.
        assert_eq!(l.command, ["sh", "-c", "echo --ttl $$"]);
        for bad in [
            &["lock"][..],
            &["lock", "jobs", "--ttl", "0"],
            &["lock", "jobs", "sh"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn elect_campaigns_with_a_proposal_or_listens() {
        let Ok(Cmd::Elect(e)) = parse(&["elect", "leader", "node-1", "--ttl", "5"]) else {
            panic!("not elect")
        };
        assert_eq!(e.proposal.as_deref(), Some("node-1"));
        assert_eq!(e.ttl, 5);
        assert!(!e.listen);
        let Ok(Cmd::Elect(e)) = parse(&["elect", "leader", "-l"]) else {
            panic!("not elect")
        };
        assert!(e.listen && e.proposal.is_none());
        let Ok(Cmd::Elect(e)) = parse(&["elect", "leader"]) else {
            panic!("not elect")
        };
        assert!(!e.listen && e.proposal.is_none());
        assert!(parse(&["elect", "leader", "v", "--listen"]).is_err());
        assert!(parse(&["elect"]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_are_the_shells() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGKILL (9): 137.
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
