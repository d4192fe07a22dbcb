//! Reading blobs: located through the index, read in runs of adjacent blobs (one range
//! read each), authenticated, decompressed, delta-applied and checked against their ids.
//! Restore, prune, check and the next backup's delta bases all read through here.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::crypto::{delta_base, finish_delta, open_blob, IdCheck};
use crate::index::{BlobLoc, Index};
use crate::pack::pack_path;
use crate::snapshot::Part;
use crate::{Error, Id, Repository, Result};

/// Longest range read from a local disk.
pub(crate) const MAX_RUN: u64 = 2 << 20;
/// Longest range read from an object store, where requests cost more than bytes.
const REMOTE_MAX_RUN: u64 = 16 << 20;
/// The same for an object store. A request's latency (20-50 ms to first byte on S3) is
/// worth 2-5 MiB of transfer at 100 MB/s, so spans this far apart are read as one.
const REMOTE_MAX_GAP: u64 = 2 << 20;
/// Unwanted bytes a range read may span to save a request.
pub(crate) const MAX_GAP: u64 = 128 << 10;

/// Where blobs are read from: storage, keys and index.
#[derive(Clone, Copy)]
pub struct Blobs<'a> {
    /// Storage.
    pub backend: &'a dyn crate::backend::Backend,
    /// Keys.
    pub keys: &'a crate::crypto::Keys,
    /// Index.
    pub index: &'a Index,
}

