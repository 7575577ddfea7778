//! `kvctl snapshot save FILE`, `status FILE`, `restore FILE` and
//! `delete FILE`: a backup of the whole store, checked as it arrives
//! (record count and SHA-256, see `kvapi::snapshot`), the same check of a
//! file at rest, the file streamed into a fresh node (which founds a new
//! cluster with it), and its removal. `kvnode restore` is the offline form
//! of `restore`.
//!
//! `--report PATH` writes the command's JSON result, or `{"error": ...}`,
//! to PATH as well: a backup Job points it at `/dev/termination-log` and
//! the operator reads the figures from the pod's status.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use kvclient::snapshot::{Decoder, Header, Trailer};

use super::Ctx;
use crate::table::Table;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stream a consistent snapshot of the whole store into FILE (progress on stderr).
    Save {
        file: PathBuf,
        /// The answering node's own state, without waiting for a quorum.
        #[arg(long)]
        serializable: bool,
        /// Also write the JSON result (or the error) to this file, e.g. /dev/termination-log.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
    },
    /// Check a snapshot file and show its revision, keys, size and checksum.
    Status { file: PathBuf },
    /// Check FILE, then stream it into the node of the one endpoint, which must never have
    /// been initialized: it restarts as the only voter of a new cluster holding the snapshot.
    Restore {
        file: PathBuf,
        /// Also write the JSON result (or the error) to this file, e.g. /dev/termination-log.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
    },
    /// Delete a snapshot file; anything that does not start like a snapshot is refused.
    Delete {
        file: PathBuf,
        /// Succeed when FILE does not exist.
        #[arg(long)]
        missing_ok: bool,
        /// Also write the JSON result (or the error) to this file, e.g. /dev/termination-log.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
    },
}

pub async fn snapshot(ctx: &Ctx, cmd: &SnapshotCmd) -> anyhow::Result<()> {
    let (result, report) = match cmd {
        SnapshotCmd::Save {
            file,
            serializable,
            report,
        } => (save(ctx, file, *serializable).await, report),
        SnapshotCmd::Status { file } => (status(file), &None),
        SnapshotCmd::Restore { file, report } => (restore(ctx, file).await, report),
        SnapshotCmd::Delete {
            file,
            missing_ok,
            report,
        } => (delete(file, *missing_ok), report),
    };
    if let Some(path) = report {
        let json = match &result {
            Ok((json, _)) => json.clone(),
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        // The command's own outcome matters more than its report: a report
        // that cannot be written is said, and the exit status stays.
        if let Err(e) = std::fs::write(path, serde_json::to_vec(&json)?) {
            eprintln!(
                "kvctl: could not write the report to {}: {e}",
                path.display()
            );
        }
    }
    let (json, table) = result?;
    ctx.out.emit(&json, || table)
}

/// A command's result: its JSON form and its table.
type Outcome = (serde_json::Value, String);

/// What `save`, `status` and `restore` report of a snapshot.
struct Summary {
    file: PathBuf,
    header: Header,
    trailer: Trailer,
    seconds: Option<f64>,
}

impl Summary {
    fn outcome(&self) -> Outcome {
        let sha = self.trailer.sha256.clone().unwrap_or_else(|| "-".into());
        let revision = self.header.store_revision;
        let json = serde_json::json!({
            "file": self.file.display().to_string(),
            "revision": revision,
            "keys": self.trailer.records,
            "bytes": self.trailer.bytes,
            "sha256": self.trailer.sha256,
            "version": self.header.version,
            "checksum_verified": self.trailer.sha256.is_some(),
            "seconds": self.seconds,
        });
        let mut t = Table::new(&["REVISION", "KEYS", "SIZE", "SHA256", "FORMAT"]);
        t.row(vec![
            revision.map_or_else(|| "-".into(), |r| r.to_string()),
            self.trailer.records.to_string(),
            human_bytes(self.trailer.bytes),
            sha,
            format!("v{}", self.header.version),
        ]);
        (json, t.render())
    }
}
async fn save(ctx: &Ctx, file: &Path, serializable: bool) -> anyhow::Result<Outcome> {
    let part = part_path(file);
    // A backup Job names a file under directories of its own (namespace,
    // cluster) on a fresh volume.
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut stream = ctx.client.snapshot(serializable).await?;
    let mut out =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let started = Instant::now();
    let mut progress = Progress::new("saving");
    let mut dec = Decoder::new();
    let result: anyhow::Result<(Header, Trailer)> = async {
        while let Some(chunk) = stream.next_chunk().await? {
            dec.feed(&chunk, |_, _, _| {})
                .with_context(|| format!("snapshot from {}", stream.endpoint))?;
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", part.display()))?;
            progress.tick(dec.bytes(), dec.records(), started);
        }
        let done = dec
            .finish()
            .with_context(|| format!("snapshot from {}", stream.endpoint))?;
        out.sync_all()
            .with_context(|| format!("syncing {}", part.display()))?;
        Ok(done)
    }
    .await;
    progress.clear();
    let (header, trailer) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, file).with_context(|| format!("renaming to {}", file.display()))?;
    sync_dir(file)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "saved {} keys at revision {} from {} in {seconds:.1} s ({}/s)",
        trailer.records,
        stream.revision,
        stream.endpoint,
        human_bytes((trailer.bytes as f64 / seconds.max(1e-3)) as u64)
    );
    Ok(Summary {
        file: file.to_path_buf(),
        header,
        trailer,
        seconds: Some(seconds),
    }
    .outcome())
}

