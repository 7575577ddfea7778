//! The snapshot format: what `GET /v1/snapshot` streams, what `kvctl
//! snapshot save` writes, what `kvnode restore` reads, and what the nodes
//! send each other to catch a follower up. One definition, so a backup is
//! exactly a raft snapshot and both are checked the same way.
//!
//! Layout (all integers big-endian):
//! `MAGIC` (8 bytes), the `u64` store revision, the auth state and the lease
//! table (each a `u32` length then the node's MessagePack encoding), then per
//! key `u32 key_len | key | u64 revision | u32 value_len | value`, then
//! `u32::MAX` and the `u64` record count, then (version 5) the SHA-256 of
//! every byte before it. The count catches a transfer cut between records,
//! the digest any other damage.
//!
//! Older versions stay readable (a node may receive a snapshot from a node
//! of an older release): `RKVSNAP4` has no digest, `RKVSNAP3` no lease
//! section either, `RKVSNAP2` no auth section, and `RKVSNAP1` no store
//! revision (the decoder reports `None`).
//!
//! The decoder is push-based: feed it chunks as they arrive (a download, a
//! file read) and it hands out records, so no caller holds a snapshot in
//! memory.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"RKVSNAP5";
const MAGIC_V4: &[u8; 8] = b"RKVSNAP4";
const MAGIC_V3: &[u8; 8] = b"RKVSNAP3";
const MAGIC_V2: &[u8; 8] = b"RKVSNAP2";
const MAGIC_V1: &[u8; 8] = b"RKVSNAP1";
const END: u32 = u32::MAX;

/// Whether `head` (a file's first 8 bytes) is the magic of any snapshot
/// version this code reads: what may be deleted as a snapshot.
pub fn is_magic(head: &[u8]) -> bool {
    [MAGIC, MAGIC_V4, MAGIC_V3, MAGIC_V2, MAGIC_V1]
        .iter()
        .any(|m| head == m.as_slice())
}
const DIGEST_LEN: usize = 32;
/// Larger than any key or value a node accepts (values are capped by
/// `--max-value-bytes`, 1 MiB by default): a corrupt length fails here
/// instead of making the reader wait for, or allocate, gigabytes.
pub const MAX_FIELD_BYTES: u32 = 64 << 20;

/// The content type of the stream.
pub const CONTENT_TYPE: &str = "application/vnd.raftkv.snapshot";
/// Response header: the store revision the snapshot was taken at.
pub const REVISION_HEADER: &str = "x-raftkv-revision";

/// Writes a snapshot in the current version. Hashes as it goes; `finish`
/// appends the trailer.
pub struct Encoder<W: Write> {
    out: W,
    hasher: Sha256,
    count: u64,
    bytes: u64,
}

impl<W: Write> Encoder<W> {
    /// `auth`, `leases`: the node's encoded auth state and lease table
    /// (empty for none).
    pub fn new(out: W, store_revision: u64, auth: &[u8], leases: &[u8]) -> io::Result<Self> {
        let mut e = Encoder {
            out,
            hasher: Sha256::new(),
            count: 0,
            bytes: 0,
        };
        e.put(MAGIC)?;
        e.put(&store_revision.to_be_bytes())?;
        for blob in [auth, leases] {
            e.put(&len32(blob.len())?.to_be_bytes())?;
            e.put(blob)?;
        }
        Ok(e)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }

    pub fn add(&mut self, key: &[u8], revision: u64, value: &[u8]) -> io::Result<()> {
        self.put(&len32(key.len())?.to_be_bytes())?;
        self.put(key)?;
        self.put(&revision.to_be_bytes())?;
        self.put(&len32(value.len())?.to_be_bytes())?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer; returns the writer and what was written.
    pub fn finish(mut self) -> io::Result<(W, Trailer)> {
        self.put(&END.to_be_bytes())?;
        let count = self.count;
        self.put(&count.to_be_bytes())?;
        let digest: [u8; DIGEST_LEN] = self.hasher.finalize().into();
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((
            self.out,
            Trailer {
                records: count,
                bytes: self.bytes + DIGEST_LEN as u64,
                sha256: Some(hex(&digest)),
            },
        ))
    }
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_FIELD_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "snapshot field too large"))
}

