//! Jepsen-style runs under faults (see `jepsen`): each must leave every
//! key's history linearizable, serializable reads monotonic per node, and
//! every node holding the final values. A bounded run here; `RAFTKV_SOAK_SECS`
//! (`scripts/soak.sh`) makes each as long as asked.

use std::time::Duration;

use crate::common::fabric::Fabric;
use crate::jepsen::{self, Nemesis};

async fn run(name: &str, nemesis: Nemesis) {
    run_on(name, 3, nemesis).await;
}

async fn run_on(name: &str, nodes: usize, nemesis: Nemesis) {
    let mut fabric = Fabric::default();
    let mut cluster = jepsen::cluster_of(&mut fabric, nodes).await;
    let length = jepsen::duration(Duration::from_secs(20));
    let summary = jepsen::run(name, &mut cluster, &mut fabric, length, nemesis).await;
    assert!(
        summary.faults >= 4,
        "the nemesis hardly acted: {} events",
        summary.faults
    );
    assert!(
        summary.ops >= 200,
        "too few operations to mean much: {}",
        summary.ops
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_keep_histories_linearizable() {
    run("partitions", Nemesis::Partitions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_way_cuts_keep_histories_linearizable() {
    run("one-way", Nemesis::OneWay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pauses_keep_histories_linearizable() {
    run("pauses", Nemesis::Pauses).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kills_keep_histories_linearizable() {
    run("kills", Nemesis::Kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_disks_keep_histories_linearizable() {
    run("slow-disk", Nemesis::SlowDisk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_in_partitions_keep_histories_linearizable() {
    run("membership", Nemesis::MembershipInPartition).await;
}

/// Five voters: two cut off from three (the leader among the two half of
/// the time), so the minority holds more than one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_split_two_three_keep_histories_linearizable() {
    run_on("partitions-5", 5, Nemesis::Partitions).await;
}
