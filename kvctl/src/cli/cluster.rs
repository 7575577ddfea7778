//! Cluster commands: status, members, init, add-learner, promote, remove,
//! transfer-leader.

use std::collections::BTreeMap;
use std::error::Error as _;

use anyhow::{Context, bail};
use clap::Args;
use kvclient::{AddLearnerRequest, ClusterStatus, InitRequest, MemberInfo, Membership, NodeId};

use super::Ctx;
use super::print;
use crate::table::Table;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// ID=PEER_URL,CLIENT_URL[,NAME]; repeat for each initial member. Without it, the members are
    /// the nodes of --endpoints, as they report themselves.
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
        let one = ctx.client.for_endpoints(&[ep])?.single_shot();
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
    let req = if a.members.is_empty() {
        let mut statuses = Vec::new();
        for ep in ctx.endpoints() {
            // Each endpoint on its own (with retries): init needs every
            // node's answer, not the first that comes.
            let st = ctx
                .client
                .for_endpoints(&[ep])?
                .status()
                .await
                .map_err(|e| detail(ep, e));
            statuses.push((ep.clone(), st));
        }
        match plan_init(&statuses)? {
            InitPlan::Init(req) => req,
            InitPlan::AlreadyInitialized {
                cluster_id,
                membership,
            } => {
                let v = serde_json::json!({
                    "already_initialized": true,
                    "cluster_id": cluster_id,
                    "membership": membership,
                });
                return ctx.out.emit(&v, || {
                    format!(
                        "already initialized: cluster {cluster_id}, voters {:?}",
                        membership.voter_ids()
                    )
                });
            }
        }
    } else {
        parse_members(&a.members)?
    };
    let first = ctx.client.for_endpoints(&ctx.endpoints()[..1])?;
    let resp = first.init(&req).await?;
    ctx.out.emit(&resp, || {
        format!("initialized: voters {:?}", resp.membership.voter_ids())
    })
}

/// The error of one endpoint with its causes, on one line, without the
/// endpoint (the caller names it). A transport error's own text repeats its
/// cause, so only the causes are shown then.
fn detail(ep: &str, e: kvclient::ClientError) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    if cause.is_none() {
        let text = e.to_string();
        parts.push(
            text.strip_prefix(&format!("{ep}: "))
                .unwrap_or(&text)
                .to_owned(),
        );
    }
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

/// What `init` without `--member` does, decided from every endpoint's status.
#[derive(Debug, PartialEq)]
enum InitPlan {
    /// Every node is uninitialized: make them one cluster.
    Init(InitRequest),
    /// Every node is already in the same cluster: nothing to do.
    AlreadyInitialized {
        cluster_id: String,
        membership: Membership,
    },
}

