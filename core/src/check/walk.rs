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
    /// Lists of the part being walked, read ahead from the store a level at a time.
    ahead: HashMap<Id, Vec<u8>>,
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
            let read = match self.ahead.remove(id) {
                Some(b) => Ok(b),
                None if self.cached => self.blobs.read_list(id),
                None => self.blobs.read(id),
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
            ahead: HashMap::new(),
        }
    }

    /// Reads the lists of `part`'s tree that are not walked yet, a level at a time with
    /// one request per pack span: read one by one, a check of an S3 repository was a
    /// request per list (hundreds, one after the other). A level that does not read back
    /// whole is left to the walk, which reads its lists one by one and names the damage.
    fn read_ahead(&mut self, part: &crate::Part) {
        let mut level: Vec<Id> = part
            .lists
            .iter()
            .filter(|id| !self.memo.contains_key(*id))
            .copied()
            .collect();
        for depth in (1..=part.depth).rev() {
            if level.is_empty() {
                break;
            }
            let read = if self.cached {
                self.blobs
                    .read_lists(&level)
                    .map(|v| level.iter().copied().zip(v).collect())
            } else {
                self.blobs.read_many(&level)
            };
            let Ok(read) = read else {
                break;
            };
            let mut next = Vec::new();
            if depth > 1 {
                for bytes in level.iter().filter_map(|id| read.get(id)) {
                    if bytes.len() % 32 == 0 {
                        next.extend(
                            bytes
                                .chunks_exact(32)
                                .filter_map(|c| c.try_into().ok().map(Id))
                                .filter(|id| !self.memo.contains_key(id)),
                        );
                    }
                }
                next.sort_unstable();
                next.dedup();
            }
            self.ahead.extend(read);
            level = next;
        }
    }

    /// (part, pack, detail) for every part of `snap` that lacks something.
    pub(crate) fn damaged_parts(&mut self, snap: &Snapshot) -> Vec<(String, Option<Id>, String)> {
        let mut out = Vec::new();
        for part in &snap.parts {
            self.read_ahead(part);
            let mut s = Summary::new();
            for id in &part.lists {
                merge(&mut s, &self.subtree(id, part.depth));
            }
            self.ahead.clear();
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
