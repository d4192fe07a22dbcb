//! The worker side of the backup pipeline: keyed ids, dedup, deltas, compression and
//! sealing (rayon), the content-defined tree of chunk lists, packing, and the writer
//! thread that stores packs and then the index files naming them.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backend::Backend;
use crate::blobs::{fitting, tree_levels, Blobs};
use crate::crypto::{IdCheck, Keys};
use crate::delta::{seal_chunk, ParentPart};
use crate::hash::TreeHash;
use crate::index::{encode_file, index_path, Index};
use crate::input::PartInput;
use crate::lock::LockHandle;
use crate::pack::{pack_path, BlobKind, FinishedPack, PackBuilder, PackEntry};
use crate::snapshot::Part;
use crate::{Error, Id, Result};

const PACKS_PER_INDEX: usize = 64;
/// New chunk bytes put aside before sealing on an object store, so that their delta bases
/// are read with few requests.
const DEFER_REMOTE: usize = 16 << 20;
/// New chunk bytes sealed at once (in parallel), on an object store.
const SEAL_SLICE: u64 = 1 << 20;
/// The same on a local disk: a whole 4 MiB batch in one parallel pass. Four passes of a
/// MiB each left the pool idle between them (a first backup of the scale-5 shopbench dump:
/// 1.65-1.67 s, 1.57-1.61 s with this), at most 3 MiB more sealed copies in memory.
const LOCAL_SEAL_SLICE: u64 = 4 << 20;

/// A list blob ends after an id whose first two bytes are 0 modulo this: lists are
/// content-defined (64 ids on average), so a changed chunk rewrites one small list, not a
/// fixed run of 4096 ids shifted by every insert.
pub const LIST_AVG: u16 = 64;
/// Most ids in one list blob (128 KiB).
pub const LIST_MAX: usize = 4096;

fn ends_list(id: &Id) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]) % LIST_AVG == 0
}
pub(crate) enum Job {
    Begin {
        part: u32,
        name: String,
    },
    Chunks {
        part: u32,
        chunks: Vec<Vec<u8>>,
    },
    EndPart {
        part: u32,
        input: PartInput,
        size: u64,
    },
}

pub(crate) struct WorkerOut {
    pub parts: Vec<(u32, Part)>,
    pub new_blobs: u64,
    pub bytes_added: u64,
    pub packs: u64,
}

pub(crate) struct WorkerCtx {
    /// Checked before each index file: a stalled backup whose lock a prune took over must
    /// not index packs the prune may have deleted.
    pub lock: LockHandle,
    pub keys: Keys,
    pub backend: Arc<dyn Backend>,
    pub index: Arc<Index>,
    pub level: i32,
    pub pack_target: usize,
    /// Parts of the previous snapshot of this source, by name: bases for deltas.
    pub parent: HashMap<String, Part>,
}

#[derive(Default)]
struct PartState {
    /// BLAKE3 of the part's plaintext, fed here (not by the reading thread, which is the
    /// bottleneck when little is new) in pieces on the pool alongside the chunk ids, so
    /// neither thread waits for a serial hash of the whole batch.
    hasher: TreeHash,
    /// `levels[0]`: chunk ids not yet in a list; `levels[l]`: ids of level-`l` lists not
    /// yet in a level `l + 1` list. A tree, so a terabyte's manifest stays small.
    levels: Vec<Vec<Id>>,
    chunks: u64,
    /// The same part's tree in the previous snapshot, level by level (0: chunks), with
    /// where this part's next item of that level stood in it: bases for deltas.
    parent: Vec<(ParentPart, usize)>,
}

struct Worker {
    ctx: WorkerCtx,
    pending: HashSet<Id>,
    pack: PackBuilder,
    /// Buffers of stored packs, to build the next ones in.
    free: Receiver<Vec<u8>>,
    to_writer: SyncSender<PackBuilder>,
    parts: HashMap<u32, PartState>,
    done: Vec<(u32, Part)>,
    new_blobs: u64,
    /// New chunks not sealed yet (id, bytes, delta base), and their size.
    deferred: Vec<(Id, Vec<u8>, Option<Id>)>,
    deferred_bytes: usize,
    /// Seal once this many bytes are put aside (0: at once).
    defer_limit: usize,
}

/// Packs a backup holds at once: one being filled, and one per upload in flight (at most
/// two). Their buffers are recycled, so the packs' share of memory is fixed: none where
/// packs are spooled to files as they are built (a local disk; S3 with a spool directory)
/// and a buffer is only a token, else 3 x 17 MiB.
fn pack_buffers(uploads: usize) -> usize {
    uploads.clamp(1, 2) + 1
}