/// What a complete snapshot said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub records: u64,
    /// Size of the whole snapshot.
    pub bytes: u64,
    /// Hex SHA-256, verified; `None` for versions before 5, which had none.
    pub sha256: Option<String>,
}

/// The sections before the records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The format version (1 to 5).
    pub version: u8,
    /// `None` for version 1, which did not carry it.
    pub store_revision: Option<u64>,
    /// The encoded auth state; empty for none (and before version 3).
    pub auth: Vec<u8>,
    /// The encoded lease table; empty for none (and before version 4).
    pub leases: Vec<u8>,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a raftkv snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot field of {0} bytes is larger than any a node writes: the file is corrupt")]
    FieldTooLarge(u32),
    #[error("snapshot says it holds {expected} records but has {found}: the file is corrupt")]
    CountMismatch { expected: u64, found: u64 },
    #[error(
        "snapshot checksum mismatch (expected {expected}, computed {computed}): the file is corrupt"
    )]
    Checksum { expected: String, computed: String },
    #[error("snapshot is truncated: it ends {0}")]
    Truncated(&'static str),
    #[error("{0} bytes after the end of the snapshot")]
    TrailingBytes(usize),
}

impl From<DecodeError> for io::Error {
    fn from(e: DecodeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Magic,
    Revision,
    AuthLen,
    Auth(u32),
    LeaseLen,
    Leases(u32),
    Records,
    Count,
    Digest,
    Done,
}

impl State {
    fn where_(self) -> &'static str {
        match self {
            State::Magic | State::Revision | State::AuthLen | State::Auth(_) => "in its header",
            State::LeaseLen | State::Leases(_) => "in its lease section",
            State::Records => "among its records",
            State::Count | State::Digest => "in its trailer",
            State::Done => "after its end",
        }
    }
}

