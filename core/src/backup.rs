//! The backup pipeline.
//!
//! ```text
//! caller thread(s)          worker thread (rayon inside)          writer thread
//! read + chunk + hash  -->  keyed ids, dedup, zstd, seal, pack -->  create pack, index files
//!        bounded channel (2 batches)          bounded channel (1 pack)
//! ```
//! Bounded channels give back-pressure: memory stays at a few batches and two packs
//! whatever the stream size. `add_part` may be called from several threads at once (one
//! per table); parts are recorded in the order `add_part` was called.
//!
//! Write order: packs, then the index files naming them (every 64 packs and at the end),
//! then, in [`Backup::finish`], the snapshot. A crash leaves only unreferenced data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rayon::prelude::*;

use crate::backend::Backend;
use crate::chunker::{self, ChunkerParams};
use crate::crypto::Keys;
use crate::delta::{seal_chunk, ParentPart};
use crate::index::{encode_file, index_path, Index};
use crate::pack::{pack_path, BlobKind, PackBuilder, PackEntry};
use crate::restore::{tree_levels, Blobs};
use crate::snapshot::{Part, Snapshot, SourceInfo};
use crate::{Error, Id, Repository, Result};

/// A list blob ends after an id whose first two bytes are 0 modulo this: lists are
/// content-defined (64 ids on average), so a changed chunk rewrites one small list, not a
/// fixed run of 4096 ids shifted by every insert.
pub const LIST_AVG: u16 = 64;
/// Most ids in one list blob (128 KiB).
pub const LIST_MAX: usize = 4096;

fn ends_list(id: &Id) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]) % LIST_AVG == 0
}
const BATCH_BYTES: usize = 4 << 20;
const PACKS_PER_INDEX: usize = 64;

/// How a part is cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// Content-defined (FastCDC, keyed): for streams where inserts shift later bytes.
    #[default]
    ContentDefined,
    /// Fixed-size chunks of this many bytes: for files of pages (SQLite), where changes
    /// rewrite pages in place and never shift the rest.
    Fixed(u32),
    /// Row-aligned content-defined chunks: for text with one row per line (COPY data).
    Lines(chunker::LineParams),
}

/// Describes a part before its bytes are read.
#[derive(Clone, Debug, Default)]
pub struct PartInput {
    /// How to cut it.
    pub chunking: Chunking,
    /// Part name (unique within the snapshot).
    pub name: String,
    /// Part kind.
    pub kind: String,
    /// Rows, where the source knows them.
    pub rows: Option<u64>,
    /// Format-specific details.
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// What a finished backup reports.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    /// The new snapshot's id.
    pub id: Id,
    /// The manifest as stored.
    pub snapshot: Snapshot,
    /// New blobs stored.
    pub new_blobs: u64,
    /// Packs written.
    pub packs: u64,
}

/// Everything but the parts, given when the backup is finished.
#[derive(Clone, Debug)]
pub struct SnapshotMeta {
    /// Snapshot time.
    pub time: chrono::DateTime<chrono::FixedOffset>,
    /// Source name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Where the data came from.
    pub source: SourceInfo,
}

enum Job {
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

struct WorkerOut {
    parts: Vec<(u32, Part)>,
    new_blobs: u64,
    bytes_added: u64,
    packs: u64,
}

/// A backup in progress. Dropping it without [`Backup::finish`] records no snapshot.
pub struct Backup<'r> {
    repo: &'r Repository,
    tx: Option<SyncSender<Job>>,
    worker: Option<JoinHandle<Result<WorkerOut>>>,
    failure: Arc<Mutex<Option<Error>>>,
    next_part: AtomicU32,
    progress: Arc<AtomicU64>,
    started: Instant,
}

