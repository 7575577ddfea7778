//! `/metrics` serves exactly the series docs/api.md lists (read here at
//! build time, so the table and the code cannot drift apart), and the
//! counters a dashboard or an alert relies on move on a real cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Cluster, Opts, put_keys, wait_for};

const API_DOC: &str = include_str!("../../../docs/api.md");

/// The docs/api.md metrics table: series name -> type.
fn documented() -> BTreeMap<String, String> {
    let section = API_DOC
        .split("\n### Metrics\n")
        .nth(1)
        .expect("docs/api.md has a \"### Metrics\" section");
    let section = section.split("\n### ").next().unwrap_or(section);
    let rows: BTreeMap<String, String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let mut cols = l.split('|').map(str::trim);
            let name = cols.next().unwrap_or_default().trim_end_matches('`');
            let kind = cols.next().unwrap_or_default();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    assert!(rows.len() > 30, "the metrics table has {} rows", rows.len());
    rows
}

/// The served families, by the name their samples carry (counters with
/// `_total`), from the `# TYPE` lines.
fn served(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name type");
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// Samples as (name, labels as written, value).
fn samples(text: &str) -> Vec<(&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name, labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the one unlabelled sample `name`.
fn value(text: &str, name: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| *n == name && l.is_empty())
        .map(|(_, _, v)| v)
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

fn check_documented(node: &str, text: &str) {
    let documented = documented();
    let served = served(text);
    assert_eq!(
        served, documented,
        "{node}: /metrics (left) differs from the docs/api.md table (right)"
    );
    let names: Vec<&str> = samples(text).into_iter().map(|(n, _, _)| n).collect();
    for (name, kind) in &documented {
        let sample = match kind.as_str() {
            "histogram" => format!("{name}_count"),
            _ => name.clone(),
        };
        assert!(
            names.contains(&sample.as_str()),
            "{node}: no sample of {name} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_series_is_served_and_the_raft_counters_move() {
    let c = Cluster::start(3, Opts::default()).await;
    let first = c.leader().await;
    let next = (first + 1) % 3;
    put_keys(&c.nodes[first].client(), "lead", 20).await;
    // Through a follower: its writes reach the leader as batched proposals.
    put_keys(&c.nodes[next].client(), "follow", 10).await;
    // A leader change, cheaply: hand leadership to `next`.
    c.nodes[first]
        .client()
        .transfer_leader(c.nodes[next].id)
        .await
        .expect("transfer leadership");
    wait_for(Duration::from_secs(20), "the new leader", || async {
        let st = c.nodes[first].client().status().await.ok()?;
        (st.leader?.id == c.nodes[next].id).then_some(())
    })
    .await;
    assert_eq!(c.leader().await, next);
    put_keys(&c.nodes[next].client(), "after", 10).await;

    let leader = c.nodes[next]
        .client()
        .metrics()
        .await
        .expect("leader metrics");
    let follower = c.nodes[first]
        .client()
        .metrics()
        .await
        .expect("follower metrics");
    check_documented("leader", &leader);
    check_documented("follower", &follower);

    for (node, text) in [("leader", &leader), ("follower", &follower)] {
        assert_eq!(value(text, "raftkv_raft_has_leader"), 1.0, "{node}");
        assert!(
            value(text, "raftkv_raft_log_fsync_duration_seconds_count") > 0.0,
            "{node}: log fsyncs are timed"
        );
        // Both saw the first leader and then the second.
        assert!(
            value(text, "raftkv_raft_leader_changes_total") >= 2.0,
            "{node}: leader changes"
        );
        assert!(
            value(text, "raftkv_proposals_applied_total") >= 40.0,
            "{node}: 40 writes applied"
        );
    }
    assert!(value(&leader, "raftkv_proposals_committed_total") >= 40.0);
    assert_eq!(value(&leader, "raftkv_proposals_pending"), 0.0);
    // The leader sent appends to both followers, labelled by node id.
    for peer in [&c.nodes[first], &c.nodes[(next + 1) % 3]] {
        let label = format!("peer=\"{}\"", peer.id);
        let sent = samples(&leader)
            .into_iter()
            .find(|(n, l, _)| *n == "raftkv_peer_sent_bytes_total" && *l == label)
            .map(|(_, _, v)| v);
        assert!(
            sent.is_some_and(|v| v > 0.0),
            "bytes sent to {label}: {sent:?}"
        );
    }
    // The first leader's heartbeats to `next` were timed.
    let rtt = samples(&follower)
        .into_iter()
        .find(|(n, l, _)| {
            *n == "raftkv_peer_round_trip_time_seconds_count"
                && *l == format!("peer=\"{}\"", c.nodes[next].id)
        })
        .map(|(_, _, v)| v);
    assert!(rtt.is_some_and(|v| v > 0.0), "round trips timed: {rtt:?}");
}
