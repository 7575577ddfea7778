//! Where the lease table lives on disk: one record per lease in the `sm`
//! column family (`lease/` + big-endian id), written in the same batch as
//! the apply that changed it. The table itself (`crate::lease`) is kept in
//! memory, rebuilt from these records at start and from a snapshot's lease
//! section on install.

use std::collections::BTreeSet;

use rocksdb::WriteBatch;

use super::{CF_SM, Db, Result, StoreError, decode, encode};
use crate::lease::{Lease, LeaseTable};

const PREFIX: &[u8] = b"lease/";

fn record_key(id: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The first key after every lease record.
fn records_end() -> Vec<u8> {
    super::prefix_upper_bound(PREFIX).unwrap_or_default()
}

/// Reads every lease record of `db` (or of one RocksDB snapshot of it).
fn read(
    iter: impl Iterator<Item = std::result::Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
) -> Result<Vec<(u64, Lease)>> {
    let mut out = Vec::new();
    for kv in iter {
        let (k, v) = kv?;
        if !k.starts_with(PREFIX) {
            break;
        }
        let id = super::decode_u64(&k[PREFIX.len()..]).ok_or(StoreError::Corrupt("lease id"))?;
        out.push((id, decode("lease", &v)?));
    }
    Ok(out)
}

pub(super) fn load(db: &Db) -> Result<LeaseTable> {
    let iter = db.db().iterator_cf(
        db.cf(CF_SM)?,
        rocksdb::IteratorMode::From(PREFIX, rocksdb::Direction::Forward),
    );
    Ok(LeaseTable::from_leases(read(iter)?))
}

/// The lease table as of `view`, encoded for a snapshot file.
pub(super) fn dump(db: &Db, view: &rocksdb::Snapshot<'_>) -> Result<Vec<u8>> {
    let iter = view.iterator_cf(
        db.cf(CF_SM)?,
        rocksdb::IteratorMode::From(PREFIX, rocksdb::Direction::Forward),
    );
    encode(&read(iter)?)
}

/// Decodes a snapshot's lease section (empty: no leases).
pub(super) fn undump(blob: &[u8]) -> Result<Vec<(u64, Lease)>> {
    if blob.is_empty() {
        return Ok(Vec::new());
    }
    decode("snapshot leases", blob)
}

/// Writes the records of the leases in `changed` as `table` now has them
/// (deleting those it no longer has).
pub(super) fn write_changed(
    db: &Db,
    batch: &mut WriteBatch,
    table: &LeaseTable,
    changed: &BTreeSet<u64>,
) -> Result<()> {
    let cf = db.cf(CF_SM)?;
    for id in changed {
        match table.get(*id) {
            Some(l) => batch.put_cf(cf, record_key(*id), encode(l)?),
            None => batch.delete_cf(cf, record_key(*id)),
        }
    }
    Ok(())
}

/// Replaces every lease record with `leases`, in `batch` (snapshot install).
pub(super) fn replace_in(db: &Db, batch: &mut WriteBatch, leases: &[(u64, Lease)]) -> Result<()> {
    let cf = db.cf(CF_SM)?;
    batch.delete_range_cf(cf, PREFIX.to_vec(), records_end());
    for (id, l) in leases {
        batch.put_cf(cf, record_key(*id), encode(l)?);
    }
    Ok(())
}
