//! SQL on an SQLite snapshot without restoring it: a read-only SQLite VFS whose one file is
//! the snapshot's database part, read page by page from the repository on demand. The part
//! is cut into fixed-size chunks, so byte `o` is in chunk `o / chunk size`; each chunk read
//! is authenticated and checked like any other, and a bounded cache keeps the recent ones,
//! so a query reads only the pages it touches (a primary-key lookup: a handful).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dbvault_core::blobs::{chunk_ids, Blobs};
use dbvault_core::{Id, Part, Repository};
use rusqlite::{Connection, OpenFlags};
use sqlite_vfs::{DatabaseHandle, LockKind, OpenKind, OpenOptions, Vfs, WalDisabled};

use crate::error::{FormatError, Result};

/// Decrypted chunks kept (at 4 KiB pages, 1 MiB; at the 1 MiB chunks of huge files, 256 MiB
/// at most, never more than 64 MiB in practice: see `CACHE_BYTES`).
const CACHE_CHUNKS: usize = 256;
/// Bytes of decrypted chunks kept.
const CACHE_BYTES: usize = 32 << 20;

/// The name the VFS is registered under (once per process).
const VFS: &str = "dbvault-snapshot";

/// How much a query read from the repository.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reads {
    /// Chunks read from the repository (cache misses).
    pub chunks: u64,
    /// Their stored (sealed) bytes.
    pub bytes: u64,
}

/// A snapshot's database part, readable at any offset.
struct Pages {
    backend: Arc<dyn dbvault_core::backend::Backend>,
    keys: dbvault_core::crypto::Keys,
    index: Arc<dbvault_core::index::Index>,
    ids: Vec<Id>,
    chunk: u64,
    size: u64,
    cache: Mutex<(HashMap<u64, Arc<Vec<u8>>>, VecDeque<u64>, usize)>,
    chunks_read: AtomicU64,
    bytes_read: AtomicU64,
}

impl Pages {
    fn chunk_at(&self, i: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.0.get(&i).cloned()) {
            return Ok(c);
        }
        let id = self.ids.get(i as usize).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end")
        })?;
        let blobs = Blobs {
            backend: self.backend.as_ref(),
            keys: &self.keys,
            index: &self.index,
        };
        let data = Arc::new(blobs.read(id).map_err(std::io::Error::other)?);
        self.chunks_read.fetch_add(1, Ordering::Relaxed);
        let sealed = self.index.get(id).map_or(0, |l| u64::from(l.len));
        self.bytes_read.fetch_add(sealed, Ordering::Relaxed);
        if let Ok(mut c) = self.cache.lock() {
            let (map, order, bytes) = &mut *c;
            *bytes += data.len();
            map.insert(i, data.clone());
            order.push_back(i);
            while order.len() > CACHE_CHUNKS || *bytes > CACHE_BYTES {
                let Some(old) = order.pop_front() else { break };
                if let Some(d) = map.remove(&old) {
                    *bytes -= d.len();
                }
            }
        }
        Ok(data)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            if at >= self.size {
                buf[done..].fill(0);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the database",
                ));
            }
            let c = self.chunk_at(at / self.chunk)?;
            let start = (at % self.chunk) as usize;
            let n = (c.len() - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&c[start..start + n]);
            done += n;
        }
        Ok(())
    }
}

struct SnapVfs(Arc<Mutex<Option<Arc<Pages>>>>);

struct Handle {
    pages: Arc<Pages>,
    lock: LockKind,
}

fn read_only() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "a snapshot is read-only",
    )
}

impl DatabaseHandle for Handle {
    type WalIndex = WalDisabled;

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.pages.size)
    }
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.pages.read_at(buf, offset)
    }
    fn write_all_at(&mut self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(read_only())
    }
    fn sync(&mut self, _data_only: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn set_len(&mut self, _size: u64) -> std::io::Result<()> {
        Err(read_only())
    }
    fn lock(&mut self, lock: LockKind) -> std::io::Result<bool> {
        // Nothing else can write a snapshot: every lock is granted.
        self.lock = lock;
        Ok(true)
    }
    fn reserved(&mut self) -> std::io::Result<bool> {
        Ok(false)
    }
    fn current_lock(&self) -> std::io::Result<LockKind> {
        Ok(self.lock)
    }
    fn wal_index(&self, _readonly: bool) -> std::io::Result<WalDisabled> {
        Ok(WalDisabled)
    }
}

impl Vfs for SnapVfs {
    type Handle = Handle;