impl Blobs<'_> {
    fn locate(&self, id: &Id) -> Result<(BlobLoc, String)> {
        let loc = self
            .index
            .get(id)
            .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })?;
        Ok((loc, pack_path(&loc.pack)))
    }

    /// Reads, opens and verifies one blob.
    ///
    /// # Errors
    /// [`Error::MissingBlob`], [`Error::Corrupt`], backend errors.
    pub fn read(&self, id: &Id) -> Result<Vec<u8>> {
        let (loc, path) = self.locate(id)?;
        let sealed = self
            .backend
            .read_range(&path, u64::from(loc.offset), u64::from(loc.len))
            .map_err(|e| e.in_pack(loc.pack))?;
        self.open_at(id, &loc, &sealed, &path)
    }

    /// The blob from a copy the backend's cache kept, when it has one that opens (a
    /// damaged copy is dropped).
    fn kept(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        let (loc, path) = self.locate(id)?;
        let (off, len) = (u64::from(loc.offset), u64::from(loc.len));
        let Some(sealed) = self.backend.cached_range(&path, off, len) else {
            return Ok(None);
        };
        match self.open_at(id, &loc, &sealed, &path) {
            Ok(b) => Ok(Some(b)),
            Err(_) => {
                self.backend.forget_range(&path, off, len);
                Ok(None)
            }
        }
    }

    /// Reads a chunk list, which later commands read again (the next backup's parent):
    /// a copy kept by the backend's cache when it has one, else from the store (and kept).
    ///
    /// # Errors
    /// As [`Blobs::read`].
    pub fn read_list(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(b) = self.kept(id)? {
            return Ok(b);
        }
        let (loc, path) = self.locate(id)?;
        let off = u64::from(loc.offset);
        let sealed = self.backend.read_range(&path, off, u64::from(loc.len))?;
        let plain = self.open_at(id, &loc, &sealed, &path)?;
        self.backend.keep_range(&path, off, &sealed);
        Ok(plain)
    }

    /// [`Blobs::read_list`] for many lists: those not kept locally are read together.
    ///
    /// # Errors
    /// As [`Blobs::read`].
    pub fn read_lists(&self, ids: &[Id]) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            let b = self.kept(id)?;
            if b.is_none() {
                missing.push(*id);
            }
            out.push(b);
        }
        let got = if missing.is_empty() {
            HashMap::new()
        } else {
            self.read_many(&missing)?
        };
        ids.iter()
            .zip(out)
            .map(|(id, b)| match b.or_else(|| got.get(id).cloned()) {
                Some(b) => Ok(b),
                None => self.read(id),
            })
            .collect()
    }

    /// Opens a sealed blob (full, or a delta whose base is read and checked too).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the pack, [`Error::MissingBlob`] for a missing base.
    pub fn open_at(&self, id: &Id, loc: &BlobLoc, sealed: &[u8], path: &str) -> Result<Vec<u8>> {
        self.open_with(id, loc, sealed, path, &HashMap::new(), IdCheck::Rehash)
    }

    /// [`Blobs::open_at`], taking a delta's base from `bases` when it is there, and
    /// checking the id as `check` says.
    ///
    /// # Errors
    /// As [`Blobs::open_at`].
    pub fn open_with(
        &self,
        id: &Id,
        loc: &BlobLoc,
        sealed: &[u8],
        path: &str,
        bases: &HashMap<Id, Vec<u8>>,
        check: IdCheck,
    ) -> Result<Vec<u8>> {
        let what = || format!("pack {path}");
        if !loc.delta {
            return open_blob(self.keys, id, sealed, loc.raw_len as usize, &what, check)
                .map_err(|e| e.in_pack(loc.pack));
        }
        let head = delta_base(self.keys, id, sealed, &what).map_err(|e| e.in_pack(loc.pack))?;
        self.finish_delta(id, loc, &head, path, bases, check)
    }

    /// The rest of opening a delta whose header [`delta_base`] read: its base (from `bases`
    /// or the store), checked to be a full blob, then the delta applied and verified.
    fn finish_delta(
        &self,
        id: &Id,
        loc: &BlobLoc,
        (base_id, payload): &(Id, Vec<u8>),
        path: &str,
        bases: &HashMap<Id, Vec<u8>>,
        check: IdCheck,
    ) -> Result<Vec<u8>> {
        let what = || format!("pack {path}");
        let base_loc = self.index.get(base_id).ok_or_else(|| Error::MissingBlob {
            id: base_id.to_hex(),
        })?;
        if base_loc.delta {
            return Err(Error::corrupt(
                what(),
                "a delta blob names another delta as its base",
            ));
        }
        let read;
        let base = match bases.get(base_id) {
            Some(b) => b,
            None => {
                read = self.read(base_id)?;
                &read
            }
        };
        finish_delta(
            self.keys,
            id,
            payload,
            loc.raw_len as usize,
            base,
            &what,
            check,
        )
        .map_err(|e| e.in_pack(loc.pack))
    }

    /// The indexed blobs of `ids` that `keep` accepts, sorted by place and grouped into
    /// range reads (wider ones on an object store, where requests cost more than bytes).
    fn runs(&self, ids: &[Id], keep: impl Fn(&BlobLoc) -> bool) -> Vec<Run> {
        let mut locs: Vec<(Id, BlobLoc)> = ids
            .iter()
            .filter_map(|id| self.index.get(id).filter(|l| keep(l)).map(|l| (*id, l)))
            .collect();
        locs.sort_by_key(|(id, l)| (l.pack, l.offset, *id));
        locs.dedup_by_key(|(id, _)| *id);
        let (max_run, max_gap) = if self.backend.remote() {
            (REMOTE_MAX_RUN, REMOTE_MAX_GAP)
        } else {
            (MAX_RUN, MAX_GAP)
        };
        group(locs, max_run, max_gap, u64::MAX)
    }

    /// The full base each of the delta blobs `ids` names, read from their headers with one
    /// range read per run of neighbouring blobs (non-deltas and unknown ids are left out).
    /// The next backup's deltas stay one level deep by using these bases, and learning
    /// them one request per chunk is what made a continuous backup's snapshot cost dozens.
    ///
    /// # Errors
    /// [`Error::Corrupt`], backend errors.
    pub fn delta_bases(&self, ids: &[Id]) -> Result<HashMap<Id, Id>> {
        let runs = self.runs(ids, |l| l.delta);
        let found: Vec<Vec<(Id, Id)>> = runs
            .par_iter()
            .map(|run| {
                let path = pack_path(&run.pack);
                let data = self
                    .backend
                    .read_range(&path, run.offset, run.len)
                    .map_err(|e| e.in_pack(run.pack))?;
                run.blobs
                    .iter()
                    .map(|(id, loc)| {
                        let start = (u64::from(loc.offset) - run.offset) as usize;
                        let sealed = &data[start..start + loc.len as usize];
                        let (base, _) =
                            delta_base(self.keys, id, sealed, &|| format!("pack {path}"))
                                .map_err(|e| e.in_pack(run.pack))?;
                        Ok((*id, base))
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Reads many blobs with few requests: sorted by place, blobs of one pack at most
    /// `MAX_GAP` apart share one range read. Ids the index lacks are left out (callers
    /// that need them read them one by one and get the error there).
    ///
    /// # Errors
    /// [`Error::Corrupt`], backend errors.
    pub fn read_many(&self, ids: &[Id]) -> Result<HashMap<Id, Vec<u8>>> {
        let runs = self.runs(ids, |_| true);
        let opened: Vec<Vec<Vec<u8>>> = runs
            .par_iter()
            .map(|r| fetch(*self, r, IdCheck::Rehash))
            .collect::<Result<_>>()?;
        Ok(runs
            .iter()
            .zip(opened)
            .flat_map(|(r, bs)| r.blobs.iter().map(|(id, _)| *id).zip(bs))
            .collect())
    }
}

/// The sealed bytes of many blobs, read with few requests ([`Blobs::read_sealed`]) and
/// opened one by one later: a restore from an object store reads a large batch at once
/// (requests cost more than bytes) but holds only its compressed form, opening a few MiB at
/// a time.
pub(crate) struct Sealed {
    runs: Vec<Run>,
    /// Each run's blobs one after the other, without the bytes between them.
    data: Vec<Vec<u8>>,
    /// Where each blob is: its run, its place in the run, and its start in the run's data.
    at: HashMap<Id, (usize, usize, usize)>,
}

impl Blobs<'_> {
    /// Reads the sealed bytes of `ids` (those the index has), one request per run of
    /// neighbouring blobs, in parallel. Only the blobs are kept, not the bytes between
    /// them (on an object store a run spans up to 2 MiB gaps, mostly other tables' blobs).
    ///
    /// # Errors
    /// Backend errors; [`Error::Corrupt`] for a short read.
    pub(crate) fn read_sealed(&self, ids: &[Id]) -> Result<Sealed> {
        let runs = self.runs(ids, |_| true);
        let data = runs
            .par_iter()
            .map(|r| {
                let pieces: Vec<(u64, u64)> = r
                    .blobs
                    .iter()
                    .map(|(_, l)| (u64::from(l.offset), u64::from(l.len)))
                    .collect();
                let path = pack_path(&r.pack);
                let data = self
                    .backend
                    .read_pieces(&path, &pieces)
                    .map_err(|e| e.in_pack(r.pack))?;
                if data.len() as u64 != crate::backend::pieces::wanted(&pieces) {
                    return Err(Error::corrupt(&path, "a read returned too few bytes"));
                }
                Ok(data)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut at = HashMap::with_capacity(runs.iter().map(|r| r.blobs.len()).sum());
        for (i, r) in runs.iter().enumerate() {
            let mut start = 0;
            for (j, (id, loc)) in r.blobs.iter().enumerate() {
                at.insert(*id, (i, j, start));
                start += loc.len as usize;
            }
        }
        Ok(Sealed { runs, data, at })
    }
}

impl Sealed {
    fn get(&self, id: &Id) -> Option<(&Run, &BlobLoc, &[u8])> {
        let &(i, j, start) = self.at.get(id)?;
        let (run, data) = (&self.runs[i], &self.data[i]);
        let loc = &run.blobs[j].1;
        Some((run, loc, &data[start..start + loc.len as usize]))
    }

    /// Whether a blob is held here.
    pub(crate) fn has(&self, id: &Id) -> bool {
        self.at.contains_key(id)
    }

    /// Plaintext size of a blob held here (0 if it is not).
    pub(crate) fn raw(&self, id: &Id) -> u64 {
        self.get(id).map_or(0, |(_, loc, _)| u64::from(loc.raw_len))
    }

    /// The bases the deltas held here need, read together (one request per run of them).
    ///
    /// # Errors
    /// [`Error::Corrupt`], backend errors.
    pub(crate) fn bases(&self, blobs: Blobs<'_>) -> Result<HashMap<Id, Vec<u8>>> {
        let wanted: Vec<Id> = self
            .at
            .keys()
            .par_bridge()
            .filter_map(|id| {
                let (run, loc, sealed) = self.get(id)?;
                loc.delta.then(|| {
                    let path = pack_path(&run.pack);
                    delta_base(blobs.keys, id, sealed, &|| format!("pack {path}"))
                        .map(|(base, _)| base)
                        .map_err(|e| e.in_pack(run.pack))
                })
            })
            .collect::<Result<_>>()?;
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        blobs.read_many(&wanted)
    }

    /// Opens and verifies one blob held here (a delta's base from `bases`, else read).
    ///
    /// # Errors
    /// [`Error::MissingBlob`] if it is not held here; as [`Blobs::open_with`].
    pub(crate) fn open(
        &self,
        blobs: Blobs<'_>,
        id: &Id,
        bases: &HashMap<Id, Vec<u8>>,
        check: IdCheck,
    ) -> Result<Vec<u8>> {
        let (run, loc, sealed) = self
            .get(id)
            .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })?;
        blobs.open_with(id, loc, sealed, &pack_path(&run.pack), bases, check)
    }
}

/// Reads, opens and verifies one blob.
///
/// # Errors
/// [`Error::MissingBlob`], [`Error::Corrupt`], backend errors.
pub fn read_blob(repo: &Repository, index: &Index, id: &Id) -> Result<Vec<u8>> {
    Blobs {
        backend: repo.backend().as_ref(),
        keys: repo.keys(),
        index,
    }
    .read(id)
}

/// Chunk ids of a part, in order.
///
/// # Errors
/// As [`read_blob`], or a list blob of the wrong length.
pub fn part_chunk_ids(repo: &Repository, index: &Index, part: &Part) -> Result<Vec<Id>> {
    chunk_ids(
        Blobs {
            backend: repo.backend().as_ref(),
            keys: repo.keys(),
            index,
        },
        part,
    )
}

/// Chunk ids of a part, in order, read through `blobs`.
///
/// # Errors
/// As [`Blobs::read`], or a list blob of the wrong length.
pub fn chunk_ids(blobs: Blobs<'_>, part: &Part) -> Result<Vec<Id>> {
    Ok(tree_levels(blobs, part)?.swap_remove(0))
}

/// Every level of a part's chunk tree: `[0]` the chunk ids, `[depth]` the manifest's ids.
///
/// # Errors
/// As [`Blobs::read`], or a list blob of the wrong length.
pub fn tree_levels(blobs: Blobs<'_>, part: &Part) -> Result<Vec<Vec<Id>>> {
    let mut levels = vec![part.lists.clone()];
    for _ in 0..part.depth {
        let upper = levels.last().map(Vec::as_slice).unwrap_or_default();
        let mut below = Vec::with_capacity(upper.len() * 64);
        for bytes in blobs.read_lists(upper)? {
            below.extend(list_ids(&bytes, part)?);
        }
        levels.push(below);
    }
    levels.reverse();
    if levels[0].len() as u64 != part.chunks {
        return Err(Error::corrupt(
            format!("part {}", part.name),
            format!(
                "lists {} chunks, the manifest says {}",
                levels[0].len(),
                part.chunks
            ),
        ));
    }
    Ok(levels)
}

/// The ids in a chunk list blob of `part`.
///
/// # Errors
/// [`Error::Corrupt`] when its length is not a whole number of ids.
pub(crate) fn list_ids<'b>(bytes: &'b [u8], part: &Part) -> Result<impl Iterator<Item = Id> + 'b> {
    if bytes.len() % 32 != 0 {
        return Err(Error::corrupt(
            format!("chunk list of part {}", part.name),
            "bad length",
        ));
    }
    Ok(bytes.chunks_exact(32).map(|c| {
        let mut a = [0u8; 32];
        a.copy_from_slice(c);
        Id(a)
    }))
}

/// A run of blobs adjacent in one pack: one range read.
pub(crate) struct Run {
    pub(crate) pack: Id,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) raw: u64,
    pub(crate) blobs: Vec<(Id, BlobLoc)>,
}

