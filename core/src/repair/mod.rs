//! Repairs that give a repository back after one damaged file, never losing what was
//! restorable before.
//!
//! `repair index`: every pack carries a trailer listing its blobs (sealed), so an index
//! file that is damaged or gone is rebuilt from the trailers of the packs no readable
//! index file names: new index files are written first, then the damaged ones removed (a
//! crash in between leaves both, which is harmless: the same blob named twice). Memory: the
//! trailers of at most [`BATCH`] packs at a time.
//!
//! `repair snapshots`: see [`snapshots`].

mod snapshots;

pub use snapshots::{
    repair_snapshots, RemovedSnapshot, RewrittenSnapshot, SalvagedPack, SnapshotRepair,
    SnapshotRepairOptions,
};

use std::collections::HashSet;

use crate::index::{encode_file, index_path, Index};
use crate::lock::LockKind;
use crate::pack::{read_trailer, PackEntry};
use crate::{Error, Id, Repository, Result};

/// Packs re-indexed per new index file.
const BATCH: usize = 128;

/// What `repair index` found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Damaged or unreadable index files (removed unless a dry run), with why.
    pub damaged: Vec<String>,
    /// Packs no readable index file named, re-indexed from their trailers.
    pub reindexed: usize,
    /// Blobs those packs hold.
    pub blobs: usize,
    /// New index files written.
    pub written: usize,
    /// Packs whose trailer cannot be read either: their blobs are lost (`check` names the
    /// snapshots that needed them).
    pub unreadable: Vec<String>,
}

/// The packs on storage, with their sizes.
fn packs_on_storage(repo: &Repository) -> Result<Vec<(Id, u64)>> {
    Ok(repo
        .backend()
        .list("data/")?
        .into_iter()
        .filter_map(|o| {
            let id = Id::from_hex(o.path.rsplit('/').next().unwrap_or_default()).ok()?;
            Some((id, o.size))
        })
        .collect())
}

/// The packs on storage that no record of `index` names, read from their trailers; the
/// unreadable ones as messages.
pub(crate) fn unindexed_packs(
    repo: &Repository,
    index: &Index,
) -> Result<(Vec<(Id, Vec<PackEntry>)>, Vec<String>)> {
    let named: HashSet<Id> = (0..index.pack_records())
        .map(|r| index.pack_record(r).0)
        .collect();
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for (id, size) in packs_on_storage(repo)? {
        if named.contains(&id) {
            continue;
        }
        match read_trailer(repo.backend().as_ref(), repo.keys(), &id, size) {
            Ok(entries) => found.push((id, entries)),
            Err(e) => bad.push(format!("pack {}: {e}", id.short())),
        }
    }
    Ok((found, bad))
}

/// Writes index files for `found` (packs read from their trailers), [`BATCH`] packs per
/// file; returns how many. Needs the exclusive lock (`operation` names it in errors).
pub(crate) fn index_packs(
    repo: &Repository,
    found: &[(Id, Vec<PackEntry>)],
    operation: &str,
) -> Result<usize> {
    let mut written = 0;
    for batch in found.chunks(BATCH) {
        repo.ensure_lock(LockKind::Exclusive, operation)?;
        let (id, bytes) = encode_file(repo.keys(), batch)?;
        match repo.backend().create(&index_path(&id), &bytes) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => written += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Rebuilds the index from pack trailers where index files are damaged or missing.
/// Needs the exclusive lock. With `dry_run`, only says what it would do.
///
/// # Errors
/// [`Error::NotLocked`]; [`Error::NeedsDeleteRights`] for a client that may not delete;
/// backend errors.
pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<IndexRepair> {
    repo.ensure_lock(LockKind::Exclusive, "repair index")?;
    if !dry_run {
        repo.ensure_delete_rights("repair index")?;
    }
    let (index, damaged) = Index::load_lenient(repo.backend().as_ref(), repo.keys())?;
    let mut out = IndexRepair {
        damaged: damaged.iter().map(|(p, e)| format!("{p}: {e}")).collect(),
        ..IndexRepair::default()
    };
    let (found, bad) = unindexed_packs(repo, &index)?;
    out.unreadable = bad;
    out.reindexed = found.len();
    out.blobs = found.iter().map(|(_, e)| e.len()).sum();
    if dry_run {
        return Ok(out);
    }
    out.written = index_packs(repo, &found, "repair index")?;
    // Only now, with every pack they could have named indexed again.
    for (path, _) in &damaged {
        repo.ensure_lock(LockKind::Exclusive, "repair index")?;
        match repo.backend().remove(path) {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    repo.invalidate_index();
    Ok(out)
}
