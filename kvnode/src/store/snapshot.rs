//! Snapshot files: the state machine dumped from one RocksDB snapshot (a
//! consistent view) in the snapshot format of `kvapi::snapshot`, which is
//! also what `GET /v1/snapshot` streams. Files of every earlier version are
//! read (see there); a version-1 file carries no store revision, and the
//! installer then falls back to the snapshot's last log index, which is at
//! least every revision such a node ever handed out (its revisions were log
//! indexes).

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use kvapi::snapshot::{Decoder, Encoder};

use super::sm::Record;

/// The snapshot data openraft passes around: an open file (the handle keeps
/// it readable even if a newer snapshot replaces it on disk).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
}

impl SnapshotFile {
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = File::open(&path)?;
        Ok(SnapshotFile { path, file })
    }

    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

pub struct Writer {
    enc: Encoder<BufWriter<File>>,
}

impl Writer {
    /// `auth`, `leases`: the encoded auth state and lease table (empty for
    /// none).
    pub fn create(
        path: &Path,
        store_revision: u64,
        auth: &[u8],
        leases: &[u8],
    ) -> io::Result<Self> {
        let out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        Ok(Writer {
            enc: Encoder::new(out, store_revision, auth, leases)?,
        })
    }

    pub fn add(&mut self, key: &[u8], revision: u64, value: &[u8]) -> io::Result<()> {
        self.enc.add(key, revision, value)
    }

    /// Writes the trailer and fsyncs: a snapshot is only referenced once it
    /// is complete on disk.
    pub fn finish(self) -> io::Result<u64> {
        let (out, trailer) = self.enc.finish()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(trailer.records)
    }
}

/// What `read_all` found besides the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    /// `None` for a version-1 file, which did not carry it.
    pub store_revision: Option<u64>,
    /// The encoded auth state; empty for none (and for files before v3).
    pub auth: Vec<u8>,
    /// The encoded lease table; empty for none (and for files before v4).
    pub leases: Vec<u8>,
}

/// Reads every record of a snapshot file, checking its trailer (count and,
/// from version 5, checksum). Records are handed out as they are read, so
/// a damaged file may have produced some before the error: callers build
/// something they can throw away (an SST file) and commit only on `Ok`.
pub fn read_all(mut file: &File, mut f: impl FnMut(Vec<u8>, Record)) -> io::Result<Summary> {
    let mut dec = Decoder::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        dec.feed(&chunk[..n], |k, revision, v| {
            f(
                k.to_vec(),
                Record {
                    revision,
                    value: v.to_vec(),
                },
            )
        })?;
    }
    let (header, trailer) = dec.finish()?;
    Ok(Summary {
        records: trailer.records,
        store_revision: header.store_revision,
        auth: header.auth,
        leases: header.leases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.snap");
        let mut w = Writer::create(&path, 4242, b"auth-blob", b"lease-blob").expect("create");
        for i in 0..100u64 {
            w.add(format!("k{i:03}").as_bytes(), i, &vec![i as u8; i as usize])
                .expect("add");
        }
        assert_eq!(w.finish().expect("finish"), 100);
        let mut seen = Vec::new();
        let n =
            read_all(&File::open(&path).expect("open"), |k, r| seen.push((k, r))).expect("read");
        assert_eq!(
            n,
            Summary {
                records: 100,
                store_revision: Some(4242),
                auth: b"auth-blob".to_vec(),
                leases: b"lease-blob".to_vec(),
            }
        );
        assert_eq!(seen[7].0, b"k007");
        assert_eq!(seen[7].1.value, vec![7u8; 7]);

        let full = std::fs::read(&path).expect("read");
        std::fs::write(&path, &full[..full.len() - 20]).expect("truncate");
        assert!(read_all(&File::open(&path).expect("open"), |_, _| {}).is_err());
    }
}
