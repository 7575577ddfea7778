//! `lease`: grant, keep alive, revoke, inspect and list leases.

use anyhow::{Context, anyhow, bail};
use clap::builder::RangedU64ValueParser;
use clap::{Args, Subcommand};
use kvclient::{ErrorCode, LeaseGrant, LeaseInfo, LeaseStatus};

use super::print;
use super::{Ctx, on_interrupt};
use crate::table::{Table, escape};

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Create a lease of TTL seconds (raised to the cluster's minimum).
    Grant(GrantArgs),
    /// Renew a lease every third of its TTL until Ctrl-C, printing each renewal; fails once the lease is gone.
    KeepAlive(KeepAliveArgs),
    /// End a lease now, deleting every key attached to it.
    Revoke(IdArg),
    /// A lease's TTL, the time it has left and (--keys) its keys.
    Timetolive(TimeToLiveArgs),
    /// Every lease.
    List,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// Seconds the lease lives without a keep-alive.
    #[arg(value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub ttl: u64,
    /// The lease id to use (decimal, or hex with 0x); default: the cluster picks one.
    #[arg(long, value_parser = parse_id)]
    pub id: Option<u64>,
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// The lease id (decimal, or hex with 0x).
    #[arg(value_parser = parse_id)]
    pub id: u64,
}

#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    /// The lease id (decimal, or hex with 0x).
    #[arg(value_parser = parse_id)]
    pub id: u64,
    /// Renew once and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Args, Debug)]
pub struct TimeToLiveArgs {
    /// The lease id (decimal, or hex with 0x).
    #[arg(value_parser = parse_id)]
    pub id: u64,
    /// List the keys attached to the lease.
    #[arg(long)]
    pub keys: bool,
}

/// A lease id: decimal as the API prints it, or `0x`-prefixed hex as it
/// appears in lock and election keys.
pub fn parse_id(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match parsed {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "{s:?} is not a lease id (a positive decimal number, or hex with 0x)"
        )),
    }
}

pub async fn lease(ctx: &Ctx, cmd: LeaseCmd) -> anyhow::Result<()> {
    match cmd {
        LeaseCmd::Grant(a) => grant(ctx, a).await,
        LeaseCmd::KeepAlive(a) => keep_alive(ctx, a).await,
        LeaseCmd::Revoke(a) => revoke(ctx, a).await,
        LeaseCmd::Timetolive(a) => time_to_live(ctx, a).await,
        LeaseCmd::List => list(ctx).await,
    }
}

/// `lease grant TTL`: `lease <id> granted with TTL <ttl>s`.
pub async fn grant(ctx: &Ctx, a: GrantArgs) -> anyhow::Result<()> {
    let g = ctx.client.lease_grant(a.ttl, a.id).await?;
    ctx.out.emit(&g, || granted_text(&g))
}

fn granted_text(g: &LeaseGrant) -> String {
    format!("lease {} granted with TTL {}s", g.id, g.ttl)
}

/// The error for a lease the cluster does not know.
fn gone(id: u64) -> anyhow::Error {
    anyhow!("lease {id} not found (expired or revoked)")
}

/// `lease keep-alive ID`: one line per renewal (`-o json`: one compact
/// object per line) until Ctrl-C (exit 0, the lease is left to run out) or
/// until the lease is lost (exit 1).
pub async fn keep_alive(ctx: &Ctx, a: KeepAliveArgs) -> anyhow::Result<()> {
    let show = |g: &LeaseGrant| -> anyhow::Result<()> {
        if ctx.out.is_json() {
            print::line(&serde_json::to_string(g)?)
        } else {
            print::line(&format!("lease {} kept alive with TTL {}s", g.id, g.ttl))
        }
    };
    let mut stop = on_interrupt()?;
    // One renewal first: it says whether the lease exists and its TTL.
    let first = match ctx.client.lease_keep_alive(a.id).await {
        Ok(g) => g,
        Err(e) if e.code() == Some(ErrorCode::NotFound) => return Err(gone(a.id)),
        Err(e) => return Err(e.into()),
    };
    show(&first)?;
    if a.once {
        return Ok(());
    }
    let ka = ctx.client.keep_alive(&first);
    let mut status = ka.subscribe();
    // The task's own first renewal repeats the one just printed.
    let mut shown = 1;
    loop {
        tokio::select! {
            _ = &mut stop => {
                // Not revoked: the lease runs out after its TTL.
                ka.close(false).await?;
                return Ok(());
            }
            changed = status.changed() => {
                let now = status.borrow_and_update().clone();
                match now {
                    LeaseStatus::Alive { ttl, renewals, .. } if renewals > shown => {
                        shown = renewals;
                        show(&LeaseGrant { id: a.id, ttl })?;
                    }
                    LeaseStatus::Alive { .. } => {}
                    LeaseStatus::Lost(lost) => bail!("{lost}"),
                }
                if changed.is_err() {
                    // The task ended without a loss: cannot happen while `ka` lives.
                    bail!("lease {}: keep-alive stopped", a.id);
                }
            }
        }
    }
}

