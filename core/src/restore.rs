//! Reading parts back.
//!
//! Chunks of a part mostly sit next to each other in a few packs, so reads are coalesced
//! into runs of adjacent blobs (one range read each, see `blobs`). Batches of runs are
//! fetched, opened and hashed in parallel (rayon; the part's BLAKE3 a piece per task) while
//! a writer thread writes the previous batch in order; the part's recorded BLAKE3 and size
//! are checked at the end.
//! Every blob is authenticated before a byte of it is written, and its tag binds it to its
//! id (the id is the associated data), so damage gives an error, never wrong output; a store
//! that cannot be reached gives its own error, never a damage report. The part's chunks are
//! not re-hashed to their ids one by one ([`IdCheck::TagOnly`]): the part's BLAKE3 covers
//! the same bytes end to end, and the keyed hash on top hashed every byte twice. Blobs
//! used on their own (chunk lists, delta bases) are re-hashed, and `check --read-data`
//! re-hashes every blob.

use std::io::Write;
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::blobs::{fetch, fitting, group, part_chunk_ids, Blobs, Run, Sealed, MAX_GAP, MAX_RUN};
use crate::crypto::IdCheck;
use crate::hash::TreeHash;
use crate::index::Index;
use crate::pack::{pack_path, read_trailer};
use crate::snapshot::Part;
use crate::{Error, Id, Repository, Result};

/// Plaintext bytes per parallel batch from a local disk when one part is restored alone to
/// an output that holds nothing of its own ([`Batches::Large`]): bounds memory whatever the
/// compression ratio. Two are held (one opened, one written), 32 MiB, under the key
/// derivation's 48 MiB peak. Why not 4 MiB: a batch is a fork-join over its runs (up to
/// 2 MiB each) and a hand-over to the writer, and at 4 MiB the cores idled between them. A
/// stream restore of the scale-10 shopbench dump (1.76 GB) took 1.40-1.46 s with 4 MiB,
/// 1.33-1.38 s with 12, 1.30-1.32 s with 16 or 24 (peak 57.7 MiB with 16, 62-64 MiB with
/// 24). A 16 MiB batch opened as four 4 MiB fork-joins took 1.59-1.61 s; runs opened as
/// tasks in a 16 MiB window and handed over in order, 1.32-1.35 s (not kept: no faster).
const BATCH_RAW_BYTES: u64 = 16 << 20;
/// What the local batches of parts restored at once share (a restore into a database, a
/// part per connection: the server sets their pace), and the batch handed to an output that
/// holds memory of its own ([`Batches::Small`]). With 16 MiB batches `copy`, which feeds a
/// backup, peaked at 79 MiB, and a restore into a database at 68 MiB.
const SHARED_BATCH_RAW_BYTES: u64 = 4 << 20;
/// The same when opening what was read from an object store, where the read-ahead of
/// [`REMOTE_BATCH_RAW_BYTES`] sealed bytes and the S3 client already take their share.
const REMOTE_OPEN_RAW_BYTES: u64 = 4 << 20;
/// Plaintext bytes read at once from an object store: one request per pack span, so
/// larger reads save requests. They are held sealed and opened a batch at a time.
const REMOTE_BATCH_RAW_BYTES: u64 = 16 << 20;
/// The smallest batch when several parts are restored at once.
const MIN_BATCH_RAW_BYTES: u64 = 1 << 20;

/// Parts being restored now in this process. A restore into a database reads a part per
/// connection; the batches of all of them share the budget of one restore (two batches),
/// so memory does not grow with the connections. Why: three connections at 4 MiB batches
/// took a scale-10 restore to 65 MiB; the server, not the batch size, sets their pace.
static ACTIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a restore in [`ACTIVE`] while it lives.
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// This restore's share of the batch budget (`full`: one restore's batch).
fn batch_share(full: u64) -> u64 {
    let n = ACTIVE.load(std::sync::atomic::Ordering::Relaxed).max(1);
    (full / n).clamp(MIN_BATCH_RAW_BYTES.min(full), full)
}

/// This restore's batch from a local disk: `alone` when no other part is being restored,
/// else its share of [`SHARED_BATCH_RAW_BYTES`].
fn local_batch(alone: u64) -> u64 {
    if ACTIVE.load(std::sync::atomic::Ordering::Relaxed) > 1 {
        batch_share(SHARED_BATCH_RAW_BYTES)
    } else {
        alone
    }
}
/// Plaintext bytes one run of a restore may open at once. A run of small deltas holds the
/// bases they need as well (each base is a whole chunk), so without this cap 2 MiB of
/// deltas could hold tens of MiB of bases.
const MAX_RUN_RAW: u64 = 2 << 20;

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

