//! Garbage collection: delete or repack packs that no snapshot needs.
//!
//! Runs under an exclusive lock (no backup, restore or check at the same time), in phases
//! whose order makes a crash at any instant harmless:
//!
//! 1. **Mark.** Walk every snapshot's chunk trees and set one bit per indexed blob that is
//!    needed (with the base of every needed delta). Memory: the index (48 bytes per blob),
//!    one bit per blob, a few numbers per pack. A blob a snapshot needs but the index lacks
//!    stops the prune before anything changes.
//! 2. **Plan.** Per pack: unused (delete), mostly unused (repack: copy the needed blobs to new
//!    packs), or keep. Packs on storage that no index names are left-overs of interrupted
//!    backups or prunes (delete).
//! 3. **Repack.** Write new packs. A crash leaves unindexed packs: garbage for the next prune.
//! 4. **Index.** Write new index files for what the changed index files described, minus the
//!    deleted packs, plus the new packs; then remove the old files. A crash in between leaves
//!    both, which describe the same blobs: harmless duplicates.
//! 5. **Delete** the packs no index names any more.
//!
//! Before phases 3 to 5 (and every 64 deletions) the lock is checked to still be ours: if a
//! stalled prune's lock was taken over by a backup, it stops before deleting anything.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::index::{encode_file, index_path, Index};
use crate::lock::LockKind;
use crate::pack::{pack_path, PackBuilder, PackEntry};
use crate::restore::Blobs;
use crate::{Error, Id, Repository, Result};