pub(crate) fn run_worker(rx: &Receiver<Job>, ctx: WorkerCtx) -> Result<WorkerOut> {
    // Rendezvous: a pack goes to the writer only when it takes it.
    let (ptx, prx) = sync_channel::<PackBuilder>(0);
    // Stored packs' buffers come back here; only the uploaders hold senders, so when they
    // all stop (on an error) a worker waiting for a buffer is told instead of waiting.
    let n = pack_buffers(ctx.backend.uploads());
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(n);
    for _ in 1..n {
        free_tx
            .send(Vec::new())
            .map_err(|_| Error::Invalid("pack buffer pool".into()))?;
    }
    let (backend, keys, lock) = (ctx.backend.clone(), ctx.keys.clone(), ctx.lock.clone());
    let writer = std::thread::Builder::new()
        .name("dbvault-write".into())
        .spawn(move || run_writer(prx, free_tx, backend.as_ref(), &keys, &lock))
        .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
    let backend_remote = ctx.backend.remote();
    let pack = PackBuilder::new_for(ctx.backend.as_ref(), Vec::new(), ctx.pack_target)?;
    let mut w = Worker {
        ctx,
        pending: HashSet::new(),
        pack,
        free: free_rx,
        to_writer: ptx,
        parts: HashMap::new(),
        done: Vec::new(),
        new_blobs: 0,
        deferred: Vec::new(),
        deferred_bytes: 0,
        defer_limit: if backend_remote { DEFER_REMOTE } else { 0 },
    };
    let result = (|| {
        for job in rx.iter() {
            match job {
                Job::Begin { part, name } => w.begin(part, &name)?,
                Job::Chunks { part, chunks } => w.add_chunks(part, chunks)?,
                Job::EndPart { part, input, size } => w.end_part(part, input, size)?,
            }
        }
        w.seal_deferred()?;
        w.flush_pack(true)
    })();
    let Worker {
        to_writer,
        done,
        new_blobs,
        ..
    } = w;
    drop(to_writer);
    let written = writer
        .join()
        .map_err(|_| Error::Invalid("the pack writer panicked".into()))?;
    // The writer's error is the cause when both failed (the worker only saw it stop).
    let (bytes_added, packs) = written?;
    result?;
    Ok(WorkerOut {
        parts: done,
        new_blobs,
        bytes_added,
        packs,
    })
}