/// Damage a restore met that did not touch the restored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A pack's trailer cannot be read or opened.
    TrailerDamaged {
        /// The pack.
        pack: Id,
        /// What was wrong.
        detail: String,
    },
    /// A pack's trailer does not list blobs where the index has them.
    TrailerDisagrees {
        /// The pack.
        pack: Id,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::TrailerDamaged { detail, .. } => write!(
                f,
                "{detail} (the restored data was verified and is intact; run `dbvault check`)"
            ),
            Warning::TrailerDisagrees { pack } => write!(
                f,
                "pack {}: its trailer disagrees with the index (run `dbvault check`)",
                pack_path(pack)
            ),
        }
    }
}

/// What a restore of one part found.
#[derive(Clone, Debug, Default)]
pub struct PartReport {
    /// Bytes written.
    pub bytes: u64,
    /// Damage that did not affect the restored bytes (e.g. a pack trailer).
    pub warnings: Vec<Warning>,
}

/// Checks the trailers of the packs a restore read: damage there does not change the
/// restored bytes (the index located them and each blob was verified), but it must not go
/// unnoticed.
fn check_trailers(repo: &Repository, runs: &[Run]) -> Vec<Warning> {
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
                    return Some(Warning::TrailerDamaged {
                        pack: *p,
                        detail: e.to_string(),
                    })
                }
            };
            let listed: std::collections::HashSet<(Id, u32, u32)> =
                entries.iter().map(|e| (e.id, e.offset, e.len)).collect();
            let missing = runs
                .iter()
                .filter(|r| r.pack == *p)
                .flat_map(|r| r.blobs.iter())
                .any(|(id, loc)| !listed.contains(&(*id, loc.offset, loc.len)));
            missing.then_some(Warning::TrailerDisagrees { pack: *p })
        })
        .collect()
}

/// How large the batches of a part's restore may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batches {
    /// For an output that holds nothing of its own (a file, a pipe): 16 MiB batches, fewer
    /// hand-overs between the pool and the writer.
    Large,
    /// For an output that holds memory of its own (a database session, a loader): 4 MiB,
    /// shared with the other parts being restored at once.
    Small,
}

/// Writes one part's bytes to `out`, verifying everything, in [`Batches::Small`].
///
/// # Errors
/// [`Error::Corrupt`] (naming the part and pack) or [`Error::MissingBlob`] on damage;
/// [`Error::Output`] when writing fails.
pub fn restore_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
) -> Result<PartReport> {
    restore_part_with(repo, part, out, Batches::Small)
}

/// [`restore_part`] with batches as `batches` says.
///
/// # Errors
/// As [`restore_part`].
pub fn restore_part_with(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    batches: Batches,
) -> Result<PartReport> {
    let alone = match batches {
        Batches::Large => BATCH_RAW_BYTES,
        Batches::Small => SHARED_BATCH_RAW_BYTES,
    };
    // Chunks are written a megabyte or more at a time with one vectored write: no copy
    // into a buffer (a `BufWriter` passes writes larger than itself through).
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_bytes = 0usize;
    let report = each_chunk(repo, part, alone, &mut |chunk| {
        pending_bytes += chunk.len();
        pending.push(chunk);
        // Parts restored at once (a connection each) share the write budget too.
        if pending_bytes as u64 >= batch_share(WRITE_BYTES) {
            write_chunks(out, &pending).map_err(Error::Output)?;
            pending.clear();
            pending_bytes = 0;
        }
        Ok(())
    })?;
    write_chunks(out, &pending).map_err(Error::Output)?;
    out.flush().map_err(Error::Output)?;
    Ok(report)
}