impl Repository {
    /// Starts a backup: loads the index (for dedup) and starts the pipeline threads.
    ///
    /// # Errors
    /// A damaged or unreadable index.
    pub fn start_backup(&self) -> Result<Backup<'_>> {
        self.start_backup_after(None)
    }

    /// Starts a backup whose changed chunks may be stored as deltas against the chunks
    /// of `parent` (the previous snapshot of the same source).
    ///
    /// # Errors
    /// A damaged or unreadable index.
    pub fn start_backup_after(&self, parent: Option<&Snapshot>) -> Result<Backup<'_>> {
        let index = self.index()?;
        let (tx, rx) = sync_channel(2);
        let failure = Arc::new(Mutex::new(None));
        let ctx = WorkerCtx {
            keys: self.keys().clone(),
            backend: self.backend().clone(),
            index,
            level: self.config().compression,
            pack_target: self.config().pack_target as usize,
            parent: parent
                .map(|p| {
                    p.parts
                        .iter()
                        .map(|x| (x.name.clone(), x.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let f2 = failure.clone();
        let worker = std::thread::Builder::new()
            .name("dbvault-pack".into())
            .spawn(move || {
                let r = run_worker(rx, ctx);
                if let Err(e) = &r {
                    // Producers see a closed channel; they pick the cause up from here.
                    *f2.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Error::Invalid(e.to_string()));
                }
                r
            })
            .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
        Ok(Backup {
            repo: self,
            tx: Some(tx),
            worker: Some(worker),
            failure,
            next_part: AtomicU32::new(0),
            progress: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        })
    }
}

impl Backup<'_> {
    /// Bytes read so far over all parts (for progress display).
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    fn send(&self, job: Job) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Invalid("backup already finished".into()))?;
        tx.send(job).map_err(|_| {
            self.failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| Error::Invalid("the backup pipeline stopped".into()))
        })
    }

    /// Reads `reader` to its end as one part. Returns the part's size.
    ///
    /// # Errors
    /// [`Error::Source`] when reading fails; pipeline (storage) errors.
    pub fn add_part<R: Read>(&self, input: PartInput, reader: R) -> Result<u64> {
        let (chunking, name) = (input.chunking, input.name.clone());
        self.add_part_then(&name, chunking, reader, move || input)
    }

    /// Like [`Backup::add_part`], for sources that learn a part's details (rows, hashes)
    /// only by reading it: `describe` is called once `reader` reached its end.
    ///
    /// # Errors
    /// [`Error::Source`] when reading fails; pipeline (storage) errors.
    pub fn add_part_then<R: Read>(
        &self,
        name: &str,
        chunking: Chunking,
        reader: R,
        describe: impl FnOnce() -> PartInput,
    ) -> Result<u64> {
        let part = self.next_part.fetch_add(1, Ordering::Relaxed);
        self.send(Job::Begin {
            part,
            name: name.to_string(),
        })?;
        let repo_cfg = self.repo.config();
        let mut size = 0u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let params: ChunkerParams = repo_cfg.chunker;
        let mut take = |data: Vec<u8>| -> Result<()> {
            size += data.len() as u64;
            self.progress
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            batch_bytes += data.len();
            batch.push(data);
            if batch_bytes >= BATCH_BYTES {
                self.send(Job::Chunks {
                    part,
                    chunks: std::mem::take(&mut batch),
                })?;
                batch_bytes = 0;
            }
            Ok(())
        };
        match chunking {
            Chunking::Lines(p) => {
                for c in chunker::LineChunks::new(reader, p, self.repo.keys().chunker_seed()) {
                    take(c.map_err(Error::Source)?)?;
                }
            }
            Chunking::ContentDefined => {
                for c in chunker::chunks(reader, params, self.repo.keys().chunker_seed()) {
                    take(
                        c.map_err(|e| match e {
                            fastcdc::v2020::Error::IoError(e) => Error::Source(e),
                            other => Error::Source(std::io::Error::other(format!("{other:?}"))),
                        })?
                        .data,
                    )?;
                }
            }
            Chunking::Fixed(n) => {
                let mut reader = reader;
                loop {
                    let c = read_up_to(&mut reader, n as usize).map_err(Error::Source)?;
                    if c.is_empty() {
                        break;
                    }
                    take(c)?;
                }
            }
        }
        if !batch.is_empty() {
            self.send(Job::Chunks {
                part,
                chunks: batch,
            })?;
        }
        self.send(Job::EndPart {
            part,
            input: describe(),
            size,
        })?;
        Ok(size)
    }

    fn join(&mut self) -> Result<WorkerOut> {
        drop(self.tx.take());
        let w = self
            .worker
            .take()
            .ok_or_else(|| Error::Invalid("backup already finished".into()))?;
        w.join()
            .map_err(|_| Error::Invalid("the backup pipeline panicked".into()))?
    }

    /// Waits for every pack and index file, then writes the snapshot.
    ///
    /// # Errors
    /// Pipeline (storage) errors; then no snapshot is written.
    pub fn finish(mut self, meta: SnapshotMeta) -> Result<BackupSummary> {
        let out = self.join();
        // New index files exist now (even after a failure): later reads must see them.
        self.repo.invalidate_index();
        let out = out?;
        let mut parts = out.parts;
        parts.sort_by_key(|(n, _)| *n);
        let parts: Vec<Part> = parts.into_iter().map(|(_, p)| p).collect();
        let mut snapshot = Snapshot {
            version: 1,
            time: meta.time,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            name: meta.name,
            tags: meta.tags,
            source: meta.source,
            bytes_in: parts.iter().map(|p| p.size).sum(),
            parts,
            bytes_added: out.bytes_added,
            seconds: 0.0,
            program: format!("dbvault {}", env!("CARGO_PKG_VERSION")),
        };
        snapshot.seconds = (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        // bytes_added includes the snapshot itself; its size is known only once sealed, and
        // the sealed size does not depend on the value of this field by more than a few bytes.
        let (_, probe) = snapshot.encode(self.repo.keys())?;
        snapshot.bytes_added += probe.len() as u64;
        let (id, _) = self.repo.save_snapshot(&snapshot)?;
        Ok(BackupSummary {
            id,
            snapshot,
            new_blobs: out.new_blobs,
            packs: out.packs,
        })
    }

    /// Stops the pipeline without recording a snapshot. Data already written stays as
    /// unreferenced packs (reused by the next backup, removed by prune).
    pub fn abort(mut self) {
        let _ = self.join();
        self.repo.invalidate_index();
    }
}