/// The rename of a saved snapshot survives a crash only once its directory
/// is synced: a backup reported done must be there after a power cut.
fn sync_dir(file: &Path) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Reads all of `file` through the decoder: its header and trailer when it
/// is a whole snapshot whose checksum holds.
fn check(file: &Path, progress: &mut Progress) -> anyhow::Result<(Header, Trailer)> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let started = Instant::now();
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        dec.feed(&buf[..n], |_, _, _| {})
            .with_context(|| format!("{}", file.display()))?;
        progress.tick(dec.bytes(), dec.records(), started);
    }
    progress.clear();
    let (header, trailer) = dec
        .finish()
        .with_context(|| format!("{}", file.display()))?;
    if trailer.sha256.is_none() {
        bail!(
            "{}: format v{} carries no checksum (only its record count was checked)",
            file.display(),
            header.version
        );
    }
    Ok((header, trailer))
}

fn status(file: &Path) -> anyhow::Result<Outcome> {
    let (header, trailer) = check(file, &mut Progress::new("checking"))?;
    Ok(Summary {
        file: file.to_path_buf(),
        header,
        trailer,
        seconds: None,
    }
    .outcome())
}

/// Checks the whole file first, so that a damaged one is refused before a
/// byte reaches the node (which checks again as it receives).
async fn restore(ctx: &Ctx, file: &Path) -> anyhow::Result<Outcome> {
    let [endpoint] = ctx.endpoints() else {
        bail!("restore goes to one node: give exactly one endpoint (--endpoints URL)");
    };
    let started = Instant::now();
    let (header, trailer) = check(file, &mut Progress::new("checking"))?;
    eprintln!(
        "{}: {} keys at revision {}, checksum verified; sending {} to {endpoint}",
        file.display(),
        trailer.records,
        header.store_revision.unwrap_or_default(),
        human_bytes(trailer.bytes)
    );
    let body = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let restored = ctx.client.restore(body).await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", restored.message);
    let json = serde_json::json!({
        "file": file.display().to_string(),
        "endpoint": endpoint,
        "node_id": restored.node_id,
        "revision": restored.revision,
        "keys": restored.keys,
        "bytes": restored.bytes,
        "sha256": trailer.sha256,
        "restarting": restored.restarting,
        "seconds": seconds,
    });
    let mut t = Table::new(&["NODE", "REVISION", "KEYS", "SIZE", "RESTARTING"]);
    t.row(vec![
        restored.node_id.to_string(),
        restored.revision.to_string(),
        restored.keys.to_string(),
        human_bytes(restored.bytes),
        restored.restarting.to_string(),
    ]);
    Ok((json, t.render()))
}

/// Deletes FILE (and a `.part` that an interrupted save left beside it)
/// only when it starts with a snapshot's magic: a wrong path in a
/// retention policy must not remove something else.
fn delete(file: &Path, missing_ok: bool) -> anyhow::Result<Outcome> {
    let mut head = [0u8; 8];
    let read = std::fs::File::open(file).and_then(|mut f| f.read_exact(&mut head));
    let deleted = match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => false,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            bail!(
                "{}: not a raftkv snapshot (shorter than its header); not deleted",
                file.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", file.display())),
        Ok(()) => {
            if !kvclient::snapshot::is_magic(&head) {
                bail!("{}: not a raftkv snapshot; not deleted", file.display());
            }
            std::fs::remove_file(file).with_context(|| format!("deleting {}", file.display()))?;
            true
        }
    };
    let _ = std::fs::remove_file(part_path(file));
    if deleted {
        sync_dir(file)?;
    }
    let json = serde_json::json!({ "file": file.display().to_string(), "deleted": deleted });
    let text = if deleted {
        format!("deleted {}", file.display())
    } else {
        format!("{}: already absent", file.display())
    };
    Ok((json, text))
}

/// Where `save` writes until the snapshot is complete and checked, so FILE
/// is only ever a whole snapshot.
fn part_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

/// Progress on stderr: rewritten in place once a second on a terminal, a
/// line every 10 s otherwise (logs of a backup job).
struct Progress {
    label: &'static str,
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(label: &'static str) -> Self {
        Progress {
            label,
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn tick(&mut self, bytes: u64, keys: u64, started: Instant) {
        let every = if self.tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < every)
            || (self.last.is_none() && now - started < every)
        {
            return;
        }
        self.last = Some(now);
        let rate = bytes as f64 / (now - started).as_secs_f64().max(1e-3);
        let line = format!(
            "{}: {}, {keys} keys, {}/s",
            self.label,
            human_bytes(bytes),
            human_bytes(rate as u64)
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    fn clear(&self) {
        if self.tty && self.last.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_readable_and_the_part_file_sits_beside_the_target() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(
            part_path(Path::new("/b/backup.snap")),
            PathBuf::from("/b/backup.snap.part")
        );
    }
}
