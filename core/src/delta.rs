//! Delta blobs: a changed chunk stored as a zstd delta against the chunk that stood in its
//! place in the previous snapshot of the same source.
//!
//! A nightly dump changes a few rows here and there; a content-defined chunk around such a
//! row is new as a whole, though all but one row are in the old chunk. Compressing the new
//! chunk with the old one as dictionary stores little more than the changed row. Deltas are
//! one level deep: a delta's base is always a full blob, so a restore reads at most one
//! extra blob per delta.

use std::collections::HashMap;

use crate::blobs::Blobs;
use crate::crypto::{delta_base, seal_blob, seal_delta};
use crate::pack::{pack_path, BlobKind};
use crate::{Id, Result};

/// The chunk order of a part in the previous snapshot, to find a base for each new chunk.
pub struct ParentPart {
    ids: Vec<Id>,
    pos: HashMap<Id, usize>,
}

impl ParentPart {
    /// Indexes the previous snapshot's chunk ids of a part.
    pub fn new(ids: Vec<Id>) -> ParentPart {
        let pos = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        ParentPart { ids, pos }
    }

    /// Where the chunk after `id` stood in the parent: a known chunk re-synchronises the
    /// cursor, an unknown one advances it.
    pub fn advance(&self, cursor: usize, id: &Id) -> usize {
        self.pos.get(id).map_or(cursor + 1, |&j| j + 1)
    }

    /// The parent's chunk at `cursor`.
    pub fn at(&self, cursor: usize) -> Option<Id> {
        self.ids.get(cursor).copied()
    }
}

/// Seals a new chunk: as a delta against `base` when that is at most 70% of the full
/// blob, else full. `read` holds bases already read (by [`Blobs::read_many`]). Returns the kind, the sealed bytes and the base a delta needs.
///
/// # Errors
/// Compression, random-source or storage errors reading the base.
pub fn seal_chunk(
    blobs: Blobs<'_>,
    id: &Id,
    plain: &[u8],
    base: Option<Id>,
    level: i32,
    read: &HashMap<Id, Vec<u8>>,
) -> Result<(BlobKind, Vec<u8>, Option<Id>)> {
    let full = seal_blob(blobs.keys, id, plain, level)?;
    let Some(mut base_id) = base else {
        return Ok((BlobKind::Data, full, None));
    };
    let Some(loc) = blobs.index.get(&base_id) else {
        return Ok((BlobKind::Data, full, None));
    };
    if loc.delta {
        // Deltas stay one level deep: use the base's own (full) base, named inside it (the
        // in-memory index does not keep bases: 48 bytes per blob).
        let path = pack_path(&loc.pack);
        let sealed = blobs
            .backend
            .read_range(&path, u64::from(loc.offset), u64::from(loc.len))?;
        let (b2, _) = delta_base(blobs.keys, &base_id, &sealed, &|| format!("pack {path}"))?;
        match blobs.index.get(&b2) {
            Some(l2) if !l2.delta => base_id = b2,
            _ => return Ok((BlobKind::Data, full, None)),
        }
    }
    let fetched;
    let base_plain = match read.get(&base_id) {
        Some(b) => b,
        None => {
            fetched = blobs.read(&base_id)?;
            &fetched
        }
    };
    let delta = seal_delta(blobs.keys, id, plain, &base_id, base_plain, level)?;
    if delta.len() * 10 <= full.len() * 7 {
        Ok((BlobKind::Delta, delta, Some(base_id)))
    } else {
        Ok((BlobKind::Data, full, None))
    }
}
