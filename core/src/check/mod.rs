//! `check`: is every object readable and does every snapshot have all it needs?
//!
//! 0. Key files: each is whole (the one that opened the repository decrypted; others'
//!    passphrases are unknown, but their structure and name are checked).
//! 1. Index files, one by one: a damaged one is named and the others still count.
//! 2. Snapshot manifests: a damaged one is named, and so is one that vanished without
//!    `forget` (see [`crate::history`]).
//! 3. Packs: every pack the index names exists and its trailer decrypts and agrees with the
//!    index (same blobs at the same places); packs no index names are listed (left by an
//!    interrupted backup: a warning; not a pack at all: a problem).
//! 4. With `--read-data` (or a subset): every blob of the chosen packs is read, decrypted,
//!    decompressed and checked against its id (deltas with their base).
//! 5. Every part of every snapshot is walked (chunk lists read and checked); each blob it
//!    needs that is missing, unreadable or whose delta base is, is reported by snapshot,
//!    part and pack.
//!
//! One damaged object never stops the check of the others.

pub(crate) mod packs;
pub(crate) mod walk;

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

use crate::index::Index;
use crate::{Id, Repository, Result};

/// How much data to read back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum ReadData {
    /// Structure only: no blob is read (but chunk lists).
    #[default]
    None,
    /// Every pack.
    All,
    /// A random share of the packs, in percent.
    Percent(f64),
    /// Slice `n` of `m` (1-based): packs whose id falls in it, so `m` runs cover all.
    Slice(u32, u32),
}