    fn open(&self, _db: &str, opts: OpenOptions) -> std::io::Result<Handle> {
        if opts.kind != OpenKind::MainDb {
            return Err(read_only());
        }
        let pages = self
            .0
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or_else(|| std::io::Error::other("no snapshot opened"))?;
        Ok(Handle {
            pages,
            lock: LockKind::None,
        })
    }
    fn delete(&self, _db: &str) -> std::io::Result<()> {
        Err(read_only())
    }
    fn exists(&self, db: &str) -> std::io::Result<bool> {
        Ok(!db.ends_with("-journal") && !db.ends_with("-wal"))
    }
    fn temporary_name(&self) -> String {
        "dbvault-snapshot-temp".into()
    }
    fn random(&self, buffer: &mut [i8]) {
        let mut b = vec![0u8; buffer.len()];
        let _ = dbvault_core::crypto::fill_random(&mut b);
        for (d, s) in buffer.iter_mut().zip(b) {
            *d = s as i8;
        }
    }
    fn sleep(&self, duration: std::time::Duration) -> std::time::Duration {
        std::thread::sleep(duration);
        duration
    }
}

/// The one registration per process, and the snapshot it serves.
fn registered() -> Result<Arc<Mutex<Option<Arc<Pages>>>>> {
    static SLOT: std::sync::OnceLock<std::result::Result<Arc<Mutex<Option<Arc<Pages>>>>, String>> =
        std::sync::OnceLock::new();
    SLOT.get_or_init(|| {
        let slot = Arc::new(Mutex::new(None));
        sqlite_vfs::register(VFS, SnapVfs(slot.clone()), false)
            .map(|()| slot)
            .map_err(|e| format!("{e:?}"))
    })
    .clone()
    .map_err(|e| FormatError::Invalid(format!("cannot register the snapshot VFS: {e}")))
}

/// A snapshot's database, open read-only, reading pages from the repository as queries
/// need them.
pub struct SnapshotDb {
    /// The connection.
    pub conn: Connection,
    pages: Arc<Pages>,
}

impl SnapshotDb {
    /// Opens the database part `part`.
    ///
    /// # Errors
    /// Damage or storage errors reading its chunk list; SQLite errors.
    pub fn open(repo: &Repository, part: &Part) -> Result<SnapshotDb> {
        let index = repo.index()?;
        let ids = chunk_ids(
            Blobs {
                backend: repo.backend().as_ref(),
                keys: repo.keys(),
                index: &index,
            },
            part,
        )?;
        // Every chunk but the last is the chunk size: the first one tells it.
        let chunk = ids
            .first()
            .and_then(|id| index.get(id))
            .map_or(4096, |l| u64::from(l.raw_len))
            .max(1);
        let pages = Arc::new(Pages {
            backend: repo.backend().clone(),
            keys: repo.keys().clone(),
            index,
            ids,
            chunk,
            size: part.size,
            cache: Mutex::new((HashMap::new(), VecDeque::new(), 0)),
            chunks_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        });
        let slot = registered()?;
        if let Ok(mut s) = slot.lock() {
            *s = Some(pages.clone());
        }
        let conn = Connection::open_with_flags_and_vfs(
            "file:snapshot.db?immutable=1",
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            VFS,
        )
        .map_err(|e| FormatError::sqlite("the snapshot", e))?;
        conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA query_only = ON;")
            .map_err(|e| FormatError::sqlite("the snapshot", e))?;
        Ok(SnapshotDb { conn, pages })
    }

    /// What queries read from the repository so far.
    pub fn reads(&self) -> Reads {
        Reads {
            chunks: self.pages.chunks_read.load(Ordering::Relaxed),
            bytes: self.pages.bytes_read.load(Ordering::Relaxed),
        }
    }
}

/// One value of a result row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// A blob.
    Blob(Vec<u8>),
}

/// A query's result.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Cell>>,
}

impl SnapshotDb {
    /// Runs one read-only statement.
    ///
    /// # Errors
    /// SQLite errors (a syntax error, a write refused); damage or storage errors reading
    /// pages come back as SQLite I/O errors naming them.
    pub fn query(&self, sql: &str) -> Result<Rows> {
        query(&self.conn, sql)
    }
}

/// Runs one query on `conn`, every row read into memory.
///
/// # Errors
/// SQLite's error for the query, or a page that could not be read.
pub fn query(conn: &Connection, sql: &str) -> Result<Rows> {
    use rusqlite::types::ValueRef;
    let err = |e| FormatError::sqlite("the query", e);
    let mut st = conn.prepare(sql).map_err(err)?;
    let columns: Vec<String> = st.column_names().into_iter().map(str::to_string).collect();
    let n = columns.len();
    let mut rows = st.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(match r.get_ref(i).map_err(err)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Integer(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
            });
        }
        out.push(row);
    }
    Ok(Rows { columns, rows: out })
}
