//! The backup pipeline.
//!
//! ```text
//! caller thread(s)     worker thread (rayon inside)                    writer thread
//! read + chunk   -->   ids, part hash, dedup, delta or zstd, seal  -->  create pack, then
//!                      chunk-list tree, pack                             index files
//!        bounded channel (2 batches)          rendezvous (1 pack)
//! ```
//! Bounded channels give back-pressure: memory stays at a few batches and two packs
//! whatever the stream size. `add_part` may be called from several threads at once (one
//! per table); parts are recorded in the order `add_part` was called.
//!
//! Write order: packs, then the index files naming them (every 64 packs and at the end),
//! then, in [`Backup::finish`], the snapshot. A crash leaves only unreferenced data.

use std::io::Read;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::chunker::{self, ChunkerParams};
use crate::snapshot::{Part, Snapshot, SourceInfo};
use crate::worker::{run_worker, Job, WorkerCtx, WorkerOut};
use crate::{Error, Id, Repository, Result};

pub use crate::input::{Chunking, PartInput};
pub use crate::worker::{LIST_AVG, LIST_MAX};

/// Chunk bytes handed to the pack worker at a time, on an object store. With one batch
/// queued, one being filled and one being sealed (plus its sealed copy), about 4 of these
/// are in memory.
const BATCH_BYTES: usize = 1 << 20;
/// The same on a local disk, where a backup's memory has more room (no upload buffers, no
/// S3 client): fewer hand-overs between the reading thread, the pack worker and the pool
/// (a scale-10 first backup 3.2-3.4 s with 1 MiB, 3.16-3.22 s with 4 MiB; the work's
/// resident memory 32 and 41 MiB, under the key derivation's peak either way).
const LOCAL_BATCH_BYTES: usize = 4 << 20;

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

/// A backup in progress. Dropping it without [`Backup::finish`] records no snapshot.
pub struct Backup<'r> {
    repo: &'r Repository,
    tx: Option<SyncSender<Job>>,
    /// Its error, if any, is in `failure`.
    worker: Option<JoinHandle<std::result::Result<WorkerOut, ()>>>,
    failure: Arc<Mutex<Option<Error>>>,
    next_part: AtomicU32,
    progress: Arc<AtomicU64>,
    started: Instant,
    /// Prepended to the names of parts added from now on (e.g. `shop/` when one snapshot
    /// holds several databases).
    prefix: Mutex<String>,
}

impl Repository {
    /// Starts a backup: loads the index (for dedup) and starts the pipeline threads. The
    /// handle must hold a lock ([`Repository::lock`]).
    ///
    /// # Errors
    /// [`Error::NotLocked`]; a damaged or unreadable index.
    pub fn start_backup(&self) -> Result<Backup<'_>> {
        self.start_backup_after(None)
    }

    /// Starts a backup whose changed chunks may be stored as deltas against the chunks
    /// of `parent` (the previous snapshot of the same source).
    ///
    /// # Errors
    /// [`Error::NotLocked`]; a damaged or unreadable index.
    pub fn start_backup_after(&self, parent: Option<&Snapshot>) -> Result<Backup<'_>> {
        self.start_backup_at(parent, self.config().compression)
    }

    /// [`Repository::start_backup_after`] with zstd `level` instead of the repository's
    /// (WAL compresses much better at 6 than at 1, and is written once).
    ///
    /// # Errors
    /// As [`Repository::start_backup_after`].
    pub fn start_backup_at(&self, parent: Option<&Snapshot>, level: i32) -> Result<Backup<'_>> {
        // Fail now, not after reading the whole source.
        self.ensure_lock(crate::lock::LockKind::Shared, "a backup")?;
        let index = self.index()?;
        let (tx, rx) = sync_channel(1);
        let failure = Arc::new(Mutex::new(None));
        let ctx = WorkerCtx {
            lock: self.lock_handle("a backup")?,
            keys: self.keys().clone(),
            backend: self.backend().clone(),
            index,
            level,
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
                let r = run_worker(&rx, ctx);
                r.map_err(|e| {
                    // The cause, whole, for whoever asks first: a producer whose send
                    // failed, or `join`. Stored before the channel closes, so a producer
                    // woken by the closing finds it.
                    *f2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    drop(rx);
                })
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
            prefix: Mutex::new(String::new()),
        })
    }
}