/// `lease revoke ID`.
pub async fn revoke(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let r = match ctx.client.lease_revoke(a.id).await {
        Ok(r) => r,
        Err(e) if e.code() == Some(ErrorCode::NotFound) => return Err(gone(a.id)),
        Err(e) => return Err(e.into()),
    };
    ctx.out.emit(&r, || {
        format!(
            "lease {} revoked at revision {} ({} keys deleted)",
            a.id, r.revision, r.deleted
        )
    })
}

/// `lease timetolive ID [--keys]`.
pub async fn time_to_live(ctx: &Ctx, a: TimeToLiveArgs) -> anyhow::Result<()> {
    let info = ctx
        .client
        .lease_time_to_live(a.id, a.keys)
        .await?
        .ok_or_else(|| gone(a.id))?;
    ctx.out.emit(&info, || ttl_text(&info))
}

/// `lease 7 granted with TTL 10s, 6.2s remaining` and with keys
/// `attached keys:` and one escaped key per line.
fn ttl_text(info: &LeaseInfo) -> String {
    let mut s = format!(
        "lease {} granted with TTL {}s, {:.1}s remaining",
        info.id, info.ttl, info.remaining
    );
    match info.keys.as_deref() {
        None => {}
        Some([]) => s.push_str("\nno attached keys"),
        Some(keys) => {
            s.push_str("\nattached keys:");
            for k in keys {
                s.push_str("\n  ");
                s.push_str(&escape(k));
            }
        }
    }
    s
}

/// `lease list`: ID and TTL of every lease.
pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let l = ctx.client.lease_list().await.context("listing leases")?;
    ctx.out.emit(&l, || {
        let mut t = Table::new(&["ID", "TTL"]);
        for g in &l.leases {
            t.row(vec![g.id.to_string(), format!("{}s", g.ttl)]);
        }
        t.render()
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Cmd};

    fn cmd(argv: &[&str]) -> Result<LeaseCmd, clap::Error> {
        let cli = Cli::try_parse_from(["kvctl", "lease"].iter().chain(argv).copied())?;
        match cli.cmd {
            Cmd::Lease(c) => Ok(c),
            other => panic!("not lease: {other:?}"),
        }
    }

    #[test]
    fn lease_commands_parse() {
        let LeaseCmd::Grant(g) = cmd(&["grant", "30"]).expect("grant") else {
            panic!("not grant")
        };
        assert_eq!((g.ttl, g.id), (30, None));
        let LeaseCmd::Grant(g) = cmd(&["grant", "5", "--id", "0x1f"]).expect("grant") else {
            panic!("not grant")
        };
        assert_eq!(g.id, Some(31));
        let LeaseCmd::KeepAlive(k) = cmd(&["keep-alive", "42", "--once"]).expect("ka") else {
            panic!("not keep-alive")
        };
        assert!(k.once && k.id == 42);
        let LeaseCmd::Timetolive(t) = cmd(&["timetolive", "42", "--keys"]).expect("ttl") else {
            panic!("not timetolive")
        };
        assert!(t.keys && t.id == 42);
        assert!(matches!(
            cmd(&["revoke", "0x2A"]),
            Ok(LeaseCmd::Revoke(IdArg { id: 42 }))
        ));
        assert!(matches!(cmd(&["list"]), Ok(LeaseCmd::List)));
        for bad in [
            &["grant", "0"][..],
            &["grant"],
            &["grant", "-5"],
            &["revoke", "0"],
            &["revoke", "abc"],
            &["timetolive"],
            &["keep-alive", "0x"],
        ] {
            assert!(cmd(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn put_takes_a_lease_alone() {
        let parse =
            |argv: &[&str]| Cli::try_parse_from(["kvctl", "put"].iter().chain(argv).copied());
        let Ok(Cli {
            cmd: Cmd::Put(p), ..
        }) = parse(&["k", "v", "--lease", "0x10"])
        else {
            panic!("not put")
        };
        assert_eq!(p.lease, Some(16));
        assert!(parse(&["k", "v", "--lease", "7", "--if-absent"]).is_err());
        assert!(parse(&["k", "v", "--lease", "7", "--if-revision", "3"]).is_err());
        assert!(parse(&["k", "v", "--lease", "0"]).is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(
            granted_text(&LeaseGrant { id: 7, ttl: 10 }),
            "lease 7 granted with TTL 10s"
        );
        let mut info = LeaseInfo {
            id: 7,
            ttl: 10,
            remaining: 6.23,
            keys: None,
        };
        assert_eq!(
            ttl_text(&info),
            "lease 7 granted with TTL 10s, 6.2s remaining"
        );
        info.keys = Some(vec!["a/b".into(), "multi\nline".into()]);
        assert_eq!(
            ttl_text(&info),
            "lease 7 granted with TTL 10s, 6.2s remaining\nattached keys:\n  a/b\n  multi\\nline"
        );
        info.keys = Some(vec![]);
        assert!(ttl_text(&info).ends_with("\nno attached keys"));
    }
}