/// Checks a snapshot while it streams past and hands out its records.
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    state: State,
    header: Header,
    hasher: Sha256,
    count: u64,
    total: u64,
    trailer: Option<Trailer>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            state: State::Magic,
            header: Header::default(),
            hasher: Sha256::new(),
            count: 0,
            total: 0,
            trailer: None,
        }
    }

    /// The header, once it has been read (`version` is 0 before).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Records decoded so far.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Takes the next chunk; calls `record(key, revision, value)` for each
    /// record it completes, in order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut record: impl FnMut(&[u8], u64, &[u8]),
    ) -> Result<(), DecodeError> {
        self.total += chunk.len() as u64;
        if self.state == State::Done {
            return Err(DecodeError::TrailingBytes(chunk.len()));
        }
        // Compact what has been read, then append.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
        self.run(&mut record)?;
        if self.state == State::Done && self.pos < self.buf.len() {
            return Err(DecodeError::TrailingBytes(self.buf.len() - self.pos));
        }
        Ok(())
    }

    /// Ends the stream: the trailer must have been read and checked.
    pub fn finish(self) -> Result<(Header, Trailer), DecodeError> {
        match self.trailer {
            Some(t) if self.state == State::Done => Ok((self.header, t)),
            _ => Err(DecodeError::Truncated(self.state.where_())),
        }
    }

    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` unread bytes, hashed and consumed; `None` until there.
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.available() < n {
            return None;
        }
        let s = &self.buf[self.pos..self.pos + n];
        // Versions before 5 have no digest to check this against; hashing
        // them anyway keeps one path.
        self.hasher.update(s);
        self.pos += n;
        Some(s)
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.buf.get(self.pos + off..self.pos + off + 4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }

    fn take_u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn take_len(&mut self) -> Result<Option<u32>, DecodeError> {
        let Some(n) = self.u32_at(0) else {
            return Ok(None);
        };
        if n > MAX_FIELD_BYTES {
            return Err(DecodeError::FieldTooLarge(n));
        }
        self.take(4);
        Ok(Some(n))
    }

    fn run(&mut self, record: &mut impl FnMut(&[u8], u64, &[u8])) -> Result<(), DecodeError> {
        loop {
            let next = match self.state {
                State::Magic => {
                    let Some(m) = self.take(8) else { return Ok(()) };
                    let version = match <&[u8; 8]>::try_from(m).ok() {
                        Some(m) if m == MAGIC => 5,
                        Some(m) if m == MAGIC_V4 => 4,
                        Some(m) if m == MAGIC_V3 => 3,
                        Some(m) if m == MAGIC_V2 => 2,
                        Some(m) if m == MAGIC_V1 => 1,
                        _ => return Err(DecodeError::BadMagic),
                    };
                    self.header.version = version;
                    if version == 1 {
                        State::Records
                    } else {
                        State::Revision
                    }
                }
                State::Revision => {
                    let Some(r) = self.take_u64() else {
                        return Ok(());
                    };
                    self.header.store_revision = Some(r);
                    if self.header.version >= 3 {
                        State::AuthLen
                    } else {
                        State::Records
                    }
                }
                State::AuthLen => match self.take_len()? {
                    Some(n) => State::Auth(n),
                    None => return Ok(()),
                },
                State::Auth(n) => {
                    let Some(b) = self.take(n as usize) else {
                        return Ok(());
                    };
                    self.header.auth = b.to_vec();
                    if self.header.version >= 4 {
                        State::LeaseLen
                    } else {
                        State::Records
                    }
                }
                State::LeaseLen => match self.take_len()? {
                    Some(n) => State::Leases(n),
                    None => return Ok(()),
                },
                State::Leases(n) => {
                    let Some(b) = self.take(n as usize) else {
                        return Ok(());
                    };
                    self.header.leases = b.to_vec();
                    State::Records
                }
                State::Records => {
                    let Some(klen) = self.u32_at(0) else {
                        return Ok(());
                    };
                    if klen == END {
                        self.take(4);
                        State::Count
                    } else {
                        if klen > MAX_FIELD_BYTES {
                            return Err(DecodeError::FieldTooLarge(klen));
                        }
                        let k = klen as usize;
                        let Some(vlen) = self.u32_at(4 + k + 8) else {
                            return Ok(());
                        };
                        if vlen > MAX_FIELD_BYTES {
                            return Err(DecodeError::FieldTooLarge(vlen));
                        }
                        let whole = 4 + k + 8 + 4 + vlen as usize;
                        let start = self.pos;
                        if self.take(whole).is_none() {
                            return Ok(());
                        }
                        let b = &self.buf[start..start + whole];
                        let key = &b[4..4 + k];
                        let rev =
                            u64::from_be_bytes(b[4 + k..12 + k].try_into().unwrap_or_default());
                        record(key, rev, &b[16 + k..]);
                        self.count += 1;
                        State::Records
                    }
                }
                State::Count => {
                    let Some(expected) = self.take_u64() else {
                        return Ok(());
                    };
                    if expected != self.count {
                        return Err(DecodeError::CountMismatch {
                            expected,
                            found: self.count,
                        });
                    }
                    if self.header.version >= 5 {
                        State::Digest
                    } else {
                        self.trailer = Some(Trailer {
                            records: self.count,
                            bytes: self.total - self.available() as u64,
                            sha256: None,
                        });
                        State::Done
                    }
                }
                State::Digest => {
                    if self.available() < DIGEST_LEN {
                        return Ok(());
                    }
                    let expected = hex(&self.buf[self.pos..self.pos + DIGEST_LEN]);
                    self.pos += DIGEST_LEN;
                    let computed = hex(&std::mem::take(&mut self.hasher).finalize());
                    if expected != computed {
                        return Err(DecodeError::Checksum { expected, computed });
                    }
                    self.trailer = Some(Trailer {
                        records: self.count,
                        bytes: self.total - self.available() as u64,
                        sha256: Some(computed),
                    });
                    State::Done
                }
                State::Done => return Ok(()),
            };
            self.state = next;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), 4242, b"auth-blob", b"lease-blob").expect("new");
        for i in 0..n {
            e.add(format!("k{i:03}").as_bytes(), i, &vec![i as u8; i as usize])
                .expect("add");
        }
        let (bytes, t) = e.finish().expect("finish");
        assert_eq!(t.records, n);
        assert_eq!(t.bytes, bytes.len() as u64);
        bytes
    }

    type Records = Vec<(Vec<u8>, u64, Vec<u8>)>;

    fn decode_in_chunks(
        bytes: &[u8],
        chunk: usize,
    ) -> Result<(Header, Trailer, Records), DecodeError> {
        let mut d = Decoder::new();
        let mut seen = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.feed(c, |k, r, v| seen.push((k.to_vec(), r, v.to_vec())))?;
        }
        let (h, t) = d.finish()?;
        Ok((h, t, seen))
    }

    #[test]
    fn round_trip_whatever_the_chunking() {
        let bytes = sample(100);
        for chunk in [1, 3, 7, 64, 1 << 20] {
            let (h, t, seen) = decode_in_chunks(&bytes, chunk).expect("decode");
            assert_eq!(h.version, 5);
            assert_eq!(h.store_revision, Some(4242));
            assert_eq!(h.auth, b"auth-blob");
            assert_eq!(h.leases, b"lease-blob");
            assert_eq!(t.records, 100);
            assert_eq!(t.bytes, bytes.len() as u64);
            assert_eq!(t.sha256.as_deref().map(str::len), Some(64));
            assert_eq!(seen.len(), 100);
            assert_eq!(seen[7], (b"k007".to_vec(), 7, vec![7u8; 7]));
        }
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let bytes = sample(20);
        for cut in [
            0,
            5,
            8,
            30,
            bytes.len() / 2,
            bytes.len() - 33,
            bytes.len() - 1,
        ] {
            let err = decode_in_chunks(&bytes[..cut], 16).expect_err("truncated");
            assert!(matches!(err, DecodeError::Truncated(_)), "cut {cut}: {err}");
        }
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let bytes = sample(20);
        // A byte inside a value: only the digest can tell.
        let mut bad = bytes.clone();
        let at = bytes.len() - 32 - 12 - 3;
        bad[at] ^= 0x40;
        assert!(matches!(
            decode_in_chunks(&bad, 1000),
            Err(DecodeError::Checksum { .. })
        ));
        // A byte of the digest itself.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            decode_in_chunks(&bad, 1000),
            Err(DecodeError::Checksum { .. })
        ));
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(
            decode_in_chunks(&bad, 1000).err(),
            Some(DecodeError::BadMagic)
        );
    }

    #[test]
    fn corrupt_lengths_fail_fast_and_trailing_bytes_are_refused() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&(MAX_FIELD_BYTES + 1).to_be_bytes());
        assert!(matches!(
            decode_in_chunks(&bytes, 1000),
            Err(DecodeError::FieldTooLarge(_))
        ));
        let mut long = sample(1);
        long.push(0);
        assert_eq!(
            decode_in_chunks(&long, 1000).err(),
            Some(DecodeError::TrailingBytes(1))
        );
    }

    /// Files written by nodes of earlier releases still decode.
    #[test]
    fn older_versions_decode() {
        let record = |raw: &mut Vec<u8>| {
            raw.extend_from_slice(&1u32.to_be_bytes());
            raw.extend_from_slice(b"k");
            raw.extend_from_slice(&9u64.to_be_bytes());
            raw.extend_from_slice(&2u32.to_be_bytes());
            raw.extend_from_slice(b"vv");
            raw.extend_from_slice(&END.to_be_bytes());
            raw.extend_from_slice(&1u64.to_be_bytes());
        };
        let mut v1 = MAGIC_V1.to_vec();
        record(&mut v1);
        let (h, t, seen) = decode_in_chunks(&v1, 3).expect("v1");
        assert_eq!((h.version, h.store_revision, t.sha256), (1, None, None));
        assert_eq!(seen, vec![(b"k".to_vec(), 9, b"vv".to_vec())]);

        let mut v2 = MAGIC_V2.to_vec();
        v2.extend_from_slice(&55u64.to_be_bytes());
        record(&mut v2);
        let (h, _, _) = decode_in_chunks(&v2, 3).expect("v2");
        assert_eq!((h.version, h.store_revision), (2, Some(55)));
        assert!(h.auth.is_empty());

        let mut v4 = MAGIC_V4.to_vec();
        v4.extend_from_slice(&56u64.to_be_bytes());
        for blob in [&b"a"[..], b"ll"] {
            v4.extend_from_slice(&(blob.len() as u32).to_be_bytes());
            v4.extend_from_slice(blob);
        }
        record(&mut v4);
        let (h, t, _) = decode_in_chunks(&v4, 5).expect("v4");
        assert_eq!(
            (h.auth.as_slice(), h.leases.as_slice()),
            (&b"a"[..], &b"ll"[..])
        );
        assert_eq!(t.bytes, v4.len() as u64);
    }
}