/// How many of `items`, from the first, fit in `limit` bytes as `size` counts them: at
/// least one, so an item larger than the limit goes alone.
pub(crate) fn fitting<T>(items: &[T], limit: u64, size: impl Fn(&T) -> u64) -> usize {
    let (mut n, mut total) = (0, 0);
    while n < items.len() && (n == 0 || total + size(&items[n]) <= limit) {
        total += size(&items[n]);
        n += 1;
    }
    n
}

/// Groups blobs, in the given order, into runs: one range read each, over blobs of one
/// pack that follow each other with gaps of at most `MAX_GAP` (reading a gap costs less
/// than a request to an object store), and of at most `max_raw` plaintext bytes.
pub(crate) fn group(
    locs: Vec<(Id, BlobLoc)>,
    max_run: u64,
    max_gap: u64,
    max_raw: u64,
) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (id, loc) in locs {
        let (off, len) = (u64::from(loc.offset), u64::from(loc.len));
        if let Some(r) = runs.last_mut() {
            let end = r.offset + r.len;
            if r.pack == loc.pack
                && off >= end
                && off - end <= max_gap
                && off + len - r.offset <= max_run
                && r.raw + u64::from(loc.raw_len) <= max_raw
            {
                r.len = off + len - r.offset;
                r.raw += u64::from(loc.raw_len);
                r.blobs.push((id, loc));
                continue;
            }
        }
        runs.push(Run {
            pack: loc.pack,
            offset: off,
            len,
            raw: u64::from(loc.raw_len),
            blobs: vec![(id, loc)],
        });
    }
    runs
}

