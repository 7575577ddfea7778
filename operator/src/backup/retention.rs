//! Pure: when the next scheduled backup of a KvCluster is due, and which
//! scheduled KvBackups retention deletes.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::crd::BackupPhase;
use super::schedule::Schedule;

/// Failed scheduled backups kept for inspection.
pub const KEEP_FAILED: usize = 3;

/// A scheduled KvBackup as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    pub name: String,
    /// The schedule time it was created for (its annotation).
    pub scheduled_at: Timestamp,
    pub phase: Option<BackupPhase>,
    /// Already being deleted.
    pub deleting: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Create the backup for this schedule time now.
    pub create: Option<Timestamp>,
    /// KvBackups to delete (with their objects: scheduled backups are
    /// created with `deletionPolicy: Delete`).
    pub delete: Vec<String>,
    /// When to look again: the next schedule time.
    pub wake_in: Option<Duration>,
}

/// `since`: when scheduling began for this cluster (its creation), the
/// reference when no scheduled backup exists yet. As a CronJob with
/// `concurrencyPolicy: Forbid` and no catch-up: a run missed while the
/// operator was down or the previous backup ran is run once, late; older
/// missed runs are skipped.
pub fn decide(
    schedule: &Schedule,
    keep: usize,
    backups: &[Scheduled],
    since: Timestamp,
    now: Timestamp,
) -> Decision {
    let live: Vec<&Scheduled> = backups.iter().filter(|b| !b.deleting).collect();
    let last = live.iter().map(|b| b.scheduled_at).max().unwrap_or(since);
    let running = live.iter().any(|b| {
        !matches!(
            b.phase,
            Some(BackupPhase::Succeeded) | Some(BackupPhase::Failed)
        )
    });
    let mut decision = Decision::default();
    // The latest schedule time that has passed since the last run.
    let mut due = None;
    let mut next = schedule.next_after(last);
    while let Some(t) = next.filter(|t| *t <= now) {
        due = Some(t);
        next = schedule.next_after(t);
    }
    if !running {
        decision.create = due;
    }
    decision.wake_in = next.map(|t| {
        let secs = (t.as_second() - now.as_second()).max(1);
        Duration::from_secs(u64::try_from(secs).unwrap_or(1))
    });

    let mut by_age: Vec<&&Scheduled> = live.iter().collect();
    by_age.sort_by_key(|b| std::cmp::Reverse(b.scheduled_at));
    let mut succeeded = 0;
    let mut failed = 0;
    for b in by_age {
        let over = match b.phase {
            Some(BackupPhase::Succeeded) => {
                succeeded += 1;
                succeeded > keep
            }
            Some(BackupPhase::Failed) => {
                failed += 1;
                failed > KEEP_FAILED
            }
            _ => false,
        };
        if over {
            decision.delete.push(b.name.clone());
        }
    }
    decision
}

/// The name of the KvBackup for schedule time `at`: sortable, unique per
/// minute, within the 63 characters a label value allows for clusters of
/// up to 47.
pub fn backup_name(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-{}", at.strftime("%Y%m%d-%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn sched(name: &str, at: &str, phase: Option<BackupPhase>) -> Scheduled {
        Scheduled {
            name: name.into(),
            scheduled_at: t(at),
            phase,
            deleting: false,
        }
    }

    #[test]
    fn first_run_comes_at_the_first_schedule_time_after_creation() {
        let hourly: Schedule = "0 * * * *".parse().expect("cron");
        let since = t("2026-12-07T10:20:00Z");
        let d = decide(&hourly, 3, &[], since, t("2026-12-07T10:59:00Z"));
        assert_eq!(d.create, None);
        assert_eq!(d.wake_in, Some(Duration::from_secs(60)));
        let d = decide(&hourly, 3, &[], since, t("2026-12-07T11:00:30Z"));
        assert_eq!(d.create, Some(t("2026-12-07T11:00:00Z")));
    }

    #[test]
    fn missed_runs_are_run_once_and_not_while_one_runs() {
        let hourly: Schedule = "0 * * * *".parse().expect("cron");
        let since = t("2026-12-07T00:00:00Z");
        let done = [sched(
            "a",
            "2026-12-07T01:00:00Z",
            Some(BackupPhase::Succeeded),
        )];
        // Down from 01:00 to 05:30: only 05:00 runs.
        let d = decide(&hourly, 3, &done, since, t("2026-12-07T05:30:00Z"));
        assert_eq!(d.create, Some(t("2026-12-07T05:00:00Z")));
        let running = [sched(
            "a",
            "2026-12-07T01:00:00Z",
            Some(BackupPhase::Running),
        )];
        let d = decide(&hourly, 3, &running, since, t("2026-12-07T05:30:00Z"));
        assert_eq!(d.create, None);
        let pending = [sched("a", "2026-12-07T01:00:00Z", None)];
        assert_eq!(
            decide(&hourly, 3, &pending, since, t("2026-12-07T05:30:00Z")).create,
            None
        );
    }

    #[test]
    fn retention_keeps_the_newest_succeeded_and_three_failed() {
        let every: Schedule = "* * * * *".parse().expect("cron");
        let ok = Some(BackupPhase::Succeeded);
        let bad = Some(BackupPhase::Failed);
        let backups = [
            sched("s1", "2026-12-07T00:01:00Z", ok),
            sched("f1", "2026-12-07T00:02:00Z", bad),
            sched("s2", "2026-12-07T00:03:00Z", ok),
            sched("f2", "2026-12-07T00:04:00Z", bad),
            sched("f3", "2026-12-07T00:05:00Z", bad),
            sched("s3", "2026-12-07T00:06:00Z", ok),
            sched("f4", "2026-12-07T00:07:00Z", bad),
            sched("r", "2026-12-07T00:08:00Z", Some(BackupPhase::Running)),
        ];
        let d = decide(
            &every,
            2,
            &backups,
            t("2026-12-07T00:00:00Z"),
            t("2026-12-07T00:08:10Z"),
        );
        let mut deleted = d.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["f1", "s1"]);
        // One being deleted no longer counts.
        let mut gone = backups.clone();
        gone[5].deleting = true;
        let d = decide(
            &every,
            2,
            &gone,
            t("2026-12-07T00:00:00Z"),
            t("2026-12-07T00:08:10Z"),
        );
        let mut deleted = d.delete;
        deleted.sort();
        assert_eq!(deleted, ["f1"]);
    }

    #[test]
    fn names_sort_by_time() {
        assert_eq!(
            backup_name("kv", t("2026-12-07T05:00:00Z")),
            "kv-20261207-050000"
        );
    }
}
