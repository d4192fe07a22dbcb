//! Garbage collection: delete or repack packs that no snapshot needs.
//!
//! Runs under an exclusive lock (no backup, restore or check at the same time), in phases
//! whose order makes a crash at any instant harmless:
//!
//! 1. **Mark.** Walk every snapshot's chunk trees and set one bit per indexed blob that is
//!    needed, then (streaming the index files) the base of every needed delta. Memory: the
//!    index (48 bytes per blob), one bit per blob, a few numbers per pack, a few decoded
//!    index files at a time. A blob a snapshot needs but the index lacks stops the prune
//!    before anything changes.
//! 2. **Plan.** Per pack: unused (delete), mostly unused (repack: copy the needed blobs to new
//!    packs), or keep. Packs on storage that no index names are left-overs of interrupted
//!    backups or prunes (delete).
//! 3. **Repack.** Write new packs. A crash leaves unindexed packs: garbage for the next prune.
//! 4. **Index.** Write new index files holding the changed files' records of kept packs
//!    (copied as they are) and the new packs; then remove the old files. A crash in between leaves
//!    both, which describe the same blobs: harmless duplicates.
//! 5. **Delete** the packs no index names any more, and the temporary files of interrupted
//!    writes (also when there was nothing else to do).
//!
//! Before phases 3 to 5 (and every 64 deletions) the lock is checked to still be ours: if a
//! stalled prune's lock was taken over by a backup, it stops before deleting anything.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

mod mark;
mod repack;

use crate::index::{encode_file, index_path, read_file};
use crate::lock::LockKind;
use crate::pack::{pack_path, PackEntry};
use crate::{Error, Id, Repository, Result};
use mark::mark;
use repack::repack;

pub(crate) const PACKS_PER_INDEX: usize = 64;

/// Prune settings.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Only report what would be done.
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of it is unused (0–100).
    pub repack_unused_percent: u8,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_unused_percent: 50,
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Only planned.
    pub dry_run: bool,
    /// Snapshots whose data was kept.
    pub snapshots: usize,
    /// Distinct blobs indexed / needed.
    pub blobs_indexed: usize,
    /// Blobs some snapshot needs.
    pub blobs_used: usize,
    /// Packs on storage before.
    pub packs_before: usize,
    /// Packs deleted because nothing in them is needed (including unindexed ones).
    pub packs_deleted: usize,
    /// Of those, packs no index named (left by an interrupted backup or prune).
    pub packs_unindexed: usize,
    /// Packs whose needed blobs were copied to new packs, then deleted.
    pub packs_repacked: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Index files replaced / written.
    pub index_files_removed: usize,
    /// New index files.
    pub index_files_written: usize,
    /// Bytes of packs before.
    pub bytes_before: u64,
    /// Bytes of packs after (planned, for a dry run).
    pub bytes_after: u64,
    /// Bytes freed (`bytes_before - bytes_after`).
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs (below the repack threshold).
    pub bytes_unused_kept: u64,
    /// Wall time.
    pub seconds: f64,
}

impl PruneReport {
    /// True when the prune changed (or would change) nothing.
    pub fn nothing_to_do(&self) -> bool {
        self.packs_deleted == 0 && self.packs_repacked == 0 && self.index_files_removed == 0
    }
}