const PACKS_PER_INDEX: usize = 64;

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
enum Fate {
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
    repo.invalidate_index();
    let index = repo.index()?;
    let (snaps, damaged) = repo.readable_snapshots()?;
    if let Some(e) = damaged.into_iter().next() {
        return Err(refuse(format!(
            "{e}; prune cannot tell what it needs (forget it, or repair with check)"
        )));
    }
    progress(&format!("marking the data {} snapshots need", snaps.len()));
    let used = mark(repo, &index, &snaps)?;
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
        let (e, rec) = index.entry_at(pos);
        let st = packs.entry(index.pack_record(rec).0).or_default();
        if used.get(pos) {
            st.used_bytes += u64::from(e.len);
        } else {
            st.unused_bytes += u64::from(e.len);
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
    // By pack id: a pack named by two files (an interrupted prune) is written once.
    let mut kept: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for pos in 0..index.blob_count() {
        let (e, rec) = index.entry_at(pos);
        let (pack, file) = index.pack_record(rec);
        if fate.get(&pack) == Some(&Fate::Keep) && rewrite.contains(&file) {
            kept.entry(pack).or_default().push(e);
        }
    }
    let mut content: Vec<(Id, Vec<PackEntry>)> = kept.into_iter().collect();
    content.extend(written.into_iter().map(|(id, entries, _)| (id, entries)));
    for group in content.chunks(PACKS_PER_INDEX) {
        let (id, bytes) = encode_file(repo.keys(), group)?;
        match repo.backend().create(&index_path(&id), &bytes) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        report.index_files_written += 1;
    }
    progress(&format!(
        "wrote {} index files; removing {} old ones",
        report.index_files_written,
        rewrite.len()
    ));
    repo.ensure_lock(LockKind::Exclusive, "prune")?;
    for f in &rewrite {
        repo.backend().remove(&index_path(f))?;
    }

    for prefix in ["data/", "index/", "snapshots/"] {
        repo.backend().remove_incomplete(prefix)?;
    }
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

fn refuse(reason: String) -> Error {
    Error::Invalid(format!("prune stopped, nothing was deleted: {reason}"))
}

/// One bit per indexed blob.
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    fn set(&mut self, i: usize) -> bool {
        let was = self.get(i);
        self.0[i / 64] |= 1 << (i % 64);
        !was
    }
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Marks every blob the snapshots need: chunks, the lists above them, delta bases.
fn mark(repo: &Repository, index: &Index, snaps: &[(Id, crate::Snapshot)]) -> Result<Bits> {
    let mut bits = Bits(vec![0; index.blob_count().div_ceil(64)]);
    let blobs = Blobs {
        backend: repo.backend().as_ref(),
        keys: repo.keys(),
        index,
    };
    for (sid, snap) in snaps {
        for part in &snap.parts {
            let missing = |id: &Id| {
                refuse(format!(
                    "snapshot {} part {:?} needs blob {} which no index names (run `dbvault check`)",
                    sid.short(),
                    part.name,
                    id.short()
                ))
            };
            // (blob, levels above the chunks): lists are read only when first marked, so
            // the trees shared by many snapshots are walked once.
            let mut stack: Vec<(Id, u32)> = part.lists.iter().map(|id| (*id, part.depth)).collect();
            while let Some((id, level)) = stack.pop() {
                let pos = index.position(&id).ok_or_else(|| missing(&id))?;
                if !bits.set(pos) {
                    continue;
                }
                if let Some(base) = index.delta_base(&id) {
                    let bpos = index.position(&base).ok_or_else(|| missing(&base))?;
                    bits.set(bpos);
                }
                if level > 0 {
                    let bytes = blobs.read(&id)?;
                    if bytes.len() % 32 != 0 {
                        return Err(Error::corrupt(
                            format!("chunk list of part {}", part.name),
                            "bad length",
                        ));
                    }
                    stack.extend(bytes.chunks_exact(32).map(|c| {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(c);
                        (Id(a), level - 1)
                    }));
                }
            }
        }
    }
    Ok(bits)
}

/// Copies the needed blobs of the packs to repack into new packs (sealed bytes as they
/// are, after authenticating them). Returns the new packs: id, entries, size.
fn repack(
    repo: &Repository,
    index: &Index,
    used: &Bits,
    fate: &HashMap<Id, Fate>,
    progress: &dyn Fn(&str),
) -> Result<Vec<(Id, Vec<PackEntry>, u64)>> {
    let mut by_pack: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for pos in 0..index.blob_count() {
        if !used.get(pos) {
            continue;
        }
        let (e, rec) = index.entry_at(pos);
        let pack = index.pack_record(rec).0;
        if fate.get(&pack) == Some(&Fate::Repack) {
            by_pack.entry(pack).or_default().push(e);
        }
    }
    if by_pack.is_empty() {
        return Ok(Vec::new());
    }
    progress(&format!("repacking {} packs", by_pack.len()));
    let target = repo.config().pack_target as usize;
    let mut out = Vec::new();
    let mut builder = PackBuilder::with_capacity(target + (1 << 20));
    let mut order: Vec<Id> = by_pack.keys().copied().collect();
    order.sort_unstable();
    for pack in order {
        let path = pack_path(&pack);
        let bytes = repo.backend().read(&path)?;
        let mut entries = by_pack.remove(&pack).unwrap_or_default();
        entries.sort_by_key(|e| e.offset);
        for e in entries {
            let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
            let sealed = bytes.get(start..end).ok_or_else(|| {
                refuse(format!(
                    "pack {} is shorter than its index says",
                    pack.short()
                ))
            })?;
            // Authenticate before copying: damage must not be laundered into a new pack.
            repo.keys()
                .open(sealed, &e.id.0, &|| format!("pack {path}"))
                .map_err(|err| refuse(err.to_string()))?;
            builder.add(e.kind, e.id, sealed, e.raw_len, e.base);
            if builder.len() >= target {
                out.push(store(repo, std::mem::take(&mut builder))?);
            }
        }
    }
    if !builder.is_empty() {
        out.push(store(repo, builder)?);
    }
    Ok(out)
}

fn store(repo: &Repository, builder: PackBuilder) -> Result<(Id, Vec<PackEntry>, u64)> {
    let (id, bytes, entries) = builder.finish(repo.keys())?;
    match repo.backend().create(&pack_path(&id), &bytes) {
        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok((id, entries, bytes.len() as u64))
}