/// Reads one run and opens its blobs (their delta bases read together and re-hashed),
/// checking each id as `check` says.
pub(crate) fn fetch(blobs: Blobs<'_>, run: &Run, check: IdCheck) -> Result<Vec<Vec<u8>>> {
    let path = pack_path(&run.pack);
    let data = blobs
        .backend
        .read_range(&path, run.offset, run.len)
        .map_err(|e| e.in_pack(run.pack))?;
    let sealed = |loc: &BlobLoc| {
        let start = (u64::from(loc.offset) - run.offset) as usize;
        &data[start..start + loc.len as usize]
    };
    // Deltas are opened once, here, to learn their bases, which are then read together
    // rather than one request each.
    let heads: Vec<Option<(Id, Vec<u8>)>> = run
        .blobs
        .par_iter()
        .map(|(id, loc)| {
            loc.delta
                .then(|| delta_base(blobs.keys, id, sealed(loc), &|| format!("pack {path}")))
                .transpose()
                .map_err(|e| e.in_pack(run.pack))
        })
        .collect::<Result<_>>()?;
    let wanted: Vec<Id> = heads.iter().flatten().map(|(base, _)| *base).collect();
    let bases = if wanted.is_empty() {
        HashMap::new()
    } else {
        blobs.read_many(&wanted)?
    };
    run.blobs
        .par_iter()
        .zip(&heads)
        .map(|((id, loc), head)| match head {
            Some(head) => blobs.finish_delta(id, loc, head, &path, &bases, check),
            None => blobs.open_with(id, loc, sealed(loc), &path, &bases, check),
        })
        .collect()
}
