//! Cluster commands: status, members, init, add-learner, promote, remove,
//! transfer-leader.

use anyhow::{Context, bail};
use clap::Args;
use kvclient::{AddLearnerRequest, Client, InitRequest, MemberInfo};

use super::Ctx;
use super::print;
use crate::table::Table;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// ID=PEER_URL,CLIENT_URL[,NAME]; repeat for each initial member.
    #[arg(long = "member")]
    pub members: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AddLearnerArgs {
    pub id: u64,
    pub peer_url: String,
    pub client_url: String,
    #[arg(long, default_value = "")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    #[arg(required = true)]
    pub ids: Vec<u64>,
}

#[derive(Args, Debug)]
pub struct IdArg {
    pub id: u64,
}

pub async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for ep in ctx.endpoints() {
        let one = Client::new(&[ep])?.single_shot();
        rows.push((ep.clone(), one.status().await));
    }
    let v: Vec<_> = rows
        .iter()
        .map(|(ep, r)| match r {
            Ok(s) => serde_json::json!({ "endpoint": ep, "status": s }),
            Err(e) => serde_json::json!({ "endpoint": ep, "error": e.to_string() }),
        })
        .collect();
    ctx.out.emit(&v, || {
        let mut t = Table::new(&[
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
                    print::opt(s.committed_index),
                    print::opt(s.applied_index),
                ]),
                Err(e) => t.row(vec![ep.clone(), format!("error: {e}")]),
            }
        }
        t.render()
    })?;
    if rows.iter().all(|(_, r)| r.is_err()) {
        bail!("no endpoint answered");
    }
    Ok(())
}

pub async fn members(ctx: &Ctx) -> anyhow::Result<()> {
    let s = ctx.client.status().await?;
    ctx.out.emit(&s.membership, || {
        let mut t = Table::new(&["ID", "NAME", "ROLE", "PEER URL", "CLIENT URL"]);
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
        t.render()
    })
}

pub async fn init(ctx: &Ctx, a: InitArgs) -> anyhow::Result<()> {
    let req = parse_members(&a.members)?;
    let first = Client::new(&ctx.endpoints()[..1])?;
    let resp = first.init(&req).await?;
    ctx.out.emit(&resp, || {
        format!("initialized: voters {:?}", resp.membership.voter_ids())
    })
}

/// `--member ID=PEER_URL,CLIENT_URL[,NAME]`, repeated.
fn parse_members(members: &[String]) -> anyhow::Result<InitRequest> {
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
    Ok(req)
}

pub async fn add_learner(ctx: &Ctx, a: AddLearnerArgs) -> anyhow::Result<()> {
    let resp = ctx
        .client
        .add_learner(&AddLearnerRequest {
            id: a.id,
            name: a.name,
            peer_url: a.peer_url,
            client_url: a.client_url,
        })
        .await?;
    ctx.out.emit(&resp, || {
        format!("learners: {:?}", resp.membership.learner_ids())
    })
}

pub async fn promote(ctx: &Ctx, a: PromoteArgs) -> anyhow::Result<()> {
    let s = ctx.client.status().await?;
    let mut voters = s.membership.voter_ids();
    for id in a.ids {
        if !s.membership.contains(id) {
            bail!("node {id} is not a member; add it as a learner first");
        }
        if !voters.contains(&id) {
            voters.push(id);
        }
    }
    let resp = ctx.client.set_voters(&voters).await?;
    ctx.out.emit(&resp, || {
        format!("voters: {:?}", resp.membership.voter_ids())
    })
}

pub async fn remove(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let id = a.id;
    let resp = ctx.client.remove_member(id).await?;
    ctx.out.emit(&resp, || {
        format!(
            "removed {id}; voters {:?}, learners {:?}",
            resp.membership.voter_ids(),
            resp.membership.learner_ids()
        )
    })
}

pub async fn transfer_leader(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let id = a.id;
    let resp = ctx.client.transfer_leader(id).await?;
    ctx.out.emit(&resp, || format!("leader is now {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_members_are_parsed() {
        let req = parse_members(&[
            "4=http://p:4,http://c:4,n4".into(),
            "5=http://p:5,http://c:5".into(),
        ])
        .expect("members");
        assert_eq!(req.members["4"].name, "n4");
        assert_eq!(req.members["5"].client_url, "http://c:5");
        assert!(parse_members(&["4=http://p:4".into()]).is_err());
        assert!(parse_members(&["http://p:4,http://c:4".into()]).is_err());
    }
}
