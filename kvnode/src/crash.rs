//! Crash points: named places right around durable writes where a test can
//! make the process die, to check that a restart recovers from exactly that
//! state. `KVNODE_CRASH_AT=point[@n][,point[@n]...]` aborts the process the
//! n-th time (default: the first) it passes `point`; without the variable
//! every check is one relaxed load. Abort, not panic: nothing unwinds, no
//! destructor flushes anything, as with `kill -9`. A process crash keeps what
//! reached the kernel; losing unsynced writes (power loss) is not simulated.
//!
//! Also the slow-disk failpoint [`slow_sync`] (`KVNODE_SLOW_SYNC_FILE`).
//!
//! Points: `log-append-unsynced` (entries written to the WAL, not yet
//! synced), `sm-apply-before-write` (a batch of applied entries computed,
//! not written), `snapshot-install-after-marker`, `snapshot-install-after-delete`,
//! `snapshot-install-after-ingest` (the steps of `store::sm::install`),
//! `restore-seeded-before-pending-removed` (a restore received through the
//! API applied at start, its file not yet removed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every crash point in the code. A name outside this list in
/// `KVNODE_CRASH_AT` is refused at start: a misspelt point would otherwise
/// never fire and its test would pass without testing anything.
pub const POINTS: &[&str] = &[
    "log-append-unsynced",
    "sm-apply-before-write",
    "snapshot-install-after-marker",
    "snapshot-install-after-delete",
    "snapshot-install-after-ingest",
    "restore-seeded-before-pending-removed",
];

struct Point {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn spec() -> &'static Result<Vec<Point>, String> {
    static POINTS: OnceLock<Result<Vec<Point>, String>> = OnceLock::new();
    POINTS.get_or_init(|| match std::env::var("KVNODE_CRASH_AT") {
        Ok(v) => parse(&v),
        Err(_) => Ok(Vec::new()),
    })
}

fn armed() -> &'static [Point] {
    spec().as_deref().unwrap_or_default()
}

fn parse(spec: &str) -> Result<Vec<Point>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, at) = match s.split_once('@') {
                Some((n, at)) => match at.parse::<u64>() {
                    Ok(at) if at >= 1 => (n, at),
                    _ => {
                        return Err(format!(
                            "KVNODE_CRASH_AT: {s:?}: the pass after @ must be a number from 1"
                        ));
                    }
                },
                None => (s, 1),
            };
            if !POINTS.contains(&name) {
                return Err(format!(
                    "KVNODE_CRASH_AT: no crash point {name:?} (known: {})",
                    POINTS.join(", ")
                ));
            }
            Ok(Point {
                name: name.to_owned(),
                at,
                hits: AtomicU64::new(0),
            })
        })
        .collect()
}

/// Aborts the process here if `KVNODE_CRASH_AT` names `name` and this is
/// the chosen pass.
pub fn point(name: &str) {
    debug_assert!(
        POINTS.contains(&name),
        "crash point {name} is not in POINTS"
    );
    for p in armed() {
        if p.name == name && p.hits.fetch_add(1, Ordering::Relaxed) + 1 == p.at {
            tracing::error!(point = name, pass = p.at, "crash point reached: aborting");
            std::process::abort();
        }
    }
}

/// Checks `KVNODE_CRASH_AT` and logs the armed points, once at start, so a
/// test run that uses them says so. An unknown point is an error.
pub fn announce() -> Result<(), String> {
    let points = spec().as_ref().map_err(Clone::clone)?;
    for p in points {
        tracing::warn!(point = %p.name, pass = p.at, "crash point armed (KVNODE_CRASH_AT)");
    }
    Ok(())
}

/// The slow-disk failpoint: with `KVNODE_SLOW_SYNC_FILE=PATH` every raft
/// log sync first sleeps as many milliseconds as PATH holds (a relative
/// PATH is in the data dir; a missing or empty file: no delay). The file is
/// read at each sync, so a test slows a running node's disk and heals it by
/// writing the file. Without the variable this is one load.
pub fn slow_sync(data_dir: &std::path::Path) {
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let Some(file) = FILE
        .get_or_init(|| std::env::var_os("KVNODE_SLOW_SYNC_FILE").map(Into::into))
        .as_ref()
    else {
        return;
    };
    let ms = std::fs::read_to_string(data_dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_names_and_passes() {
        let pts = parse("log-append-unsynced, sm-apply-before-write@3,,").expect("valid");
        let got: Vec<(&str, u64)> = pts.iter().map(|p| (p.name.as_str(), p.at)).collect();
        assert_eq!(
            got,
            vec![("log-append-unsynced", 1), ("sm-apply-before-write", 3)]
        );
    }

    #[test]
    fn unknown_points_and_bad_passes_are_refused() {
        let err = parse("log-append-unsyncd").err().expect("misspelt");
        assert!(
            err.contains("no crash point \"log-append-unsyncd\""),
            "{err}"
        );
        assert!(
            err.contains("log-append-unsynced"),
            "names the known points: {err}"
        );
        for bad in ["sm-apply-before-write@0", "sm-apply-before-write@x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
