//! Crash points: named places right around durable writes where a test can
//! make the process die, to check that a restart recovers from exactly that
//! state. `KVNODE_CRASH_AT=point[@n][,point[@n]...]` aborts the process the
//! n-th time (default: the first) it passes `point`; without the variable
//! every check is one relaxed load. Abort, not panic: nothing unwinds, no
//! destructor flushes anything, as with `kill -9`. A process crash keeps what
//! reached the kernel; losing unsynced writes (power loss) is not simulated.
//!
//! Points: `log-append-unsynced` (entries written to the WAL, not yet
//! synced), `sm-apply-before-write` (a batch of applied entries computed,
//! not written), `snapshot-install-after-marker`, `snapshot-install-after-delete`,
//! `snapshot-install-after-ingest` (the steps of `store::sm::install`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Point {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> &'static [Point] {
    static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("KVNODE_CRASH_AT")
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> Vec<Point> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, at) = match s.split_once('@') {
                Some((n, at)) => (n, at.parse().unwrap_or(1)),
                None => (s, 1),
            };
            Point {
                name: name.to_owned(),
                at: at.max(1),
                hits: AtomicU64::new(0),
            }
        })
        .collect()
}

/// Aborts the process here if `KVNODE_CRASH_AT` names `name` and this is
/// the chosen pass.
pub fn point(name: &str) {
    for p in armed() {
        if p.name == name && p.hits.fetch_add(1, Ordering::Relaxed) + 1 == p.at {
            tracing::error!(point = name, pass = p.at, "crash point reached: aborting");
            std::process::abort();
        }
    }
}

/// Logs the armed crash points once at start, so a test run that uses them
/// says so.
pub fn announce() {
    for p in armed() {
        tracing::warn!(point = %p.name, pass = p.at, "crash point armed (KVNODE_CRASH_AT)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_names_and_passes() {
        let pts = parse("a, b@3,,c@0,d@x");
        let got: Vec<(&str, u64)> = pts.iter().map(|p| (p.name.as_str(), p.at)).collect();
        assert_eq!(got, vec![("a", 1), ("b", 3), ("c", 1), ("d", 1)]);
    }
}