#[derive(Default)]
struct PackStat {
    size: Option<u64>,
    used_bytes: u64,
    /// Bytes of indexed blobs nobody needs (the trailer is neither).
    unused_bytes: u64,
    indexed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fate {
    Keep,
    Repack,
    Delete,
}

/// Removes what no snapshot needs. The repository must be locked exclusively.
///
/// # Errors
/// [`Error::NotLocked`], [`Error::LockLost`]; a damaged snapshot or index, or a needed blob
/// that is missing (then nothing is changed); backend errors.
pub fn prune(
    repo: &Repository,
    opts: PruneOptions,
    progress: &dyn Fn(&str),
) -> Result<PruneReport> {
    let started = Instant::now();
    repo.ensure_lock(LockKind::Exclusive, "prune")?;
    if !opts.dry_run {
        repo.ensure_delete_rights("prune")?;
    }
    repo.invalidate_index();
    let index = repo.index()?;
    if let Some(d) = index.damaged().first() {
        return Err(refuse(format!(
            "index file {d}; prune cannot tell which packs are in use: run `dbvault repair index` first"
        )));
    }
    let (snaps, damaged) = repo.readable_snapshots()?;
    if let Some(e) = damaged.into_iter().next() {
        // Listed, then not there: a store whose nodes have not converged (one was down
        // when a snapshot was forgotten) or a forget running now. Not damage, and not a
        // snapshot to forget: a later prune sees the store agree with itself.
        if let Error::NotFound { path } = &e {
            return Err(Error::storage(
                path.clone(),
                crate::error::StorageKind::Transient,
                "prune stopped, nothing was deleted: the store lists this snapshot but reading it answers \"not found\" (its nodes have not converged since one was down, or a forget is running): run prune again later",
            ));
        }
        return Err(refuse(format!(
            "{e}; prune cannot tell what it needs: `dbvault forget ID` removes that snapshot (what only it held is then freed), or put back an intact copy of the file"
        )));
    }
    // Files (WAL segments) need their data as snapshots do; one that cannot be read
    // stops prune as a damaged snapshot does.
    let (files, unreadable) = repo.file_records_as_snapshots()?;
    if let Some(e) = unreadable.into_iter().next() {
        return Err(refuse(format!(
            "{e}; prune cannot tell what it needs (run `dbvault check`)"
        )));
    }
    progress(&format!(
        "marking the data {} snapshots and {} files need",
        snaps.len(),
        files.len()
    ));
    let mut roots = snaps.clone();
    roots.extend(files);
    let used = mark(repo, &index, &roots)?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        snapshots: snaps.len(),
        blobs_indexed: index.blob_count(),
        blobs_used: used.count(),
        ..Default::default()
    };

    // Plan: sizes from storage, needed bytes from the index.
    let mut packs: HashMap<Id, PackStat> = HashMap::new();
    for o in repo.backend().list("data/")? {
        let name = o.path.rsplit('/').next().unwrap_or_default();
        if let Ok(id) = Id::from_hex(name) {
            packs.entry(id).or_default().size = Some(o.size);
        }
    }
    for r in 0..index.pack_records() {
        packs.entry(index.pack_record(r).0).or_default().indexed = true;
    }
    for pos in 0..index.blob_count() {
        let (_, loc, _) = index.entry_at(pos);
        let st = packs.entry(loc.pack).or_default();
        if used.get(pos) {
            st.used_bytes += u64::from(loc.len);
        } else {
            st.unused_bytes += u64::from(loc.len);
        }
    }
    let mut fate: HashMap<Id, Fate> = HashMap::new();
    for (id, st) in &packs {
        let f = match st.size {
            None if st.used_bytes > 0 => {
                return Err(refuse(format!(
                    "pack {} holds data snapshots need but is missing from storage (run `dbvault check`)",
                    id.short()
                )))
            }
            None => Fate::Delete,
            Some(_) if st.used_bytes == 0 => Fate::Delete,
            Some(size) => {
                if st.unused_bytes * 100 > size * u64::from(opts.repack_unused_percent) {
                    Fate::Repack
                } else {
                    report.bytes_unused_kept += st.unused_bytes;
                    Fate::Keep
                }
            }
        };
        if let Some(size) = st.size {
            report.packs_before += 1;
            report.bytes_before += size;
            match f {
                Fate::Delete => {
                    report.packs_deleted += 1;
                    report.packs_unindexed += usize::from(!st.indexed);
                }
                Fate::Repack => report.packs_repacked += 1,
                Fate::Keep => report.bytes_after += size,
            }
        }
        fate.insert(*id, f);
    }

