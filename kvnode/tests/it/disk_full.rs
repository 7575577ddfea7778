//! A full disk under a node's data dir (a small tmpfs, which needs root: CI
//! runs as root, as its Kubernetes tests do). The node must stop accepting
//! writes with an error that says why, report itself not live (so that its
//! supervisor restarts it), lose no acknowledged write, and serve again once
//! space is back and it is restarted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kvclient::{Consistency, ErrorCode};

use crate::common::{NodeProc, Opts, Start, wait_for};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, megabytes: u32) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs at {} failed: this test needs root",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }

    fn resize(&self, megabytes: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "resizing the tmpfs at {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn value(i: usize) -> String {
    format!("{i:05}-{}", "v".repeat(60_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_writes_loses_nothing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), 48);
    let mut n = NodeProc::new(dir.path(), "d0", Opts::default());
    n.data_dir = disk.0.join("d0");
    n.start(Start::default().args(&["--dev"])).await;
    let c = n.client();
    wait_for(Duration::from_secs(20), "d0 ready", || async {
        matches!(c.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;

    let mut acked = 0;
    let refusal = loop {
        match c.put(&format!("k/{acked:05}"), value(acked)).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 5_000, "48 MiB never filled up");
    };
    println!("MEASURED {acked} writes of 60 kB acknowledged before the 48 MiB disk was full");
    assert!(acked >= 100, "the disk filled after only {acked} writes");
    assert_eq!(refusal.code(), Some(ErrorCode::Unavailable), "{refusal}");
    assert!(refusal.to_string().contains("disk is full"), "{refusal}");
    // Still refused, with the same reason; not live, not ready.
    let again = c.put("k/again", "small").await.expect_err("no more writes");
    assert!(again.to_string().contains("disk is full"), "{again}");
    let health = reqwest::get(format!("{}/healthz", n.client_url()))
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 503);
    assert!(health.text().await.expect("body").contains("disk is full"));
    assert!(
        matches!(c.ready().await, Ok(Err(_))),
        "a stopped node is not ready"
    );

    // Space back; the supervisor restarts the node that reported itself dead.
    disk.resize(512);
    n.kill9();
    n.start(Start::default().args(&["--dev"])).await;
    wait_for(Duration::from_secs(30), "d0 ready again", || async {
        matches!(c.ready().await, Ok(Ok(()))).then_some(())
    })
    .await;
    for i in 0..acked {
        let got = c
            .get_with(&format!("k/{i:05}"), Consistency::Linearizable)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged write k/{i:05} lost"));
        assert_eq!(got.value, value(i).as_bytes(), "k/{i:05}");
    }
    c.put("k/after", "space is back")
        .await
        .expect("writes again");
}
