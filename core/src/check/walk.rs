//! `check`, snapshots: walk every part's chunk tree and name what it lacks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Bad, CheckReport, Problem};
use crate::blobs::Blobs;
use crate::index::Index;
use crate::{Id, Repository, Result, Snapshot};

/// Damage below a tree node: pack named (None: not indexed at all) -> (blobs, first detail).
type Summary = BTreeMap<Option<Id>, (u64, String)>;

pub(crate) struct Walker<'a> {
    blobs: Blobs<'a>,
    bad: &'a Bad,
    /// Lists already walked (many snapshots share them): their damage summary.
    memo: HashMap<Id, Arc<Summary>>,
    /// Read lists through the backend's cache (a hint for a restore), rather than from
    /// the store (`check`, which verifies what is stored).
    cached: bool,
}

impl Walker<'_> {
    /// Damage of one blob by itself.
    fn blob(&self, id: &Id) -> Summary {
        let mut s = Summary::new();
        match self.blobs.index.get(id) {
            None => {
                s.insert(None, (1, format!("blob {} is in no index", id.short())));
            }
            Some(_) => {
                if let Some((pack, why)) = self.bad.blobs.get(id) {
                    s.insert(Some(*pack), (1, why.clone()));
                }
            }
        }
        s
    }

    fn subtree(&mut self, id: &Id, level: u32) -> Arc<Summary> {
        if level == 0 {
            return Arc::new(self.blob(id));
        }
        if let Some(s) = self.memo.get(id) {
            return s.clone();
        }
        let own = self.blob(id);
        let summary = if !own.is_empty() {
            own
        } else {
            let read = if self.cached {
                self.blobs.read_list(id)
            } else {
                self.blobs.read(id)
            };
            match read {
                Err(e) => {
                    let pack = self.blobs.index.get(id).map(|l| l.pack);
                    Summary::from([(pack, (1, format!("a chunk list does not read back: {e}")))])
                }
                Ok(bytes) if bytes.len() % 32 != 0 => {
                    let pack = self.blobs.index.get(id).map(|l| l.pack);
                    Summary::from([(pack, (1, "a chunk list has a bad length".to_string()))])
                }
                Ok(bytes) => {
                    let mut s = Summary::new();
                    for c in bytes.chunks_exact(32) {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(c);
                        merge(&mut s, &self.subtree(&Id(a), level - 1));
                    }
                    s
                }
            }
        };
        let s = Arc::new(summary);
        self.memo.insert(*id, s.clone());
        s
    }
}

fn merge(into: &mut Summary, from: &Summary) {
    for (pack, (n, why)) in from {
        let e = into.entry(*pack).or_insert((0, why.clone()));
        e.0 += n;
    }
}

/// Walks every file record (as one-part snapshots named by their path); adds a problem
/// of kind `file` per (file, pack) damaged.
pub(crate) fn walk_files(
    repo: &Repository,
    index: &Index,
    files: &[(Id, Snapshot)],
    bad: &Bad,
    report: &mut CheckReport,
) {
    let mut w = Walker::new(repo, index, bad, false);
    for (_, rec) in files {
        for (_, pack, detail) in w.damaged_parts(rec) {
            report.problems.push(Problem {
                kind: "file".into(),
                snapshot: None,
                part: Some(rec.name.clone()),
                pack: pack.map(|p| p.to_hex()),
                detail,
            });
        }
    }
}

/// Walks every part of every snapshot; adds a problem per (snapshot, part, pack) damaged.
pub(crate) fn walk(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, Snapshot)],
    bad: &Bad,
    report: &mut CheckReport,
) -> Result<()> {
    let mut w = Walker::new(repo, index, bad, false);
    for (sid, snap) in snaps {
        for (part, pack, detail) in w.damaged_parts(snap) {
            report.problems.push(Problem {
                kind: "part".into(),
                snapshot: Some(sid.to_hex()),
                part: Some(part),
                pack: pack.map(|p| p.to_hex()),
                detail,
            });
        }
    }
    Ok(())
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        repo: &'a Repository,
        index: &'a Index,
        bad: &'a Bad,
        cached: bool,
    ) -> Walker<'a> {
        Walker {
            blobs: Blobs {
                backend: repo.backend().as_ref(),
                keys: repo.keys(),
                index,
            },
            bad,
            memo: HashMap::new(),
            cached,
        }
    }

    /// (part, pack, detail) for every part of `snap` that lacks something.
    pub(crate) fn damaged_parts(&mut self, snap: &Snapshot) -> Vec<(String, Option<Id>, String)> {
        let mut out = Vec::new();
        for part in &snap.parts {
            let mut s = Summary::new();
            for id in &part.lists {
                merge(&mut s, &self.subtree(id, part.depth));
            }
            for (pack, (n, why)) in s {
                out.push((
                    part.name.clone(),
                    pack,
                    format!("{n} blob(s) it needs are damaged or missing: {why}"),
                ));
            }
        }
        out
    }
}