/// Reads `runs` from an object store and hands their blobs, opened and verified, in
/// order, a batch share at a time to `send` (false: stop). Reads are large (one request per
/// pack span of [`REMOTE_BATCH_RAW_BYTES`] of plaintext) and made by a thread of their own
/// while the previous read is opened; only sealed bytes are held in bulk.
fn from_store(
    blobs: Blobs<'_>,
    runs: &[Run],
    send: &mut dyn FnMut(Vec<Vec<u8>>) -> bool,
) -> Result<()> {
    std::thread::scope(|s| {
        // One read ahead: its sealed bytes (about a quarter of its plaintext for a dump).
        let (ftx, frx) = sync_channel::<Result<(Vec<Id>, Sealed)>>(0);
        s.spawn(move || {
            let mut start = 0;
            while start < runs.len() {
                // Plaintext and half as many sealed bytes: incompressible data is as large
                // sealed, and one read is held while the one before it is opened. Parts
                // restored at once (a connection each) share the budget.
                let budget = batch_share(REMOTE_BATCH_RAW_BYTES);
                let end = start + fitting(&runs[start..], budget, |r| r.raw.max(2 * r.len));
                let ids: Vec<Id> = runs[start..end]
                    .iter()
                    .flat_map(|r| r.blobs.iter().map(|(id, _)| *id))
                    .collect();
                let read = blobs.read_sealed(&ids).map(|s| (ids, s));
                let failed = read.is_err();
                if ftx.send(read).is_err() || failed {
                    return;
                }
                start = end;
            }
        });
        for read in frx {
            let (ids, sealed) = read?;
            let bases = sealed.bases(blobs)?;
            let mut i = 0;
            while i < ids.len() {
                let n = fitting(&ids[i..], batch_share(REMOTE_OPEN_RAW_BYTES), |id| {
                    sealed.raw(id)
                });
                let chunks = ids[i..i + n]
                    .par_iter()
                    .map(|id| sealed.open(blobs, id, &bases, IdCheck::TagOnly))
                    .collect::<Result<Vec<_>>>()?;
                if !send(chunks) {
                    return Ok(()); // the writer failed; its error is reported
                }
                i += n;
            }
        }
        Ok(())
    })
}

/// Bytes of chunks gathered for one vectored write.
const WRITE_BYTES: u64 = 2 << 20;

/// `write_all` for several buffers.
fn write_chunks(out: &mut (dyn Write + Send), chunks: &[Vec<u8>]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut bufs = &mut slices[..];
    std::io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands one part's chunks, in order and verified, to `sink` (called on a thread of its
/// own while the next chunks are read), then checks the part's recorded size and BLAKE3.
/// `copy` feeds them to another repository's backup this way, keeping their boundaries.
///
/// # Errors
/// As [`restore_part`]; an error of `sink` stops the reading and is returned as it is.
pub fn for_each_chunk(
    repo: &Repository,
    part: &Part,
    sink: &mut (dyn FnMut(Vec<u8>) -> Result<()> + Send),
) -> Result<PartReport> {
    each_chunk(repo, part, SHARED_BATCH_RAW_BYTES, sink)
}

/// [`for_each_chunk`], with local batches of `alone` plaintext bytes when no other part is
/// being restored.
fn each_chunk(
    repo: &Repository,
    part: &Part,
    alone: u64,
    sink: &mut (dyn FnMut(Vec<u8>) -> Result<()> + Send),
) -> Result<PartReport> {
    let index = repo.index()?;
    // Damage is named by part (and pack); anything else (a store that cannot be reached,
    // a failed write) keeps its kind.
    let in_part = |e: Error| {
        if e.is_damage() {
            Error::Corrupt {
                what: format!("part {:?}", part.name),
                detail: e.to_string(),
                pack: e.damaged_pack(),
            }
        } else {
            e
        }
    };
    let ids = part_chunk_ids(repo, &index, part).map_err(in_part)?;
    let runs = plan(&index, &ids).map_err(in_part)?;
    // A rendezvous: one batch being opened, one being written. Restores into a database
    // run a part per connection, so every batch held here is held once per connection.
    let (tx, rx) = sync_channel::<Vec<Vec<Vec<u8>>>>(0);
    let task = repo.task(&part.name, Some(part.size), crate::progress::Unit::Bytes);
    std::thread::scope(|s| {
        let task = &task;
        let writer = s.spawn(move || -> Result<()> {
            for batch in rx {
                for chunk in batch.into_iter().flatten() {
                    let n = chunk.len() as u64;
                    sink(chunk)?;
                    task.inc(n);
                }
            }
            Ok(())
        });
        let remote = repo.backend().remote();
        let _active = Active::new();
        // Hashed on the pool a piece per task, right after each batch is opened:
        // one thread hashing every byte was the restore's longest stage.
        let mut hash = TreeHash::default();
        let mut produce = || -> Result<()> {
            if remote {
                let blobs = Blobs {
                    backend: repo.backend().as_ref(),
                    keys: repo.keys(),
                    index: &index,
                };
                return from_store(blobs, &runs, &mut |chunks| {
                    hash.update_batch(chunks.iter().map(Vec::as_slice));
                    tx.send(vec![chunks]).is_ok()
                });
            }
            let mut start = 0;
            while start < runs.len() {
                let end = start + fitting(&runs[start..], local_batch(alone), |r| r.raw);
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
                            IdCheck::TagOnly,
                        )
                    })
                    .collect::<Result<_>>()?;
                hash.update_batch(batch.iter().flatten().map(Vec::as_slice));
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
        written?;
        let n = hash.len();
        let hash = hash.finalize();
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