impl Drop for Backup<'_> {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

/// Reads until `n` bytes or the end of the stream.
fn read_up_to<R: Read>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// BLAKE3 fed in 64 KiB pieces. blake3's SIMD path needs input aligned to its 1 KiB
/// chunks; chunks of a part have arbitrary lengths and would otherwise be hashed one
/// 64-byte block at a time (measured: 3x slower).
#[derive(Default)]
struct AlignedHasher {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl AlignedHasher {
    const PIECE: usize = 64 * 1024;

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= Self::PIECE {
                let n = data.len() - data.len() % Self::PIECE;
                self.hasher.update(&data[..n]);
                data = &data[n..];
                continue;
            }
            let k = (Self::PIECE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.buf.len() == Self::PIECE {
                self.hasher.update(&self.buf);
                self.buf.clear();
            }
        }
    }

    fn finalize(mut self) -> blake3::Hash {
        self.hasher.update(&self.buf);
        self.buf.clear();
        self.hasher.finalize()
    }
}

struct WorkerCtx {
    keys: Keys,
    backend: Arc<dyn Backend>,
    index: Arc<Index>,
    level: i32,
    pack_target: usize,
    /// Parts of the previous snapshot of this source, by name: bases for deltas.
    parent: HashMap<String, Part>,
}

#[derive(Default)]
struct PartState {
    /// BLAKE3 of the part's plaintext, fed here (not by the reading thread, which is the
    /// bottleneck when little is new) in parallel with the chunk ids.
    hasher: AlignedHasher,
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
    to_writer: SyncSender<PackBuilder>,
    parts: HashMap<u32, PartState>,
    done: Vec<(u32, Part)>,
    new_blobs: u64,
}

