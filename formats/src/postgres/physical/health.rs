//! What `check` says of the WAL archives of physical sources: a base backup whose WAL to
//! become consistent is not all there; a gap after a source's oldest base backup; two
//! servers archiving diverging timelines into one source ([`super::timeline`]).

use std::collections::BTreeMap;

use dbvault_core::check::Problem;
use dbvault_core::{Id, Repository, Snapshot};

use super::archive::Archive;
use super::{BaseBackup, FORMAT, PART};

/// The physical snapshots among `snaps`, by WAL source, each with its base backup record.
pub fn by_source(snaps: &[(Id, Snapshot)]) -> BTreeMap<String, Vec<(Id, BaseBackup, &Snapshot)>> {
    let mut out: BTreeMap<String, Vec<(Id, BaseBackup, &Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps.iter().filter(|(_, s)| s.source.format == FORMAT) {
        // One whose record does not read is named by `problems`.
        if let Some(Ok(b)) = s.part(PART).map(BaseBackup::of) {
            out.entry(b.wal_source.clone())
                .or_default()
                .push((*id, b, s));
        }
    }
    out
}

/// The WAL archives' damage (see the module docs), for `check` and `run`'s check alike.
pub fn problems(repo: &Repository, snaps: &[(Id, Snapshot)]) -> Vec<Problem> {
    let mut out = Vec::new();
    for (id, s) in snaps.iter().filter(|(_, s)| s.source.format == FORMAT) {
        if let Some(Err(e)) = s.part(PART).map(BaseBackup::of) {
            out.push(Problem::new("wal", format!("snapshot {}: {e}", id.short())));
        }
    }
    for (source, list) in by_source(snaps) {
        let seg = list.first().map_or(16 << 20, |(_, b, _)| b.segment_size);
        let a = match Archive::load(repo, &source, seg) {
            Ok(a) => a,
            Err(e) => {
                out.push(Problem::new(
                    "wal",
                    format!("the WAL archive of {source:?} cannot be read: {e}"),
                ));
                continue;
            }
        };
        for f in a.forks() {
            out.push(Problem::new("wal", f.describe(&source)));
        }
        let oldest = list
            .iter()
            .min_by_key(|(_, _, s)| s.time)
            .map(|(id, _, _)| *id);
        for (id, b, _) in &list {
            match a.window(b) {
                Ok(w) => {
                    if !w.missing_for_consistency.is_empty() {
                        let mut p = Problem::new(
                            "wal",
                            format!(
                                "the base backup needs WAL segment(s) {} to become consistent, which the archive of {source:?} lacks",
                                w.missing_for_consistency.join(", ")
                            ),
                        );
                        p.snapshot = Some(id.to_hex());
                        out.push(p);
                    }
                    if let (Some(g), true) = (&w.gap, Some(*id) == oldest) {
                        out.push(Problem::new(
                            "wal",
                            format!(
                                "WAL segment {g} is missing from the archive of {source:?}: recovery cannot go past it though later segments exist"
                            ),
                        ));
                    }
                }
                Err(e) => out.push(Problem::new("wal", e.to_string())),
            }
        }
    }
    out
}
