//! Monitors that watch a change while it happens.
//!
//! [`MembershipMonitor`] watches a scale operation: the StatefulSet's size next to
//! the raft membership at the leader. The safety rule a scale-down must keep:
//! the StatefulSet never shrinks past a pod that is still a voter (that pod
//! would be deleted while the cluster still counts it for its quorum). Only
//! the end state is visible afterwards; this catches the order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::kv::{Kv, Target};
use crate::kvc;
use crate::scenario::Scenario;

const PERIOD: Duration = Duration::from_millis(200);

pub struct MembershipMonitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<MonitorReport>,
}

#[derive(Debug, Default)]
pub struct MonitorReport {
    pub samples: usize,
    /// Each distinct (StatefulSet size, voters, learners) seen, with the time.
    pub transitions: Vec<String>,
    /// Rule violations (each reported once).
    pub violations: Vec<String>,
}

impl MembershipMonitor {
    /// Samples KvCluster `name` (pods `name-0` … `name-<max_pods-1>`).
    pub fn start(s: &Scenario, name: &str, max_pods: usize) -> MembershipMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let statefulsets: Api<StatefulSet> = s.api();
        let kv: Kv = s.kv.clone();
        let name = name.to_owned();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let pods = kvc::pod_names(&name, max_pods);
            let t0 = Instant::now();
            let mut report = MonitorReport::default();
            let mut last_state = String::new();
            let mut reported: Vec<String> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                // The StatefulSet first, then the membership: a voter seen
                // after a smaller size was read was a voter while that size
                // was in force (a correct operator shrinks only after the
                // voter's removal is committed, and the leader knows the
                // membership from the moment it is appended).
                let replicas = match statefulsets.get_opt(&name).await {
                    Ok(sts) => sts.and_then(|s| s.spec).and_then(|s| s.replicas),
                    Err(_) => None,
                };
                let leader = confirmed_leader(&kv, &pods).await;
                if let (Some(replicas), Some((leader_pod, status))) = (replicas, leader) {
                    report.samples += 1;
                    let names = |members: &[kvclient::Member]| {
                        members
                            .iter()
                            .map(|m| m.info.name.clone())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let state = format!(
                        "StatefulSet {replicas} | voters [{}] | learners [{}] | leader {leader_pod}",
                        names(&status.membership.voters),
                        names(&status.membership.learners)
                    );
                    if state != last_state {
                        report
                            .transitions
                            .push(format!("{:6.1}s  {state}", t0.elapsed().as_secs_f64()));
                        last_state = state;
                    }
                    for m in &status.membership.voters {
                        let beyond = kvc::ordinal(&name, &m.info.name)
                            .is_some_and(|o| o >= usize::try_from(replicas).unwrap_or(0));
                        let v = format!(
                            "{} (id {}) is a voter while StatefulSet {name} has {replicas} replicas",
                            m.info.name, m.id
                        );
                        if beyond && !reported.contains(&v) {
                            report
                                .violations
                                .push(format!("{:6.1}s  {v}", t0.elapsed().as_secs_f64()));
                            reported.push(v);
                        }
                    }
                }
                tokio::time::sleep(PERIOD).await;
            }
            report
        });
        MembershipMonitor { stop, task }
    }

    pub async fn stop(self) -> anyhow::Result<MonitorReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("membership monitor task: {e}"))
    }
}

/// The leader's report, if it is current: no node that answered knows a
/// higher term (a deposed leader that has not heard of its successor yet
/// could show an older membership).
async fn confirmed_leader(kv: &Kv, pods: &[String]) -> Option<(String, kvclient::ClusterStatus)> {
    let reports = futures::future::join_all(
        pods.iter()
            .map(|p| async move { (p.clone(), kv.status(&Target::pod(p)).await) }),
    )
    .await;
    let reports: Vec<(String, kvclient::ClusterStatus)> = reports
        .into_iter()
        .filter_map(|(p, r)| Some((p, r.ok()?)))
        .collect();
    let max_term = reports.iter().map(|(_, r)| r.term).max()?;
    reports
        .into_iter()
        .find(|(_, r)| r.role == kvclient::Role::Leader && r.term == max_term)
}

/// Watches a rolling upgrade: the order in which pods go away (deleted or
/// terminating, as a new uid or a deletion timestamp shows). Who led at
/// that moment is for the operator's events to tell: a 200 ms sample of
/// the nodes is too coarse for a transfer made a moment before a delete.
pub struct ReplacementMonitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Replacement>>,
}

#[derive(Debug, Clone)]
pub struct Replacement {
    pub pod: String,
    pub at: Duration,
}

impl ReplacementMonitor {
    /// `uids`: pod name -> uid before the rollout.
    pub fn start(
        s: &Scenario,
        name: &str,
        uids: std::collections::BTreeMap<String, String>,
    ) -> ReplacementMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let pods_api: Api<Pod> = s.api();
        let selector = kvc::pod_selector(name);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut gone: Vec<Replacement> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(list) = pods_api
                    .list(&ListParams::default().labels(&selector))
                    .await
                {
                    for (pod, uid) in &uids {
                        if gone.iter().any(|g| &g.pod == pod) {
                            continue;
                        }
                        let current = list
                            .items
                            .iter()
                            .find(|p| p.metadata.name.as_deref() == Some(pod.as_str()));
                        let away = current.is_none_or(|p| {
                            p.metadata.uid.as_deref() != Some(uid.as_str())
                                || p.metadata.deletion_timestamp.is_some()
                        });
                        if away {
                            gone.push(Replacement {
                                pod: pod.clone(),
                                at: t0.elapsed(),
                            });
                        }
                    }
                }
                tokio::time::sleep(PERIOD).await;
            }
            gone
        });
        ReplacementMonitor { stop, task }
    }

    pub async fn stop(self) -> anyhow::Result<Vec<Replacement>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("replacement monitor task: {e}"))
    }
}