impl Worker {
    fn blobs(&self) -> Blobs<'_> {
        Blobs {
            backend: self.ctx.backend.as_ref(),
            keys: &self.ctx.keys,
            index: &self.ctx.index,
        }
    }

    fn begin(&mut self, part: u32, name: &str) -> Result<()> {
        let parent = match self.ctx.parent.get(name) {
            // A parent whose lists cannot be read only costs the deltas.
            Some(p) => tree_levels(self.blobs(), p)
                .map(|levels| {
                    levels
                        .into_iter()
                        .map(|ids| (ParentPart::new(ids), 0))
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        self.parts.entry(part).or_default().parent = parent;
        Ok(())
    }

    fn add_chunks(&mut self, part: u32, chunks: Vec<Vec<u8>>) -> Result<()> {
        let keys = &self.ctx.keys;
        let st = self.parts.entry(part).or_default();
        let (ids, ()) = rayon::join(
            || {
                chunks
                    .par_iter()
                    .map(|c| keys.blob_id(c))
                    .collect::<Vec<Id>>()
            },
            || st.hasher.update_batch(chunks.iter().map(Vec::as_slice)),
        );
        let mut fresh = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let base = match st.parent.first_mut() {
                Some((pp, cursor)) => {
                    let b = pp.at(*cursor);
                    *cursor = pp.advance(*cursor, id);
                    b
                }
                None => None,
            };
            if !self.ctx.index.contains(id) && self.pending.insert(*id) {
                fresh.push((i, base));
            }
        }
        let mut chunks = chunks;
        for &(i, base) in &fresh {
            let c = std::mem::take(&mut chunks[i]);
            self.deferred_bytes += c.len();
            self.deferred.push((ids[i], c, base));
        }
        if self.deferred_bytes >= self.defer_limit {
            self.seal_deferred()?;
        }
        self.parts.entry(part).or_default().chunks += ids.len() as u64;
        for id in ids {
            self.push_id(part, 0, id)?;
        }
        Ok(())
    }

    /// Seals the new chunks put aside, reading their bases together: one request per span
    /// of neighbouring blobs instead of one per chunk (it matters on an object store, where
    /// more chunks are put aside for it).
    fn seal_deferred(&mut self) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let mut todo = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        let level = self.ctx.level;
        let blobs = self.blobs();
        // A base that is itself a delta gives way to its own (full) base: their headers
        // are read together, then every full base in one go.
        let proposed: Vec<Id> = todo.iter().filter_map(|(_, _, b)| *b).collect();
        let resolved = blobs.delta_bases(&proposed)?;
        for (_, _, b) in &mut todo {
            if let Some(full) = b.and_then(|x| resolved.get(&x)) {
                *b = Some(*full);
            }
        }
        let wanted: Vec<Id> = todo
            .iter()
            .filter_map(|(_, _, b)| *b)
            .filter(|b| self.ctx.index.get(b).is_some_and(|l| !l.delta))
            .collect();
        // The bases are read together (few requests) but kept sealed, and each slice opens
        // only its own: opened all at once they were as large as what was put aside.
        let stored = blobs.read_sealed(&wanted)?;
        // Sealed a slice at a time (in parallel within it), so the sealed copies in memory
        // are one slice's, not all that was put aside.
        let slice_bytes = if self.ctx.backend.remote() {
            SEAL_SLICE
        } else {
            LOCAL_SEAL_SLICE
        };
        let mut rest = &todo[..];
        while !rest.is_empty() {
            let n = fitting(rest, slice_bytes, |(_, c, _)| c.len() as u64);
            let (slice, tail) = rest.split_at(n);
            rest = tail;
            let blobs = self.blobs();
            let mut ids: Vec<Id> = slice.iter().filter_map(|(_, _, b)| *b).collect();
            ids.sort_unstable();
            ids.dedup();
            let none = HashMap::new();
            // A base the read did not bring (not indexed as a full blob) is left to
            // `seal_chunk`, which then stores the chunk whole.
            let bases: HashMap<Id, Vec<u8>> = ids
                .par_iter()
                .filter(|id| stored.has(id))
                .map(|id| {
                    stored
                        .open(blobs, id, &none, IdCheck::Rehash)
                        .map(|b| (*id, b))
                })
                .collect::<Result<_>>()?;
            let sealed: Vec<(BlobKind, Vec<u8>, Option<Id>)> = slice
                .par_iter()
                .map(|(id, c, base)| seal_chunk(blobs, id, c, *base, level, &bases))
                .collect::<Result<_>>()?;
            for ((id, c, _), (kind, s, base)) in slice.iter().zip(&sealed) {
                self.add_sealed(*kind, *id, s, c.len(), *base)?;
            }
        }
        Ok(())
    }

    fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: Id,
        sealed: &[u8],
        raw_len: usize,
        base: Option<Id>,
    ) -> Result<()> {
        self.new_blobs += 1;
        self.pack.add(kind, id, sealed, raw_len as u32, base)?;
        if self.pack.len() >= self.ctx.pack_target {
            self.flush_pack(false)?;
        }
        Ok(())
    }

    fn push_id(&mut self, part: u32, level: usize, id: Id) -> Result<()> {
        let st = self.parts.entry(part).or_default();
        if st.levels.len() <= level {
            st.levels.resize_with(level + 1, Vec::new);
        }
        st.levels[level].push(id);
        if level > 0 {
            if let Some((pp, cursor)) = st.parent.get_mut(level) {
                *cursor = pp.advance(*cursor, &id);
            }
        }
        if ends_list(&id) || st.levels[level].len() >= LIST_MAX {
            self.close_list(part, level)?;
        }
        Ok(())
    }

    /// Stores the pending ids of `level` as one list blob and files it one level up.
    fn close_list(&mut self, part: u32, level: usize) -> Result<()> {
        let st = self.parts.entry(part).or_default();
        let ids = std::mem::take(&mut st.levels[level]);
        if ids.is_empty() {
            return Ok(());
        }
        let base = st
            .parent
            .get(level + 1)
            .and_then(|(pp, cursor)| pp.at(*cursor));
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        let id = self.ctx.keys.blob_id(&bytes);
        if !self.ctx.index.contains(&id) && self.pending.insert(id) {
            // The base list was read when the part began: take it from the cache.
            let mut known = HashMap::new();
            if let Some(b) = base.filter(|b| self.ctx.index.get(b).is_some_and(|l| !l.delta)) {
                if let Ok(bytes) = self.blobs().read_list(&b) {
                    known.insert(b, bytes);
                }
            }
            let (kind, sealed, base) =
                seal_chunk(self.blobs(), &id, &bytes, base, self.ctx.level, &known)?;
            let kind = if kind == BlobKind::Data {
                BlobKind::List
            } else {
                kind
            };
            self.add_sealed(kind, id, &sealed, bytes.len(), base)?;
        }
        self.push_id(part, level + 1, id)
    }

    fn end_part(&mut self, part: u32, input: PartInput, size: u64) -> Result<()> {
        // Close every level below the highest; the highest level's ids go in the manifest.
        let mut level = 0;
        while level + 1 < self.parts.get(&part).map_or(0, |s| s.levels.len()) {
            self.close_list(part, level)?;
            level += 1;
        }
        let mut st = self.parts.remove(&part).unwrap_or_default();
        let depth = st.levels.len().saturating_sub(1) as u32;
        let lists = st.levels.pop().unwrap_or_default();
        let blake3 = st.hasher.finalize().to_hex().to_string();
        self.done.push((
            part,
            Part {
                name: input.name,
                kind: input.kind,
                size,
                rows: input.rows,
                blake3,
                chunks: st.chunks,
                lists,
                depth,
                meta: input.meta,
            },
        ));
        Ok(())
    }

    /// Hands the pack to the writer and, unless it is the `last`, waits for a free buffer
    /// to build the next one in.
    fn flush_pack(&mut self, last: bool) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let stopped = || Error::Invalid("the pack writer stopped".into());
        let full = std::mem::take(&mut self.pack);
        self.to_writer.send(full).map_err(|_| stopped())?;
        if !last {
            let buf = self.free.recv().map_err(|_| stopped())?;
            self.pack = PackBuilder::new_for(self.ctx.backend.as_ref(), buf, self.ctx.pack_target)?;
        }
        Ok(())
    }
}