    // Index files to rewrite: those naming a changed pack, or a pack another file names too.
    let mut records_of: HashMap<Id, usize> = HashMap::new();
    for r in 0..index.pack_records() {
        *records_of.entry(index.pack_record(r).0).or_default() += 1;
    }
    let rewrite: HashSet<Id> = (0..index.pack_records())
        .map(|r| index.pack_record(r))
        .filter(|(p, _)| fate.get(p) != Some(&Fate::Keep) || records_of[p] > 1)
        .map(|(_, f)| f)
        .collect();
    report.index_files_removed = rewrite.len();
    if opts.dry_run {
        // Repacked data lands in new packs of about the needed bytes.
        report.bytes_after += packs
            .iter()
            .filter(|(id, _)| fate.get(*id) == Some(&Fate::Repack))
            .map(|(_, s)| s.used_bytes)
            .sum::<u64>();
        report.bytes_freed = report.bytes_before.saturating_sub(report.bytes_after);
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if report.nothing_to_do() {
        // A process killed while writing (a report, say) left its temporary file even when
        // there is nothing else to collect.
        repo.ensure_lock(LockKind::Exclusive, "prune")?;
        remove_temp_files(repo)?;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    repo.ensure_lock(LockKind::Exclusive, "prune")?;
    let written = repack(repo, &index, &used, &fate, progress)?;
    report.packs_written = written.len();
    for (_, _, size) in &written {
        report.bytes_after += size;
    }

    // New index: the kept packs of the rewritten files, then the new packs.
    repo.ensure_lock(LockKind::Exclusive, "prune")?;
    // The kept packs' records are copied as they are (with their delta bases), once each
    // even when two files name a pack (an interrupted prune), one file in memory at a time.
    let mut content: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut copied: HashSet<Id> = HashSet::new();
    for file in &rewrite {
        let path = index_path(file);
        for (pack, entries) in read_file(repo.backend().as_ref(), repo.keys(), &path)? {
            if fate.get(&pack) == Some(&Fate::Keep) && copied.insert(pack) {
                content.push((pack, entries));
            }
        }
        if content.len() >= PACKS_PER_INDEX {
            report.index_files_written += write_index(repo, &mut content)?;
        }
    }
    content.extend(written.into_iter().map(|(id, entries, _)| (id, entries)));
    report.index_files_written += write_index(repo, &mut content)?;
    progress(&format!(
        "wrote {} index files; removing {} old ones",
        report.index_files_written,
        rewrite.len()
    ));
    repo.ensure_lock(LockKind::Exclusive, "prune")?;
    for f in &rewrite {
        repo.backend().remove(&index_path(f))?;
    }

    remove_temp_files(repo)?;
    let doomed: Vec<Id> = fate
        .iter()
        .filter(|(id, f)| **f != Fate::Keep && packs[*id].size.is_some())
        .map(|(id, _)| *id)
        .collect();
    progress(&format!("deleting {} packs", doomed.len()));
    for (i, id) in doomed.iter().enumerate() {
        if i % 64 == 0 {
            repo.ensure_lock(LockKind::Exclusive, "prune")?;
        }
        repo.backend().remove(&pack_path(id))?;
    }
    repo.invalidate_index();
    report.bytes_freed = report.bytes_before.saturating_sub(report.bytes_after);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Removes the temporary files of interrupted writes (and unfinished multipart uploads)
/// everywhere but locks/, where another process may be writing its lock right now.
fn remove_temp_files(repo: &Repository) -> Result<()> {
    for prefix in [
        "data/",
        "index/",
        "snapshots/",
        "reports/",
        "policy/",
        "keys/",
    ] {
        repo.backend().remove_incomplete(prefix)?;
    }
    Ok(())
}

/// Writes `content` as index files of up to [`PACKS_PER_INDEX`] packs; returns how many.
fn write_index(repo: &Repository, content: &mut Vec<(Id, Vec<PackEntry>)>) -> Result<usize> {
    let mut n = 0;
    for group in content.chunks(PACKS_PER_INDEX) {
        let (id, bytes) = encode_file(repo.keys(), group)?;
        match repo.backend().create_unique(&index_path(&id), &bytes) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        n += 1;
    }
    content.clear();
    Ok(n)
}

pub(crate) fn refuse(reason: String) -> Error {
    Error::Invalid(format!("prune stopped, nothing was deleted: {reason}"))
}
