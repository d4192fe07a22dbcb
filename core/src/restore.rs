//! Reading parts back.
//!
//! Chunks of a part mostly sit next to each other in a few packs, so reads are coalesced
//! into runs of adjacent blobs (one range read each). Batches of runs are fetched and
//! opened in parallel (rayon) while a writer thread writes the previous batch in order and
//! hashes it; the part's recorded BLAKE3 and size are checked at the end. Every blob is
//! authenticated and checked against its id before a byte of it is written, so damage
//! gives an error, never wrong output.

use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::crypto::{delta_base, finish_delta, open_blob};
use crate::index::{BlobLoc, Index};
use crate::pack::{pack_path, read_trailer};
use crate::snapshot::Part;
use crate::{Error, Id, Repository, Result};

/// Plaintext bytes per parallel batch: bounds memory whatever the compression ratio.
const BATCH_RAW_BYTES: u64 = 4 << 20;
/// The same from an object store: one batch is read with one request per pack span, so
/// larger batches save requests.
const REMOTE_BATCH_RAW_BYTES: u64 = 16 << 20;
const MAX_RUN: u64 = 2 << 20;
/// Plaintext bytes one run of a restore may open at once. A run of small deltas holds the
/// bases they need as well (each base is a whole chunk), so without this cap 2 MiB of
/// deltas could hold tens of MiB of bases.
const MAX_RUN_RAW: u64 = 2 << 20;
/// Longest range read from an object store, where requests cost more than bytes.
const REMOTE_MAX_RUN: u64 = 16 << 20;
/// The same for an object store. A request's latency (20-50 ms to first byte on S3) is
/// worth 2-5 MiB of transfer at 100 MB/s, so spans this far apart are read as one.
const REMOTE_MAX_GAP: u64 = 2 << 20;
/// Unwanted bytes a range read may span to save a request.
const MAX_GAP: u64 = 128 << 10;

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
            .read_range(&path, u64::from(loc.offset), u64::from(loc.len))?;
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
        self.open_with(id, loc, sealed, path, &HashMap::new())
    }

    /// [`Blobs::open_at`], taking a delta's base from `bases` when it is there.
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
    ) -> Result<Vec<u8>> {
        let what = || format!("pack {path}");
        if !loc.delta {
            return open_blob(self.keys, id, sealed, loc.raw_len as usize, &what);
        }
        let (base_id, payload) = delta_base(self.keys, id, sealed, &what)?;
        self.finish_delta(id, loc, &base_id, &payload, path, bases)
    }

    /// The rest of opening a delta whose header [`delta_base`] read: its base (from `bases`
    /// or the store), checked to be a full blob, then the delta applied and verified.
    fn finish_delta(
        &self,
        id: &Id,
        loc: &BlobLoc,
        base_id: &Id,
        payload: &[u8],
        path: &str,
        bases: &HashMap<Id, Vec<u8>>,
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
        finish_delta(self.keys, id, payload, loc.raw_len as usize, base, &what)
    }

    /// Reads many blobs with few requests: sorted by place, blobs of one pack at most
    /// `MAX_GAP` apart share one range read. Ids the index lacks are left out (callers
    /// that need them read them one by one and get the error there).
    ///
    /// # Errors
    /// [`Error::Corrupt`], backend errors.
    pub fn read_many(&self, ids: &[Id]) -> Result<HashMap<Id, Vec<u8>>> {
        let mut locs: Vec<(Id, BlobLoc)> = ids
            .iter()
            .filter_map(|id| self.index.get(id).map(|l| (*id, l)))
            .collect();
        locs.sort_by_key(|(id, l)| (l.pack, l.offset, *id));
        locs.dedup_by_key(|(id, _)| *id);
        let (max_run, max_gap) = if self.backend.remote() {
            (REMOTE_MAX_RUN, REMOTE_MAX_GAP)
        } else {
            (MAX_RUN, MAX_GAP)
        };
        let runs = group(locs, max_run, max_gap, u64::MAX);
        let opened: Vec<Vec<Vec<u8>>> = runs
            .par_iter()
            .map(|r| fetch(*self, r))
            .collect::<Result<_>>()?;
        Ok(runs
            .iter()
            .zip(opened)
            .flat_map(|(r, bs)| r.blobs.iter().map(|(id, _)| *id).zip(bs))
            .collect())
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
struct Run {
    pack: Id,
    offset: u64,
    len: u64,
    raw: u64,
    blobs: Vec<(Id, BlobLoc)>,
}

fn plan(index: &Index, ids: &[Id]) -> Result<Vec<Run>> {
    let locs = ids
        .iter()
        .map(|id| {
            index
                .get(id)
                .map(|l| (*id, l))
                .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(group(locs, MAX_RUN, MAX_GAP, MAX_RUN_RAW))
}

/// Groups blobs, in the given order, into runs: one range read each, over blobs of one
/// pack that follow each other with gaps of at most `MAX_GAP` (reading a gap costs less
/// than a request to an object store), and of at most `max_raw` plaintext bytes.
fn group(locs: Vec<(Id, BlobLoc)>, max_run: u64, max_gap: u64, max_raw: u64) -> Vec<Run> {
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

fn fetch(blobs: Blobs<'_>, run: &Run) -> Result<Vec<Vec<u8>>> {
    let path = pack_path(&run.pack);
    let data = blobs.backend.read_range(&path, run.offset, run.len)?;
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
            Some((base, payload)) => blobs.finish_delta(id, loc, base, payload, &path, &bases),
            None => blobs.open_with(id, loc, sealed(loc), &path, &bases),
        })
        .collect()
}

/// What a restore of one part found.
#[derive(Clone, Debug, Default)]
pub struct PartReport {
    /// Bytes written.
    pub bytes: u64,
    /// Damage that did not affect the restored bytes (e.g. a pack trailer), one line each.
    pub warnings: Vec<String>,
}

/// Checks the trailers of the packs a restore read: damage there does not change the
/// restored bytes (the index located them and each blob was verified), but it must not go
/// unnoticed.
fn check_trailers(repo: &Repository, runs: &[Run]) -> Vec<String> {
    if repo.backend().remote() {
        // On an object store this costs three requests per pack; `check` covers it.
        return Vec::new();
    }
    let mut packs: Vec<Id> = runs.iter().map(|r| r.pack).collect();
    packs.sort_unstable();
    packs.dedup();
    packs
        .par_iter()
        .filter_map(|p| {
            let path = pack_path(p);
            let r = repo
                .backend()
                .size(&path)
                .and_then(|size| read_trailer(repo.backend().as_ref(), repo.keys(), p, size));
            let entries = match r {
                Ok(e) => e,
                Err(e) => {
                    return Some(format!(
                        "{e} (the restored data was verified and is intact; run `dbvault check`)"
                    ))
                }
            };
            let listed: std::collections::HashSet<(Id, u32, u32)> =
                entries.iter().map(|e| (e.id, e.offset, e.len)).collect();
            let missing = runs
                .iter()
                .filter(|r| r.pack == *p)
                .flat_map(|r| r.blobs.iter())
                .any(|(id, loc)| !listed.contains(&(*id, loc.offset, loc.len)));
            missing.then(|| {
                format!("pack {path}: its trailer disagrees with the index (run `dbvault check`)")
            })
        })
        .collect()
}

/// Writes one part's bytes to `out`, verifying everything. Returns the bytes written.
///
/// # Errors
/// [`Error::Corrupt`] (naming the part and pack) or [`Error::MissingBlob`] on damage;
/// [`Error::Output`] when writing fails.
pub fn restore_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
) -> Result<PartReport> {
    let index = repo.index()?;
    let in_part = |e: Error| match e {
        Error::Output(_) => e,
        other => Error::corrupt(format!("part {:?}", part.name), other.to_string()),
    };
    let ids = part_chunk_ids(repo, &index, part).map_err(in_part)?;
    let runs = plan(&index, &ids).map_err(in_part)?;
    // A rendezvous: one batch being opened, one being written. Restores into a database
    // run a part per connection, so every batch held here is held once per connection.
    let (tx, rx) = sync_channel::<Vec<Vec<Vec<u8>>>>(0);
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(u64, blake3::Hash)> {
            let mut h = blake3::Hasher::new();
            let mut n = 0u64;
            for batch in rx {
                for chunk in batch.iter().flatten() {
                    h.update(chunk);
                    out.write_all(chunk).map_err(Error::Output)?;
                    n += chunk.len() as u64;
                }
            }
            out.flush().map_err(Error::Output)?;
            Ok((n, h.finalize()))
        });
        let remote = repo.backend().remote();
        let batch_raw = if remote {
            REMOTE_BATCH_RAW_BYTES
        } else {
            BATCH_RAW_BYTES
        };
        let produce = || -> Result<()> {
            let mut start = 0;
            while start < runs.len() {
                let mut end = start;
                let mut raw = 0;
                while end < runs.len() && (end == start || raw + runs[end].raw <= batch_raw) {
                    raw += runs[end].raw;
                    end += 1;
                }
                let blobs = Blobs {
                    backend: repo.backend().as_ref(),
                    keys: repo.keys(),
                    index: &index,
                };
                if remote {
                    // One read per pack span the batch needs, not one per run: the
                    // chunks of a changed database alternate between old and new packs.
                    let ids: Vec<Id> = runs[start..end]
                        .iter()
                        .flat_map(|r| r.blobs.iter().map(|(id, _)| *id))
                        .collect();
                    let got = blobs.read_many(&ids)?;
                    let chunks = ids
                        .iter()
                        .map(|id| {
                            got.get(id)
                                .cloned()
                                .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    if tx.send(vec![chunks]).is_err() {
                        break;
                    }
                    start = end;
                    continue;
                }
                let batch: Vec<Vec<Vec<u8>>> = runs[start..end]
                    .par_iter()
                    .map(|r| {
                        fetch(
                            Blobs {
                                backend: repo.backend().as_ref(),
                                keys: repo.keys(),
                                index: &index,
                            },
                            r,
                        )
                    })
                    .collect::<Result<_>>()?;
                if tx.send(batch).is_err() {
                    return Ok(()); // the writer failed; its error is reported below
                }
                start = end;
            }
            Ok(())
        };
        let produced = produce();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| Error::Invalid("restore writer panicked".into()))?;
        produced.map_err(in_part)?;
        let (n, hash) = written?;
        if n != part.size || hash.to_hex().as_str() != part.blake3 {
            return Err(Error::corrupt(
                format!("part {:?}", part.name),
                "restored bytes do not match the hash recorded at backup",
            ));
        }
        Ok(PartReport {
            bytes: n,
            warnings: check_trailers(repo, &runs),
        })
    })
}
