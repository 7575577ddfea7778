//! Snapshot files: a flat, length-prefixed dump of the `data` column family
//! taken from one RocksDB snapshot (a consistent view).
//!
//! Layout: `MAGIC`, the `u64` store revision (the revision counter of the
//! state machine, which deletes advance too, so it cannot be derived from the
//! records), the auth state (`u32` length, then its MessagePack encoding;
//! users and roles are state-machine state like any key), the lease table
//! (the same way), then per key `u32 key_len | key | u64 revision | u32 value_len |
//! value`, then `u32::MAX` and the `u64` record count, so a truncated
//! transfer is detected before anything is installed.
//!
//! Older files are still read: `RKVSNAP3` has no lease section (such nodes
//! had no leases), `RKVSNAP2` no auth section either (such nodes
//! had no auth: the installed state is empty), and `RKVSNAP1` (from before
//! the store revision existed) no revision either; their reader reports
//! `None` and the installer falls back to the snapshot's last log index,
//! which is at least every revision such a node ever handed out (its
//! revisions were log indexes).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::sm::Record;

const MAGIC: &[u8; 8] = b"RKVSNAP4";
const MAGIC_V3: &[u8; 8] = b"RKVSNAP3";
const MAGIC_V2: &[u8; 8] = b"RKVSNAP2";
const MAGIC_V1: &[u8; 8] = b"RKVSNAP1";
const END: u32 = u32::MAX;

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
    out: BufWriter<File>,
    count: u64,
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
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&store_revision.to_be_bytes())?;
        for blob in [auth, leases] {
            let len = u32::try_from(blob.len()).map_err(io::Error::other)?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(blob)?;
        }
        Ok(Writer { out, count: 0 })
    }

    pub fn add(&mut self, key: &[u8], rec: &Record) -> io::Result<()> {
        let klen = u32::try_from(key.len()).map_err(io::Error::other)?;
        let vlen = u32::try_from(rec.value.len()).map_err(io::Error::other)?;
        self.out.write_all(&klen.to_be_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(&rec.revision.to_be_bytes())?;
        self.out.write_all(&vlen.to_be_bytes())?;
        self.out.write_all(&rec.value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and fsyncs: a snapshot is only referenced once it
    /// is complete on disk.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.write_all(&END.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.count)
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

/// Reads every record of a snapshot file, checking magic and trailer.
pub fn read_all(file: &File, mut f: impl FnMut(Vec<u8>, Record)) -> io::Result<Summary> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {m}"));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let (store_revision, auth, leases) = if &magic == MAGIC || &magic == MAGIC_V3 {
        let rev = read_u64(&mut r)?;
        let alen = read_u32(&mut r)?;
        let auth = read_bytes(&mut r, alen)?;
        let leases = if &magic == MAGIC {
            let llen = read_u32(&mut r)?;
            read_bytes(&mut r, llen)?
        } else {
            Vec::new()
        };
        (Some(rev), auth, leases)
    } else if &magic == MAGIC_V2 {
        (Some(read_u64(&mut r)?), Vec::new(), Vec::new())
    } else if &magic == MAGIC_V1 {
        (None, Vec::new(), Vec::new())
    } else {
        return Err(bad("bad magic"));
    };
    let mut count = 0u64;
    loop {
        let klen = read_u32(&mut r)?;
        if klen == END {
            let expect = read_u64(&mut r)?;
            if expect != count {
                return Err(bad("record count mismatch"));
            }
            return Ok(Summary {
                records: count,
                store_revision,
                auth,
                leases,
            });
        }
        let key = read_bytes(&mut r, klen)?;
        let revision = read_u64(&mut r)?;
        let vlen = read_u32(&mut r)?;
        let value = read_bytes(&mut r, vlen)?;
        f(key, Record { revision, value });
        count += 1;
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_bytes(r: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    // Bounded by the API's own limits; a corrupt length fails read_exact
    // rather than allocating absurdly.
    if len > 64 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot: record too large",
        ));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
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
            let rec = Record {
                revision: i,
                value: vec![i as u8; i as usize],
            };
            w.add(format!("k{i:03}").as_bytes(), &rec).expect("add");
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

    /// A snapshot from a node of the previous version (no auth section)
    /// still installs, with no auth state.
    #[test]
    fn version_two_files_are_read_without_auth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v2.snap");
        let mut raw = MAGIC_V2.to_vec();
        raw.extend_from_slice(&55u64.to_be_bytes());
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.extend_from_slice(b"k");
        raw.extend_from_slice(&9u64.to_be_bytes());
        raw.extend_from_slice(&0u32.to_be_bytes());
        raw.extend_from_slice(&END.to_be_bytes());
        raw.extend_from_slice(&1u64.to_be_bytes());
        std::fs::write(&path, raw).expect("write");
        let sum = read_all(&File::open(&path).expect("open"), |_, _| {}).expect("read v2");
        assert_eq!(
            sum,
            Summary {
                records: 1,
                store_revision: Some(55),
                auth: Vec::new(),
                leases: Vec::new(),
            }
        );
    }

    /// A snapshot from a node of the first version still installs.
    #[test]
    fn version_one_files_are_read_without_a_store_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.snap");
        let mut raw = MAGIC_V1.to_vec();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.extend_from_slice(b"k");
        raw.extend_from_slice(&9u64.to_be_bytes());
        raw.extend_from_slice(&2u32.to_be_bytes());
        raw.extend_from_slice(b"vv");
        raw.extend_from_slice(&END.to_be_bytes());
        raw.extend_from_slice(&1u64.to_be_bytes());
        std::fs::write(&path, raw).expect("write");
        let mut seen = Vec::new();
        let sum =
            read_all(&File::open(&path).expect("open"), |k, r| seen.push((k, r))).expect("read v1");
        assert_eq!(sum.store_revision, None);
        assert_eq!(
            seen,
            vec![(
                b"k".to_vec(),
                Record {
                    revision: 9,
                    value: b"vv".to_vec()
                }
            )]
        );
    }
}
