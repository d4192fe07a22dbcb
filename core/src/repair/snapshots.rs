//! `repair snapshots`: after a damaged snapshot manifest, a damaged or missing pack, or
//! blobs that no longer read back, give back a repository `check` passes, keeping all that
//! still restores and naming all that does not.
//!
//! - A snapshot whose manifest cannot be read is removed (it cannot be restored anyway).
//! - A snapshot whose lists survive but some parts lack data is rewritten without those
//!   parts when the caller says they can go (a table's rows: the rest restores), with a
//!   note naming them; otherwise it is removed. Both are recorded as `forget` does, so
//!   neither looks deleted behind dbvault's back.
//! - A damaged pack is salvaged: every blob in it that still authenticates is copied into
//!   a new pack, the index files naming it are rewritten without it, then it is removed.
//!   A pack on storage that no index names and whose trailer cannot be read is removed.
//!
//! Write order (a crash at any point loses nothing restorable, and a rerun finishes):
//! new packs, new index files, new snapshot manifests, the forget record, old manifests,
//! old index files, damaged packs.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::check::{packs::check_packs, packs::mark_bad_deltas, walk::Walker, Bad};
use crate::check::{CheckReport, ReadData};
use crate::index::{encode_file, index_path, read_file, Index};
use crate::lock::LockKind;
use crate::pack::{pack_path, PackBuilder, PackEntry};
use crate::snapshot::Part;
use crate::{Error, Id, Repository, Result, Snapshot};

/// A snapshot removed, and why.
#[derive(Clone, Debug, Serialize)]
pub struct RemovedSnapshot {
    /// Its id.
    pub id: String,
    /// Its source name and time, when the manifest could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// Why it could not be kept.
    pub why: String,
    /// Its parts that were intact, lost with it (name and rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intact: Vec<String>,
}

/// A snapshot rewritten without the parts that lost data.
#[derive(Clone, Debug, Serialize)]
pub struct RewrittenSnapshot {
    /// The damaged snapshot's id (removed).
    pub old: String,
    /// The id of the one that replaces it.
    pub new: String,
    /// Its source name and time.
    pub what: String,
    /// The parts dropped, each with what it lacked.
    pub parts_lost: Vec<String>,
}

/// A damaged pack and what was saved from it.
#[derive(Clone, Debug, Serialize)]
pub struct SalvagedPack {
    /// Its id.
    pub pack: String,
    /// Blobs copied into new packs.
    pub kept: usize,
    /// Blobs that did not read back (or whose delta base did not).
    pub lost: usize,
}

/// What `repair snapshots` found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotRepair {
    /// Only said what it would do.
    pub dry_run: bool,
    /// Snapshots removed.
    pub removed: Vec<RemovedSnapshot>,
    /// Snapshots rewritten without some parts.
    pub rewritten: Vec<RewrittenSnapshot>,
    /// Damaged packs salvaged (then removed).
    pub packs: Vec<SalvagedPack>,
    /// Unreadable packs no index named, removed.
    pub debris: Vec<String>,
    /// Index files rewritten.
    pub index_files: usize,
    /// Readable packs no index named, indexed first (as `repair index` does).
    pub reindexed: usize,
    /// File records (WAL segments) that lack data: not repaired (their data cannot be
    /// brought back from here; push the segment again if the server still has it).
    pub files_damaged: Vec<String>,
}

impl SnapshotRepair {
    /// True when there was nothing to repair.
    pub fn nothing(&self) -> bool {
        self.removed.is_empty()
            && self.rewritten.is_empty()
            && self.packs.is_empty()
            && self.debris.is_empty()
    }
}

/// Options of [`repair_snapshots`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotRepairOptions {
    /// Read every blob of every pack (as `check --read-data`) to find damage inside
    /// packs whose trailer is intact; otherwise only what structure shows.
    pub read_data: bool,
    /// Say what would be done; change nothing.
    pub dry_run: bool,
}

fn describe(s: &Snapshot) -> String {
    format!("{} {}", s.name, s.time.format("%Y-%m-%d %H:%M:%S %:z"))
}