fn run_worker(rx: Receiver<Job>, ctx: WorkerCtx) -> Result<WorkerOut> {
    // Rendezvous: at most one pack being built and one being written.
    let (ptx, prx) = sync_channel::<PackBuilder>(0);
    let (backend, keys) = (ctx.backend.clone(), ctx.keys.clone());
    let writer = std::thread::Builder::new()
        .name("dbvault-write".into())
        .spawn(move || run_writer(prx, backend.as_ref(), &keys))
        .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
    let pack = PackBuilder::with_capacity(ctx.pack_target + (1 << 20));
    let mut w = Worker {
        ctx,
        pending: HashSet::new(),
        pack,
        to_writer: ptx,
        parts: HashMap::new(),
        done: Vec::new(),
        new_blobs: 0,
    };
    let result = (|| {
        for job in rx {
            match job {
                Job::Begin { part, name } => w.begin(part, &name)?,
                Job::Chunks { part, chunks } => w.add_chunks(part, chunks)?,
                Job::EndPart { part, input, size } => w.end_part(part, input, size)?,
            }
        }
        w.flush_pack()
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
            || {
                chunks.iter().for_each(|c| {
                    st.hasher.update(c);
                })
            },
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
        let level = self.ctx.level;
        let blobs = Blobs {
            backend: self.ctx.backend.as_ref(),
            keys,
            index: &self.ctx.index,
        };
        let sealed: Vec<(BlobKind, Vec<u8>)> = fresh
            .par_iter()
            .map(|&(i, base)| seal_chunk(blobs, &ids[i], &chunks[i], base, level))
            .collect::<Result<_>>()?;
        for (&(i, _), (kind, s)) in fresh.iter().zip(&sealed) {
            self.add_sealed(*kind, ids[i], s, chunks[i].len())?;
        }
        self.parts.entry(part).or_default().chunks += ids.len() as u64;
        for id in ids {
            self.push_id(part, 0, id)?;
        }
        Ok(())
    }

    fn add_sealed(&mut self, kind: BlobKind, id: Id, sealed: &[u8], raw_len: usize) -> Result<()> {
        self.new_blobs += 1;
        self.pack.add(kind, id, sealed, raw_len as u32);
        if self.pack.len() >= self.ctx.pack_target {
            self.flush_pack()?;
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
            let (kind, sealed) = seal_chunk(self.blobs(), &id, &bytes, base, self.ctx.level)?;
            let kind = if kind == BlobKind::Data {
                BlobKind::List
            } else {
                kind
            };
            self.add_sealed(kind, id, &sealed, bytes.len())?;
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

    fn flush_pack(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let next = PackBuilder::with_capacity(self.ctx.pack_target + (1 << 20));
        let full = std::mem::replace(&mut self.pack, next);
        self.to_writer
            .send(full)
            .map_err(|_| Error::Invalid("the pack writer stopped".into()))
    }
}

fn write_index(
    backend: &dyn Backend,
    keys: &Keys,
    packs: &mut Vec<(Id, Vec<PackEntry>)>,
) -> Result<u64> {
    if packs.is_empty() {
        return Ok(0);
    }
    let (id, bytes) = encode_file(keys, packs)?;
    backend.create(&index_path(&id), &bytes)?;
    packs.clear();
    Ok(bytes.len() as u64)
}

fn run_writer(rx: Receiver<PackBuilder>, backend: &dyn Backend, keys: &Keys) -> Result<(u64, u64)> {
    let mut written = Vec::new();
    let (mut bytes, mut packs) = (0u64, 0u64);
    for pb in rx {
        let (id, data, entries) = pb.finish(keys)?;
        backend.create(&pack_path(&id), &data)?;
        bytes += data.len() as u64;
        packs += 1;
        written.push((id, entries));
        if written.len() >= PACKS_PER_INDEX {
            bytes += write_index(backend, keys, &mut written)?;
        }
    }
    bytes += write_index(backend, keys, &mut written)?;
    Ok((bytes, packs))
}

#[cfg(test)]
mod tests {
    use super::AlignedHasher;

    #[test]
    fn aligned_hasher_equals_plain_blake3() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for sizes in [
            &[1usize, 1000, 70_000, 5][..],
            &[65_536, 3],
            &[200_000],
            &[0, 7, 13],
        ] {
            let mut h = AlignedHasher::default();
            let mut off = 0;
            for &n in sizes.iter().cycle().take(1000) {
                let end = (off + n).min(data.len());
                h.update(&data[off..end]);
                off = end;
                if off == data.len() {
                    break;
                }
            }
            h.update(&data[off..]);
            assert_eq!(h.finalize(), blake3::hash(&data));
        }
    }
}
