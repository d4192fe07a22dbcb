//! How much of a part changed between two snapshots, from their chunk lists alone: the
//! plaintext bytes of the newer part's chunks that the older one lacks (no data is read).

use std::collections::HashSet;

use crate::blobs::part_chunk_ids;
use crate::{Id, Part, Repository, Result};

/// Bytes of `after` stored in chunks that `before` does not have (0 for identical parts;
/// all of `after` when there is no `before`).
///
/// # Errors
/// The index or a chunk list cannot be read.
pub fn bytes_changed(repo: &Repository, before: Option<&Part>, after: &Part) -> Result<u64> {
    let Some(before) = before else {
        return Ok(after.size);
    };
    if before.blake3 == after.blake3 && before.size == after.size {
        return Ok(0);
    }
    let index = repo.index()?;
    let old: HashSet<Id> = part_chunk_ids(repo, &index, before)?.into_iter().collect();
    let mut changed = 0u64;
    for id in part_chunk_ids(repo, &index, after)? {
        if !old.contains(&id) {
            changed += index.get(&id).map_or(0, |l| u64::from(l.raw_len));
        }
    }
    Ok(changed)
}
