//! Prune's mark phase: one bit per indexed blob that some snapshot needs.

use rayon::prelude::*;

use super::refuse;
use crate::blobs::{list_ids, Blobs};
use crate::index::{read_file, Index};
use crate::{Id, Repository, Result, Snapshot};

/// One bit per indexed blob (by [`Index::position`]).
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    pub(crate) fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    pub(crate) fn set(&mut self, i: usize) -> bool {
        let was = self.get(i);
        self.0[i / 64] |= 1 << (i % 64);
        !was
    }
    pub(crate) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Marks every blob the snapshots need: chunks, the lists above them, and the base of
/// every needed delta.
///
/// # Errors
/// A needed blob the index lacks (nothing has changed yet), damaged lists or index files.
pub(crate) fn mark(repo: &Repository, index: &Index, snaps: &[(Id, Snapshot)]) -> Result<Bits> {
    let mut bits = Bits::new(index.blob_count());
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
            // A level of the tree at a time: a list is read only when first marked, so the
            // trees many snapshots share are walked once, and the lists of a level are
            // read together (the cache's copies, else one request per pack span; one
            // request per list made a prune on S3 hundreds of them, one after the other).
            let mut level = part.lists.clone();
            for above in (0..=part.depth).rev() {
                let mut unread = Vec::new();
                for id in &level {
                    let pos = index.position(id).ok_or_else(|| missing(id))?;
                    if bits.set(pos) && above > 0 {
                        unread.push(*id);
                    }
                }
                if unread.is_empty() {
                    break;
                }
                let mut below = Vec::new();
                for bytes in blobs.read_lists(&unread)? {
                    below.extend(list_ids(&bytes, part)?);
                }
                level = below;
            }
        }
    }
    mark_bases(repo, index, &mut bits)?;
    Ok(bits)
}

/// Marks the bases of needed deltas, read from the index files (the in-memory index does
/// not keep them), a few files at a time. Every copy of a needed blob counts, so whichever
/// copy a restore picks has its base. A base is a full blob, so one pass suffices, unless
/// a base also exists as a delta (two backups raced): then another pass marks its base.
fn mark_bases(repo: &Repository, index: &Index, bits: &mut Bits) -> Result<()> {
    let files = repo.backend().list("index/")?;
    loop {
        let mut again = false;
        for batch in files.chunks(16) {
            let decoded: Vec<_> = batch
                .par_iter()
                .map(|f| read_file(repo.backend().as_ref(), repo.keys(), &f.path))
                .collect::<Result<_>>()?;
            for (_, entries) in decoded.into_iter().flatten() {
                for e in entries {
                    let Some(base) = e.base else { continue };
                    if !index.position(&e.id).is_some_and(|p| bits.get(p)) {
                        continue;
                    }
                    let bpos = index.position(&base).ok_or_else(|| {
                        refuse(format!(
                            "delta blob {} needs base {} which no index names (run `dbvault check`)",
                            e.id.short(),
                            base.short()
                        ))
                    })?;
                    if bits.set(bpos) && index.entry_at(bpos).1.delta {
                        again = true;
                    }
                }
            }
        }
        if !again {
            return Ok(());
        }
    }
}
