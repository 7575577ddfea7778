//! `kvctl snapshot save FILE` and `kvctl snapshot status FILE`: a backup of
//! the whole store, checked as it arrives (record count and SHA-256, see
//! `kvapi::snapshot`), and the same check of a file at rest. `kvnode
//! restore` turns a saved file into a new cluster.

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
    },
    /// Check a snapshot file and show its revision, keys, size and checksum.
    Status { file: PathBuf },
}

pub async fn snapshot(ctx: &Ctx, cmd: &SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Save { file, serializable } => save(ctx, file, *serializable).await,
        SnapshotCmd::Status { file } => status(ctx, file),
    }
}

/// What `save` and `status` report.
struct Summary {
    file: PathBuf,
    header: Header,
    trailer: Trailer,
    seconds: Option<f64>,
}

impl Summary {
    fn emit(&self, ctx: &Ctx) -> anyhow::Result<()> {
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
        ctx.out.emit(&json, || t.render())
    }
}

async fn save(ctx: &Ctx, file: &Path, serializable: bool) -> anyhow::Result<()> {
    let part = part_path(file);
    let mut stream = ctx.client.snapshot(serializable).await?;
    let mut out =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let started = Instant::now();
    let mut progress = Progress::new();
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
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "saved {} keys at revision {} from {} in {seconds:.1} s ({}/s)",
        trailer.records,
        stream.revision,
        stream.endpoint,
        human_bytes((trailer.bytes as f64 / seconds.max(1e-3)) as u64)
    );
    Summary {
        file: file.to_path_buf(),
        header,
        trailer,
        seconds: Some(seconds),
    }
    .emit(ctx)
}

fn status(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
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
    }
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
    Summary {
        file: file.to_path_buf(),
        header,
        trailer,
        seconds: None,
    }
    .emit(ctx)
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
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        Progress {
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
            "saving: {}, {keys} keys, {}/s",
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