/// `statuses`: each endpoint with its `/v1/cluster/status` or why it gave
/// none. Errors name the endpoint they concern.
fn plan_init(statuses: &[(String, Result<ClusterStatus, String>)]) -> anyhow::Result<InitPlan> {
    let mut nodes: Vec<(&str, &ClusterStatus)> = Vec::new();
    for (ep, st) in statuses {
        match st {
            Ok(s) => nodes.push((ep, s)),
            Err(e) => bail!(
                "{ep} is unreachable ({e}); init without --member needs every endpoint's node id"
            ),
        }
    }
    let initialized: Vec<(&str, &ClusterStatus, &str)> = nodes
        .iter()
        .filter_map(|(ep, s)| Some((*ep, *s, s.cluster_id.as_deref()?)))
        .collect();
    if let Some(&(ep, s, cluster_id)) = initialized.first() {
        if let Some((other_ep, _, other)) = initialized.iter().find(|(_, _, c)| *c != cluster_id) {
            bail!(
                "{ep} is in cluster {cluster_id} but {other_ep} is in cluster {other}: \
                 these endpoints are not one cluster"
            );
        }
        // Like the server's init: asking again for what is done succeeds.
        if initialized.len() == nodes.len() {
            return Ok(InitPlan::AlreadyInitialized {
                cluster_id: cluster_id.to_owned(),
                membership: s.membership.clone(),
            });
        }
        bail!(
            "{ep} (node {}) is already in cluster {cluster_id}, so init is not needed: \
             add the new nodes with kvctl add-learner, then kvctl promote",
            s.id
        );
    }
    let mut members = BTreeMap::new();
    let mut seen: BTreeMap<NodeId, &str> = BTreeMap::new();
    for (ep, s) in &nodes {
        if let Some(other) = seen.insert(s.id, ep) {
            bail!(
                "{other} and {ep} are the same node (id {}): list each node once",
                s.id
            );
        }
        members.insert(
            s.id.to_string(),
            MemberInfo {
                name: s.name.clone(),
                peer_url: s.peer_url.clone(),
                client_url: s.client_url.clone(),
            },
        );
    }
    Ok(InitPlan::Init(InitRequest { members }))
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

#[derive(Args, Debug)]
pub struct ForceNewClusterArgs {
    /// The id of the cluster given up (`kvctl status`), as confirmation.
    pub cluster_id: String,
}

pub async fn force_new_cluster(ctx: &Ctx, a: ForceNewClusterArgs) -> anyhow::Result<()> {
    let resp = ctx.client.force_new_cluster(&a.cluster_id).await?;
    ctx.out.emit(&resp, || resp.message.clone())
}

pub async fn transfer_leader(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let id = a.id;
    let resp = ctx.client.transfer_leader(id).await?;
    ctx.out.emit(&resp, || format!("leader is now {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as a node reports it. Built from JSON, as kvctl receives
    /// it, so fields the server adds later do not break these tests.
    fn status(id: NodeId, cluster_id: Option<&str>) -> ClusterStatus {
        let role = if cluster_id.is_some() {
            "follower"
        } else {
            "uninitialized"
        };
        serde_json::from_value(serde_json::json!({
            "id": id,
            "name": format!("n{id}"),
            "cluster_id": cluster_id,
            "role": role,
            "term": 0,
            "leader": null,
            "membership": {"voters": [], "learners": []},
            "last_log_index": null,
            "committed_index": null,
            "applied_index": null,
            "peer_url": format!("http://10.0.0.{id}:7380"),
            "client_url": format!("http://10.0.0.{id}:7379"),
        }))
        .expect("status JSON")
    }

    fn ep(i: usize) -> String {
        format!("http://ep{i}:7379")
    }

    fn fresh(ids: &[NodeId]) -> Vec<(String, Result<ClusterStatus, String>)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (ep(i), Ok(status(*id, None))))
            .collect()
    }

    fn error(statuses: &[(String, Result<ClusterStatus, String>)]) -> String {
        match plan_init(statuses) {
            Ok(plan) => panic!("expected an error, got {plan:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn fresh_nodes_become_the_members() {
        let InitPlan::Init(req) = plan_init(&fresh(&[7, 3, 9])).expect("plan") else {
            panic!("expected an init request")
        };
        assert_eq!(req.members.keys().collect::<Vec<_>>(), ["3", "7", "9"]);
        assert_eq!(
            req.members["7"],
            MemberInfo {
                name: "n7".into(),
                peer_url: "http://10.0.0.7:7380".into(),
                client_url: "http://10.0.0.7:7379".into(),
            }
        );
    }

    #[test]
    fn one_fresh_endpoint_is_a_one_node_cluster() {
        let InitPlan::Init(req) = plan_init(&fresh(&[5])).expect("plan") else {
            panic!("expected an init request")
        };
        assert_eq!(req.members.keys().collect::<Vec<_>>(), ["5"]);
    }

    #[test]
    fn an_unreachable_endpoint_is_named() {
        let mut st = fresh(&[1, 2]);
        st.push((ep(2), Err("connection refused".into())));
        let e = error(&st);
        assert!(
            e.contains("http://ep2:7379 is unreachable (connection refused)"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn a_node_already_in_a_cluster_means_init_is_not_needed() {
        let mut st = fresh(&[1, 2]);
        st[1].1 = Ok(status(2, Some("c1")));
        let e = error(&st);
        assert!(
            e.starts_with("http://ep1:7379 (node 2) is already in cluster c1"),
            "{e}"
        );
        assert!(e.contains("init is not needed"), "{e}");
    }

    #[test]
    fn a_cluster_already_initialized_is_reported_not_refused() {
        let mut st = fresh(&[1, 2, 3]);
        for (_, s) in &mut st {
            let id = s.as_ref().expect("status").id;
            *s = Ok(status(id, Some("c1")));
        }
        let plan = plan_init(&st).expect("plan");
        assert!(
            matches!(&plan, InitPlan::AlreadyInitialized { cluster_id, .. } if cluster_id == "c1"),
            "{plan:?}"
        );
    }

    #[test]
    fn nodes_of_different_clusters_are_refused() {
        let st = vec![
            (ep(0), Ok(status(1, Some("c1")))),
            (ep(1), Ok(status(2, Some("c1")))),
            (ep(2), Ok(status(3, Some("c2")))),
        ];
        let e = error(&st);
        assert!(
            e.contains("http://ep0:7379 is in cluster c1 but http://ep2:7379 is in cluster c2"),
            "{e}"
        );
    }

    #[test]
    fn the_same_node_twice_is_refused() {
        let e = error(&fresh(&[1, 2, 1]));
        assert!(
            e.contains("http://ep0:7379 and http://ep2:7379 are the same node (id 1)"),
            "{e}"
        );
    }

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