impl Backup<'_> {
    /// Prefixes the names of the parts added from now on (`shop/` gives `shop/pre-data`).
    pub fn set_part_prefix(&self, prefix: &str) {
        *self.prefix.lock().unwrap_or_else(|p| p.into_inner()) = prefix.to_string();
    }

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
        let params: ChunkerParams = self.repo.config().chunker;
        let gear = self.repo.keys().gear();
        self.add_chunks_then(
            name,
            |take| {
                match chunking {
                    Chunking::Lines(p) => {
                        for c in chunker::LineChunks::new(reader, p, gear) {
                            take(c.map_err(Error::Source)?)?;
                        }
                    }
                    Chunking::ContentDefined => {
                        for c in chunker::chunks(reader, params, gear.clone()) {
                            take(
                                c.map_err(|e| match e {
                                    fastcdc::v2020::Error::IoError(e) => Error::Source(e),
                                    other => {
                                        Error::Source(std::io::Error::other(format!("{other:?}")))
                                    }
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
                Ok(())
            },
            describe,
        )
    }

    /// Adds a part whose chunks are already cut: `produce` hands them, in order, to the
    /// function it is given (`copy` keeps the boundaries of the repository it reads). The
    /// part's chunking in `describe`'s answer is ignored.
    ///
    /// # Errors
    /// `produce`'s errors as they are; pipeline (storage) errors.
    pub fn add_chunks_then(
        &self,
        name: &str,
        produce: impl FnOnce(&mut (dyn FnMut(Vec<u8>) -> Result<()> + Send)) -> Result<()>,
        describe: impl FnOnce() -> PartInput,
    ) -> Result<u64> {
        let part = self.next_part.fetch_add(1, Ordering::Relaxed);
        let full_name = format!(
            "{}{name}",
            self.prefix.lock().unwrap_or_else(|p| p.into_inner())
        );
        self.send(Job::Begin {
            part,
            name: full_name.clone(),
        })?;
        let mut size = 0u64;
        let mut batch = Vec::new();
        let limit = if self.repo.backend().remote() {
            BATCH_BYTES
        } else {
            LOCAL_BATCH_BYTES
        };
        let mut batch_bytes = 0usize;
        let mut take = |data: Vec<u8>| -> Result<()> {
            size += data.len() as u64;
            self.progress
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            batch_bytes += data.len();
            batch.push(data);
            if batch_bytes >= limit {
                self.send(Job::Chunks {
                    part,
                    chunks: std::mem::take(&mut batch),
                })?;
                batch_bytes = 0;
            }
            Ok(())
        };
        produce(&mut take)?;
        if !batch.is_empty() {
            self.send(Job::Chunks {
                part,
                chunks: batch,
            })?;
        }
        let mut input = describe();
        // `describe` may name the part better than `name` could before its bytes were read
        // (a pg_dump table whose header comment mangled its name).
        input.name = if input.name.is_empty() || input.name == name {
            full_name
        } else {
            format!(
                "{}{}",
                self.prefix.lock().unwrap_or_else(|p| p.into_inner()),
                input.name
            )
        };
        self.send(Job::EndPart { part, input, size })?;
        Ok(size)
    }

    fn join(&mut self) -> Result<WorkerOut> {
        drop(self.tx.take());
        let w = self
            .worker
            .take()
            .ok_or_else(|| Error::Invalid("backup already finished".into()))?;
        match w.join() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(())) => Err(self
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| Error::Invalid("the backup pipeline stopped".into()))),
            Err(_) => Err(Error::Invalid("the backup pipeline panicked".into())),
        }
    }

    /// Waits for every pack and index file, then writes the snapshot.
    ///
    /// # Errors
    /// Pipeline (storage) errors; then no snapshot is written.
    pub fn finish(self, meta: SnapshotMeta) -> Result<BackupSummary> {
        self.finish_with(meta, |_| {})
    }

    /// As [`Backup::finish`], with `adjust` given the manifest before it is sealed (a copy
    /// keeps the original's host, program and time taken, and names its origin).
    pub(crate) fn finish_with(
        mut self,
        meta: SnapshotMeta,
        adjust: impl FnOnce(&mut Snapshot),
    ) -> Result<BackupSummary> {
        let (parts, out) = self.finish_parts()?;
        let parent = self.repo.predecessor(&meta.name)?;
        let mut snapshot = Snapshot {
            version: 1,
            parent,
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
            copied_from: None,
            repaired_from: None,
        };
        snapshot.seconds = (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        adjust(&mut snapshot);
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

    /// Waits for every pack and index file; returns the parts in order, without writing a
    /// snapshot (a file record names them instead).
    ///
    /// # Errors
    /// Pipeline (storage) errors.
    pub(crate) fn finish_parts(&mut self) -> Result<(Vec<Part>, WorkerOut)> {
        let out = self.join();
        // New index files exist now (even after a failure): later reads must see them.
        self.repo.invalidate_index();
        let mut out = out?;
        let mut parts = std::mem::take(&mut out.parts);
        parts.sort_by_key(|(n, _)| *n);
        Ok((parts.into_iter().map(|(_, p)| p).collect(), out))
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