/// Repairs what damaged snapshots and packs left (see the module doc). `droppable` says
/// which parts a snapshot can lose and still be worth keeping (it is the format's
/// knowledge: the data of one table, say); a snapshot that would lose any other part is
/// removed. Needs the exclusive lock.
///
/// # Errors
/// [`Error::NotLocked`]; [`Error::NeedsDeleteRights`]; [`Error::Invalid`] when an index
/// file is damaged (run `repair index` first); backend errors.
pub fn repair_snapshots(
    repo: &Repository,
    opts: SnapshotRepairOptions,
    droppable: &dyn Fn(&Part) -> bool,
    progress: &dyn Fn(&str),
) -> Result<SnapshotRepair> {
    const OP: &str = "repair snapshots";
    repo.ensure_lock(LockKind::Exclusive, OP)?;
    if !opts.dry_run {
        repo.ensure_delete_rights(OP)?;
    }
    repo.invalidate_index();
    let index = repo.index()?;
    if let Some(d) = index.damaged().first() {
        return Err(Error::Invalid(format!(
            "index file {d}: run `dbvault repair index` first, so that no pack looks lost"
        )));
    }
    let mut out = SnapshotRepair {
        dry_run: opts.dry_run,
        ..SnapshotRepair::default()
    };
    // A pack no index names (an index file deleted, or an interrupted backup's) may hold
    // what a snapshot needs: indexed first, so that nothing restorable is taken for lost.
    let (found, _) = super::unindexed_packs(repo, &index)?;
    out.reindexed = found.len();
    let index = if found.is_empty() {
        index
    } else if opts.dry_run {
        let mut i = Index::load(repo.backend().as_ref(), repo.keys())?;
        i.add_recovered(Vec::new(), &found);
        std::sync::Arc::new(i)
    } else {
        // The trailers are read already: written as they are (no damaged index file here).
        progress(&format!("indexing {} pack(s) no index names", found.len()));
        super::index_packs(repo, &found, OP)?;
        repo.invalidate_index();
        repo.index()?
    };
    progress("checking the packs");
    let read = if opts.read_data {
        ReadData::All
    } else {
        ReadData::None
    };
    let mut scratch = CheckReport::default();
    let mut bad = check_packs(repo, &index, read, &mut scratch)?;
    let indexed: HashSet<Id> = (0..index.pack_records())
        .map(|r| index.pack_record(r).0)
        .collect();
    let mut damaged: HashSet<Id> = bad.blobs.values().map(|(p, _)| *p).collect();
    for p in scratch.problems.iter().filter(|p| p.kind == "pack") {
        let Some(id) = p.pack.as_deref().and_then(|h| Id::from_hex(h).ok()) else {
            continue;
        };
        if indexed.contains(&id) {
            damaged.insert(id);
        } else {
            out.debris.push(id.to_hex());
        }
    }
    // Salvage: which blobs of the damaged packs still authenticate. A delta whose base is
    // lost is lost too, wherever it lies: its pack is rewritten without it as well (else
    // `check --read-data` trips over it after the repair). Until nothing new turns up.
    let mut plan = salvage_plan(repo, &index, &damaged, &mut bad)?;
    mark_bad_deltas(repo, &index, &mut bad)?;
    loop {
        let more: HashSet<Id> = bad
            .blobs
            .keys()
            .filter_map(|b| index.get(b))
            .map(|l| l.pack)
            .filter(|p| indexed.contains(p) && !damaged.contains(p))
            .collect();
        if more.is_empty() {
            break;
        }
        damaged.extend(more);
        plan = salvage_plan(repo, &index, &damaged, &mut bad)?;
        mark_bad_deltas(repo, &index, &mut bad)?;
    }

    progress("walking the snapshots");
    let (ids, snaps, unreadable) = repo.listed_snapshots()?;
    let readable: HashSet<Id> = snaps.iter().map(|(id, _)| *id).collect();
    for id in ids.iter().filter(|id| !readable.contains(id)) {
        let why = unreadable
            .iter()
            .map(ToString::to_string)
            .find(|e| e.contains(&id.short()))
            .unwrap_or_else(|| "its manifest cannot be read".into());
        out.removed.push(RemovedSnapshot {
            id: id.to_hex(),
            what: None,
            why,
            intact: Vec::new(),
        });
    }
    // Snapshots gone without `forget` (deleted by hand, a store rolled back): nothing
    // brings them back from here; recording them as lost ends the alarm they raise.
    let lost: Vec<crate::history::Missing> = repo.audit(true)?.missing;
    for m in &lost {
        out.removed.push(RemovedSnapshot {
            id: m.id.to_hex(),
            what: Some(format!(
                "{} {}",
                m.name,
                m.time.format("%Y-%m-%d %H:%M:%S %:z")
            )),
            why: "gone from the repository without `forget`: recorded as lost".into(),
            intact: Vec::new(),
        });
    }
    let mut walker = Walker::new(repo, &index, &bad, false);
    let mut replacements: Vec<(Id, Snapshot)> = Vec::new();
    // A repair interrupted after writing a replacement and before removing the damaged
    // one: the replacement stands, the damaged one only goes.
    let replaced: HashMap<Id, Id> = snaps
        .iter()
        .filter_map(|(id, s)| s.repaired_from.map(|old| (old, *id)))
        .collect();
    for (id, snap) in &snaps {
        let lost = walker.damaged_parts(snap);
        if lost.is_empty() {
            continue;
        }
        if let Some(new) = replaced.get(id) {
            out.rewritten.push(RewrittenSnapshot {
                old: id.to_hex(),
                new: new.to_hex(),
                what: describe(snap),
                parts_lost: vec!["(rewritten by an earlier, interrupted repair)".into()],
            });
            continue;
        }
        let mut why: BTreeMap<String, String> = BTreeMap::new();
        for (part, _, detail) in lost {
            why.entry(part).or_insert(detail);
        }
        let rows = |name: &str| {
            snap.part(name)
                .and_then(|p| p.rows)
                .map(|r| format!(" ({r} rows)"))
                .unwrap_or_default()
        };
        let keep_rest = snap
            .parts
            .iter()
            .all(|p| !why.contains_key(&p.name) || droppable(p))
            && snap.parts.iter().any(|p| !why.contains_key(&p.name));
        if !keep_rest {
            out.removed.push(RemovedSnapshot {
                id: id.to_hex(),
                what: Some(describe(snap)),
                why: why
                    .iter()
                    .map(|(p, d)| format!("{p}{}: {d}", rows(p)))
                    .collect::<Vec<_>>()
                    .join("; "),
                intact: snap
                    .parts
                    .iter()
                    .filter(|p| !why.contains_key(&p.name) && p.rows.is_some())
                    .map(|p| format!("{}{}", p.name, rows(&p.name)))
                    .collect(),
            });
            continue;
        }
        let mut new = snap.clone();
        new.repaired_from = Some(*id);
        new.parts.retain(|p| !why.contains_key(&p.name));
        new.bytes_in = new.parts.iter().map(|p| p.size).sum();
        let today = chrono::Utc::now().format("%Y-%m-%d");
        for (p, d) in &why {
            new.source.notes.push(format!(
                "`repair snapshots` on {today} removed {p} (its data was damaged: {d}); restoring the snapshot gives everything else"
            ));
        }
        out.rewritten.push(RewrittenSnapshot {
            old: id.to_hex(),
            new: String::new(),
            what: describe(snap),
            parts_lost: why
                .iter()
                .map(|(p, d)| format!("{p}{}: {d}", rows(p)))
                .collect(),
        });
        replacements.push((*id, new));
    }
    let (files, _) = repo.file_records_as_snapshots()?;
    for (_, rec) in &files {
        if !walker.damaged_parts(rec).is_empty() {
            out.files_damaged.push(rec.name.clone());
        }
    }
    for (pack, entries) in &plan.salvage {
        let lost = entries
            .iter()
            .filter(|e| bad.blobs.contains_key(&e.id))
            .count();
        out.packs.push(SalvagedPack {
            pack: pack.to_hex(),
            kept: entries.len() - lost,
            lost,
        });
    }
    out.packs.sort_by(|a, b| a.pack.cmp(&b.pack));
    if opts.dry_run || out.nothing() {
        return Ok(out);
    }

    progress("salvaging damaged packs");
    let new_packs = copy_good_blobs(repo, &plan, &bad)?;
    repo.ensure_lock(LockKind::Exclusive, OP)?;
    let mut content: Vec<(Id, Vec<PackEntry>)> = plan.kept_records.clone();
    content.extend(new_packs);
    for group in content.chunks(crate::prune::PACKS_PER_INDEX) {
        let (id, bytes) = encode_file(repo.keys(), group)?;
        match repo.backend().create(&index_path(&id), &bytes) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => out.index_files += 1,
            Err(e) => return Err(e),
        }
    }
    for (old, new) in &replacements {
        repo.ensure_lock(LockKind::Exclusive, OP)?;
        let id = repo.save_snapshot(new)?.0.to_hex();
        if let Some(r) = out.rewritten.iter_mut().find(|r| r.old == old.to_hex()) {
            r.new = id;
        }
    }
    let gone: Vec<Id> = out
        .removed
        .iter()
        .map(|r| r.id.as_str())
        .chain(out.rewritten.iter().map(|r| r.old.as_str()))
        .filter_map(|h| Id::from_hex(h).ok())
        .collect();
    repo.ensure_lock(LockKind::Exclusive, OP)?;
    let absent: HashSet<Id> = lost.iter().map(|m| m.id).collect();
    let present: Vec<Id> = gone
        .iter()
        .filter(|id| !absent.contains(id))
        .copied()
        .collect();
    if !absent.is_empty() {
        repo.record_forget(&absent.iter().copied().collect::<Vec<_>>())?;
    }
    repo.forget_snapshots(&present)?;
    for f in &plan.index_files {
        repo.ensure_lock(LockKind::Exclusive, OP)?;
        repo.backend().remove(&index_path(f))?;
    }
    let debris = out.debris.iter().filter_map(|h| Id::from_hex(h).ok());
    for p in damaged.iter().copied().chain(debris) {
        repo.ensure_lock(LockKind::Exclusive, OP)?;
        match repo.backend().remove(&pack_path(&p)) {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    repo.invalidate_index();
    Ok(out)
}

/// What salvaging the damaged packs takes.
#[derive(Default)]
struct Plan {
    /// Index files that name a damaged pack: rewritten, then removed.
    index_files: Vec<Id>,
    /// Their records of undamaged packs, kept as they are.
    kept_records: Vec<(Id, Vec<PackEntry>)>,
    /// Blobs of damaged packs the index places there, by pack.
    salvage: HashMap<Id, Vec<PackEntry>>,
}

/// Reads the index files naming damaged packs and every damaged pack once: its blobs
/// that do not authenticate join `bad`.
fn salvage_plan(
    repo: &Repository,
    index: &Index,
    damaged: &HashSet<Id>,
    bad: &mut Bad,
) -> Result<Plan> {
    let mut plan = Plan::default();
    if damaged.is_empty() {
        return Ok(plan);
    }
    let mut kept_once: HashSet<Id> = HashSet::new();
    for f in repo.backend().list("index/")? {
        let content = read_file(repo.backend().as_ref(), repo.keys(), &f.path)?;
        if !content.iter().any(|(p, _)| damaged.contains(p)) {
            continue;
        }
        plan.index_files.push(crate::index::file_id(&f.path)?);
        for (pack, entries) in content {
            if !damaged.contains(&pack) {
                if kept_once.insert(pack) {
                    plan.kept_records.push((pack, entries));
                }
                continue;
            }
            let here: Vec<PackEntry> = entries
                .into_iter()
                .filter(|e| {
                    index
                        .get(&e.id)
                        .is_some_and(|l| l.pack == pack && l.offset == e.offset)
                })
                .collect();
            plan.salvage.entry(pack).or_default().extend(here);
        }
    }
    for (pack, entries) in &mut plan.salvage {
        entries.sort_by_key(|e| e.offset);
        entries.dedup_by_key(|e| e.id);
        let bytes = match repo.backend().read(&pack_path(pack)) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        for e in entries.iter() {
            let end = (e.offset as usize).saturating_add(e.len as usize);
            let ok = end <= bytes.len()
                && repo
                    .keys()
                    .open(&bytes[e.offset as usize..end], &e.id.0, &|| String::new())
                    .is_ok();
            if !ok {
                bad.blobs
                    .entry(e.id)
                    .or_insert((*pack, "it does not read back".into()));
            }
        }
    }
    Ok(plan)
}

/// Copies the blobs of the damaged packs that are not bad (delta bases included) into
/// new packs; returns their records.
fn copy_good_blobs(repo: &Repository, plan: &Plan, bad: &Bad) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    let target = repo.config().pack_target as usize;
    let new = || PackBuilder::new_for(repo.backend().as_ref(), Vec::new(), target);
    let mut builder = new()?;
    let mut out = Vec::new();
    let store = |b: PackBuilder| -> Result<(Id, Vec<PackEntry>)> {
        let p = b.finish(repo.keys())?;
        p.bytes
            .store(repo.backend().as_ref(), &pack_path(&p.id))
            .0?;
        Ok((p.id, p.entries))
    };
    for (pack, entries) in &plan.salvage {
        let keep: Vec<&PackEntry> = entries
            .iter()
            .filter(|e| !bad.blobs.contains_key(&e.id))
            .collect();
        if keep.is_empty() {
            continue;
        }
        let bytes = repo.backend().read(&pack_path(pack))?;
        for e in keep {
            let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
            // Checked again: what reached this process now is what is copied.
            repo.keys()
                .open(sealed, &e.id.0, &|| format!("pack {}", pack.short()))?;
            builder.add(e.kind, e.id, sealed, e.raw_len, e.base)?;
            if builder.len() >= target {
                out.push(store(std::mem::replace(&mut builder, new()?))?);
            }
        }
    }
    if !builder.is_empty() {
        out.push(store(builder)?);
    }
    Ok(out)
}