impl ReadData {
    /// Parses `--read-data-subset`: `5%`, `5` (percent) or `N/M`.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] for anything else.
    pub fn parse_subset(s: &str) -> Result<ReadData> {
        let bad = || {
            crate::Error::Invalid(format!(
                "--read-data-subset {s:?}: expected a percentage (10 or 10%) or N/M (3/12)"
            ))
        };
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (
                n.trim().parse().map_err(|_| bad())?,
                m.trim().parse().map_err(|_| bad())?,
            );
            if m == 0 || n == 0 || n > m {
                return Err(bad());
            }
            return Ok(ReadData::Slice(n, m));
        }
        let p: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        Ok(ReadData::Percent(p))
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `index`, `snapshot`, `pack`, `data`, `part`.
    pub kind: String,
    /// Snapshot id, where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Part (table) name, where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// Pack id, where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl Problem {
    /// A problem of `kind` (`index`, `snapshot`, `pack`, `data`, `part`, `file`, `wal`)
    /// that names no snapshot, part or pack yet.
    pub fn new(kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: kind.into(),
            snapshot: None,
            part: None,
            pack: None,
            detail: detail.into(),
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// No problems (warnings allowed).
    pub ok: bool,
    /// Damage.
    pub problems: Vec<Problem>,
    /// Harmless findings (left-overs of interrupted backups).
    pub warnings: Vec<Problem>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// File records checked (WAL segments).
    #[serde(default)]
    pub files: usize,
    /// Index files read.
    pub index_files: usize,
    /// Packs whose trailer was checked.
    pub packs: usize,
    /// Packs read in full.
    pub packs_read: usize,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Blobs decrypted and re-hashed.
    pub blobs_read: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Checks a repository. The handle should hold a shared lock (no prune meanwhile).
///
/// # Errors
/// Only when the repository cannot be listed at all; damage is reported, not raised.
pub fn check(repo: &Repository, read: ReadData, progress: &dyn Fn(&str)) -> Result<CheckReport> {
    let started = Instant::now();
    let mut report = CheckReport::default();
    for k in repo.backend().list("keys/")? {
        let name = k.path.trim_start_matches("keys/");
        let verdict = repo.backend().read(&k.path).and_then(|b| {
            crate::keyfile::validate(&b, name)?;
            if Id::hash_of(&b).to_hex() != name {
                return Err(crate::Error::corrupt(
                    format!("key file {name}"),
                    "content does not match its name",
                ));
            }
            Ok(())
        });
        if let Err(e) = verdict {
            report.problems.push(Problem::new(
                "key",
                format!("{e} (repair: dbvault key remove {name})"),
            ));
        }
    }
    let (index, damaged) = Index::load_lenient(repo.backend().as_ref(), repo.keys())?;
    report.index_files = index.files().len() + damaged.len();
    for (path, e) in damaged {
        report.problems.push(Problem::new(
            "index",
            format!("{path}: {e} (repair: dbvault repair index)"),
        ));
    }
    let audit = repo.audit(true)?;
    let (snaps, damaged) = (audit.snapshots, audit.damaged);
    report.snapshots = snaps.len() + damaged.len();
    for e in damaged {
        let mut p = Problem::new("snapshot", e.to_string());
        p.snapshot = snapshot_named(&e.to_string());
        report.problems.push(p);
    }
    for m in audit.missing {
        let mut p = Problem::new("missing-snapshot", m.to_string());
        p.snapshot = Some(m.id.short());
        report.problems.push(p);
    }
    progress(&format!(
        "checking the packs of {} snapshots{}",
        snaps.len(),
        if read == ReadData::None {
            ""
        } else {
            " and reading data"
        }
    ));
    let bad = packs::check_packs(repo, &index, read, &mut report)?;
    progress("walking the snapshots");
    walk::walk(repo, &index, &snaps, &bad, &mut report)?;
    let (files, unreadable) = repo.file_records_as_snapshots()?;
    report.files = files.len() + unreadable.len();
    for e in unreadable {
        report.problems.push(Problem::new("file", e.to_string()));
    }
    walk::walk_files(repo, &index, &files, &bad, &mut report);
    let unindexed = report
        .warnings
        .iter()
        .any(|w| w.kind == "pack" && w.detail.starts_with("no index names this pack"));
    name_repairs(&mut report.problems, unindexed);
    report.problems.sort();
    report.problems.dedup();
    report.ok = report.problems.is_empty();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The parts of `snap` that need data whose pack is gone from storage or that no index
/// names: cheap (chunk lists are read, data is not), for a warning after restoring some
/// parts of a snapshot that is damaged elsewhere. Returns (part, pack, detail).
///
/// # Errors
/// The index or the pack list cannot be read.
pub fn parts_missing_data(
    repo: &Repository,
    snap: &crate::Snapshot,
) -> Result<Vec<(String, Option<Id>, String)>> {
    let index = repo.index()?;
    let stored: HashSet<Id> = repo
        .backend()
        .list("data/")?
        .iter()
        .filter_map(|o| Id::from_hex(o.path.rsplit('/').next().unwrap_or_default()).ok())
        .collect();
    let mut bad = Bad::default();
    for pos in 0..index.blob_count() {
        let (id, loc, _) = index.entry_at(pos);
        if !stored.contains(&loc.pack) {
            bad.blobs
                .insert(id, (loc.pack, "its pack is missing".into()));
        }
    }
    Ok(walk::Walker::new(repo, &index, &bad, true).damaged_parts(snap))
}

/// Appends to each problem the command that repairs it. A damaged index file comes first:
/// until it is repaired, intact packs look lost.
/// So does a readable pack no index names: it may hold the blobs "in no index".
fn name_repairs(problems: &mut [Problem], unindexed: bool) {
    let index_first = unindexed || problems.iter().any(|p| p.kind == "index");
    // Damage found by reading data is found again only by reading it.
    let read = problems.iter().any(|p| p.kind == "data");
    for p in problems.iter_mut() {
        if p.detail.contains("(repair: ") {
            continue;
        }
        let how = match p.kind.as_str() {
            _ if index_first
                && matches!(p.kind.as_str(), "pack" | "part" | "data" | "snapshot") =>
            {
                "dbvault repair index, then check again"
            }
            "snapshot" => "dbvault repair snapshots, which removes it (or dbvault forget ID)",
            "pack" | "part" | "data" if read => {
                "dbvault repair snapshots --read-data, which names what is lost"
            }
            "pack" | "part" => "dbvault repair snapshots, which names what is lost",
            "missing-snapshot" => {
                "dbvault repair snapshots, which records it as lost (only a copy brings it back)"
            }
            _ => continue,
        };
        p.detail.push_str(&format!(" (repair: {how})"));
    }
}

/// The short snapshot id a damage message names (`snapshot 1a2b3c4d is damaged: …`).
fn snapshot_named(msg: &str) -> Option<String> {
    msg.strip_prefix("snapshot ")
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// Blobs found bad, and why (the pack to name).
#[derive(Default)]
pub(crate) struct Bad {
    /// Bad blob -> (pack named, detail).
    pub blobs: std::collections::HashMap<Id, (Id, String)>,
    /// Packs whose every indexed blob is gone.
    pub packs: HashSet<Id>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse() {
        assert_eq!(
            ReadData::parse_subset("10%").ok(),
            Some(ReadData::Percent(10.0))
        );
        assert_eq!(
            ReadData::parse_subset("2.5").ok(),
            Some(ReadData::Percent(2.5))
        );
        assert_eq!(
            ReadData::parse_subset("3/12").ok(),
            Some(ReadData::Slice(3, 12))
        );
        for bad in ["0", "101", "0/3", "4/3", "x", "1/0", ""] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad}");
        }
    }
}
