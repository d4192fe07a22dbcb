//! Copying snapshots into a second repository (the offsite copy of the 3-2-1 habit).
//!
//! A copy reads each part's chunks from the source, verified, and feeds them with their
//! boundaries unchanged into a backup of the target: the target seals them under its own
//! keys and ids, stores only chunks it lacks (so the second night's copy of a database
//! costs what changed), and deltas them against its own previous copy. Boundaries are kept
//! rather than recut because recutting would cost a full chunking pass and would dedup no
//! better: the nightly copies of one source share the source's boundaries.
//!
//! Each copy names its original (`copied_from`), and a snapshot whose original the target
//! already holds is never copied again, in either direction. A copy is an ordinary backup
//! of the target (packs, index, then the manifest), so a copy killed mid-way leaves no
//! snapshot, and the run that resumes it reuses every pack already indexed.

use crate::backup::{PartInput, SnapshotMeta};
use crate::restore::{for_each_chunk, Warning};
use crate::snapshot::{Predecessor, Snapshot};
use crate::{Error, Id, Repository, Result};

/// One snapshot `copy` dealt with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Copied {
    /// Copied now.
    New {
        /// Its id in the source.
        from: Id,
        /// Its id in the target.
        to: Id,
        /// The manifest as stored in the target.
        snapshot: Box<Snapshot>,
        /// Bytes the copy added to the target.
        bytes_added: u64,
    },
    /// The target already held it (copied before, or the original itself).
    Present {
        /// Its id in the source.
        from: Id,
        /// The snapshot in the target that holds the same backup.
        to: Id,
    },
}

/// What [`copy_snapshots`] did, in the order it did it (oldest snapshot first).
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Each snapshot asked for.
    pub snapshots: Vec<Copied>,
    /// Damage met in the source that did not touch the copied bytes.
    pub warnings: Vec<Warning>,
}

impl CopyReport {
    /// Bytes added to the target over all copies.
    pub fn bytes_added(&self) -> u64 {
        self.snapshots
            .iter()
            .map(|c| match c {
                Copied::New { bytes_added, .. } => *bytes_added,
                Copied::Present { .. } => 0,
            })
            .sum()
    }
}

/// Copies `which` (snapshots of `from`) into `to`, oldest first; `each` hears of every
/// snapshot as it is done. `to` must hold a shared lock (it is backed up into), and `from`
/// should (so a prune there cannot delete what is being read).
///
/// # Errors
/// Damage in the source names its part and pack, as a restore would; storage errors of
/// either repository keep their kind. Snapshots copied before the error stay copied.
pub fn copy_snapshots(
    from: &Repository,
    which: &[(Id, Snapshot)],
    to: &Repository,
    each: &mut dyn FnMut(&Copied),
) -> Result<CopyReport> {
    // A damaged manifest in the target must not stop the nightly copy (`check` reports it).
    let (mut held, _) = to.readable_snapshots()?;
    let mut todo: Vec<&(Id, Snapshot)> = which.iter().collect();
    todo.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    todo.dedup_by_key(|(id, _)| *id);
    let mut report = CopyReport::default();
    // What will be read: the snapshots the target does not hold yet.
    let total: u64 = todo
        .iter()
        .filter(|(id, s)| !held.iter().any(|(t, h)| h.origin(t) == s.origin(id)))
        .map(|(_, s)| s.parts.iter().map(|p| p.size).sum::<u64>())
        .sum();
    let _all = from.overall_task(
        &format!("copying {} snapshot(s)", todo.len()),
        Some(total),
        crate::progress::Unit::Bytes,
    );
    for (id, snap) in todo {
        let origin = snap.origin(id);
        let done = if let Some((tid, _)) = held.iter().find(|(t, s)| s.origin(t) == origin) {
            Copied::Present {
                from: *id,
                to: *tid,
            }
        } else {
            let (tid, stored, bytes_added) =
                copy_one(from, snap, origin, to, &held, &mut report.warnings)?;
            held.push((tid, stored.clone()));
            held.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            Copied::New {
                from: *id,
                to: tid,
                snapshot: Box::new(stored),
                bytes_added,
            }
        };
        each(&done);
        report.snapshots.push(done);
    }
    Ok(report)
}

fn copy_one(
    from: &Repository,
    snap: &Snapshot,
    origin: Id,
    to: &Repository,
    held: &[(Id, Snapshot)],
    warnings: &mut Vec<Warning>,
) -> Result<(Id, Snapshot, u64)> {
    // The target's newest copy of the same source before this one: the base for deltas
    // and the predecessor the new manifest names (its own, not the source's).
    let before = held
        .iter()
        .rfind(|(_, s)| s.name == snap.name && s.time <= snap.time);
    let backup = to.start_backup_after(before.map(|(_, s)| s))?;
    for part in &snap.parts {
        let mut found = Vec::new();
        let added = backup.add_chunks_then(
            &part.name,
            |take| {
                found = for_each_chunk(from, part, take)?.warnings;
                Ok(())
            },
            || PartInput {
                name: part.name.clone(),
                kind: part.kind.clone(),
                rows: part.rows,
                meta: part.meta.clone(),
                ..PartInput::default()
            },
        );
        if let Err(e) = added {
            backup.abort();
            return Err(e);
        }
        warnings.extend(found);
    }
    let meta = SnapshotMeta {
        time: snap.time,
        name: snap.name.clone(),
        tags: snap.tags.clone(),
        source: snap.source.clone(),
    };
    let parent = before.map(|(id, s)| Predecessor {
        id: *id,
        time: s.time,
    });
    let summary = backup.finish_with(meta, |s| {
        s.host.clone_from(&snap.host);
        s.program.clone_from(&snap.program);
        s.seconds = snap.seconds;
        s.parent = parent;
        s.copied_from = Some(origin);
    })?;
    let same = |a: &crate::Part, b: &crate::Part| {
        a.name == b.name && a.size == b.size && a.blake3 == b.blake3
    };
    let parts = &summary.snapshot.parts;
    if parts.len() != snap.parts.len() || !parts.iter().zip(&snap.parts).all(|(a, b)| same(a, b)) {
        // Cannot happen while every chunk is verified on reading; checked because a copy
        // that differs from its original must never pass for it.
        return Err(Error::Invalid(format!(
            "the copy {} differs from the snapshot it copies",
            summary.id.short()
        )));
    }
    let added = summary.snapshot.bytes_added;
    Ok((summary.id, summary.snapshot, added))
}