fn write_index(
    backend: &dyn Backend,
    keys: &Keys,
    lock: &LockHandle,
    packs: &mut Vec<(Id, Vec<PackEntry>)>,
) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    lock.ensure_held()?;
    let (id, bytes) = encode_file(keys, packs)?;
    backend.create_unique(&index_path(&id), &bytes)?;
    packs.clear();
    Ok(bytes.len() as u64)
}

/// Stores packs as they come, `backend.uploads()` at a time, and after every
/// `PACKS_PER_INDEX` stored packs an index file naming them. An index file only ever names
/// packs whose upload has returned, so an interrupted backup leaves unindexed packs (prune
/// removes them), never an index entry without its pack. Each stored pack's buffer goes
/// back to `free`; the number of buffers bounds the packs in memory.
fn run_writer(
    rx: Receiver<PackBuilder>,
    free: SyncSender<Vec<u8>>,
    backend: &dyn Backend,
    keys: &Keys,
    lock: &LockHandle,
) -> Result<(u64, u64)> {
    std::thread::scope(|s| {
        let (jobs, job_rx) = sync_channel::<FinishedPack>(0);
        // Shared by the uploaders only: when the last one stops (on an error), sending
        // fails instead of blocking.
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = channel::<Result<(Id, Vec<PackEntry>, u64)>>();
        for _ in 0..backend.uploads().max(1) {
            let (done_tx, job_rx, free) = (done_tx.clone(), job_rx.clone(), free.clone());
            s.spawn(move || loop {
                let next = job_rx.lock().map(|r| r.recv());
                let Ok(Ok(FinishedPack {
                    id,
                    bytes,
                    entries,
                    len,
                    small,
                })) = next
                else {
                    break;
                };
                let path = pack_path(&id);
                let (r, data) = bytes.store(backend, &path);
                if r.is_ok() {
                    // Lists (and deltas, which are small) are read by the next backup and
                    // by restores: a caching backend keeps them now.
                    for (off, b) in FinishedPack::small_blobs(&entries, &small, data.as_deref()) {
                        backend.keep_range(&path, off, b);
                    }
                }
                // A store error after the lock was taken over (a prune that found this
                // backup stalled removes its temp files) is the lost lock: say that.
                let r = r
                    .map_err(|e| lock.ensure_held().err().unwrap_or(e))
                    .map(|()| (id, entries, len));
                // Back to the packer even after a failure: it may be waiting for a buffer
                // before it hands over the pack that lets the writer see the error (a
                // spooled pack's buffer is an empty token). The worker may be gone (the
                // last pack): then the buffer is dropped.
                let _ = free.try_send(data.unwrap_or_default());
                let failed = r.is_err();
                if done_tx.send(r).is_err() || failed {
                    break;
                }
            });
        }
        drop((done_tx, job_rx, free));
        let mut written = Vec::new();
        let (mut bytes, mut packs) = (0u64, 0u64);
        let mut stored = |r: Result<(Id, Vec<PackEntry>, u64)>| -> Result<()> {
            let (id, entries, len) = r?;
            bytes += len;
            packs += 1;
            written.push((id, entries));
            if written.len() >= PACKS_PER_INDEX {
                bytes += write_index(backend, keys, lock, &mut written)?;
            }
            Ok(())
        };
        for pb in rx {
            let sealed = pb.finish(keys)?;
            if jobs.send(sealed).is_err() {
                break; // every uploader stopped on an error, reported below
            }
            while let Ok(r) = done.try_recv() {
                stored(r)?;
            }
        }
        drop(jobs);
        for r in done {
            stored(r)?;
        }
        drop(stored);
        bytes += write_index(backend, keys, lock, &mut written)?;
        Ok((bytes, packs))
    })
}
