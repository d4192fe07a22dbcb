//! A base backup read from the data directory itself, on the database host
//! (`backup --physical --pgdata DIR`): `pg_backup_start` (non-exclusive, on a session held
//! for the whole copy), the files read two at a time in parallel and written as the same
//! tar stream pg_basebackup would send (so storage, restore and dedup against earlier base
//! backups are the same either way), then `pg_backup_stop`, whose `backup_label` and
//! `tablespace_map` end the stream. What pg_basebackup leaves out is left out here too
//! (pg_wal's contents, temporary and runtime files).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::error::{FormatError, Result};
use crate::postgres::conn::{rows, runtime, PgSource};

/// Directories whose contents are not backed up (pg_basebackup's list).
const EMPTY_DIRS: [&str; 8] = [
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];
/// Files never backed up.
const SKIP_FILES: [&str; 7] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
];
/// Bytes a reader thread hands over at a time.
const PIECE: usize = 1 << 20;

/// What the stream's end says: the start and stop of the backup.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// `pg_backup_stop`'s LSN.
    pub stop_lsn: String,
}

struct Entry {
    rel: String,
    path: PathBuf,
    dir: bool,
    mode: u32,
    mtime: u64,
}

fn io(p: &Path, e: std::io::Error) -> FormatError {
    FormatError::io(p.display().to_string(), e)
}

/// Every entry to back up, in order: directories before their contents, `global/pg_control`
/// last (as pg_basebackup sends it).
fn walk(root: &Path) -> Result<Vec<Entry>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let mut control = None;
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(std::result::Result::ok)
            .collect();
        names.sort_by_key(std::fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let md = std::fs::symlink_metadata(e.path()).map_err(|x| io(&e.path(), x))?;
            if md.file_type().is_symlink() {
                return Err(FormatError::Invalid(format!(
                    "{r} is a symbolic link (a tablespace or a linked pg_wal): physical backups of clusters with tablespaces are not supported yet"
                )));
            }
            if SKIP_FILES.contains(&name.as_str()) || name.starts_with("pgsql_tmp") {
                continue;
            }
            let entry = Entry {
                rel: r.clone(),
                path: e.path(),
                dir: md.is_dir(),
                mode: md.permissions().mode() & 0o7777,
                mtime: md.mtime().max(0) as u64,
            };
            if r == "global/pg_control" {
                control = Some(entry);
                continue;
            }
            let skip_contents = entry.dir && rel.is_empty() && EMPTY_DIRS.contains(&name.as_str());
            if entry.dir && !skip_contents {
                subdirs.push((e.path(), r.clone()));
            }
            out.push(entry);
            if skip_contents && name == "pg_wal" {
                // PostgreSQL wants it there when it starts.
                let md = std::fs::metadata(e.path().join("archive_status"));
                if let Ok(md) = md {
                    out.push(Entry {
                        rel: format!("{r}/archive_status"),
                        path: e.path().join("archive_status"),
                        dir: true,
                        mode: md.permissions().mode() & 0o7777,
                        mtime: md.mtime().max(0) as u64,
                    });
                }
            }
        }
        // Depth first, in name order.
        for s in subdirs.into_iter().rev() {
            stack.push(s);
        }
    }
    out.extend(control);
    Ok(out)
}

/// A ustar header for `e` (or a file named `rel` of `size` bytes).
fn header(rel: &str, dir: bool, mode: u32, size: u64, mtime: u64) -> Result<Vec<u8>> {
    let mut h = vec![0u8; 512];
    let name = if dir {
        format!("{rel}/")
    } else {
        rel.to_string()
    };
    let (prefix, base) = if name.len() <= 100 {
        ("", name.as_str())
    } else {
        let cut = name[..name.len().min(156)]
            .rfind('/')
            .filter(|&i| name.len() - i - 1 <= 100)
            .ok_or_else(|| {
                FormatError::Invalid(format!("{rel}: path too long for a tar header"))
            })?;
        (&name[..cut], &name[cut + 1..])
    };
    h[..base.len()].copy_from_slice(base.as_bytes());
    let octal = |h: &mut [u8], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, mtime);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..273].copy_from_slice(b"postgres");
    h[297..305].copy_from_slice(b"postgres");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Reads the stream the producer sends.
pub struct Pipe {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What a reader thread hands over for a file: its size when opened, then its bytes.
enum Piece {
    Size(u64),
    Data(Vec<u8>),
    End,
}

/// One file, read by a reader thread: its size at the moment it is opened (files grow
/// during the copy: `pg_xact` must hold the pages zeroed before the backup started), then
/// exactly that many bytes (a file that shrank while read is padded with zeros, one that
/// grew is cut: WAL replay mends both, as for pg_basebackup).
fn read_file(e: &Entry, out: &SyncSender<Result<Piece>>) {
    use std::os::unix::fs::MetadataExt;
    let (mut f, size) = match std::fs::File::open(&e.path).and_then(|f| {
        let size = f.metadata()?.size();
        Ok((f, size))
    }) {
        Ok(x) => x,
        // Dropped since the walk (a dropped table): PostgreSQL does not need it.
        Err(x) if x.kind() == std::io::ErrorKind::NotFound => {
            let _ = out.send(Ok(Piece::Size(0)));
            let _ = out.send(Ok(Piece::End));
            return;
        }
        Err(x) => {
            let _ = out.send(Err(io(&e.path, x)));
            return;
        }
    };
    if out.send(Ok(Piece::Size(size))).is_err() {
        return;
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        let mut b = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match f.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(x) if x.kind() == std::io::ErrorKind::Interrupted => {}
                Err(x) => {
                    let _ = out.send(Err(io(&e.path, x)));
                    return;
                }
            }
        }
        if out.send(Ok(Piece::Data(b))).is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = out.send(Ok(Piece::End));
}

/// Starts the backup on the server and the producer; returns the stream to read and the
/// producer, which ends the backup and says where it stopped.
///
/// # Errors
/// Connecting, `pg_backup_start` (the role needs `pg_backup_start` rights, or superuser),
/// an unreadable data directory.
pub fn start(
    src: &PgSource,
    pgdata: &Path,
) -> Result<(Pipe, std::thread::JoinHandle<Result<Stopped>>)> {
    let rt = runtime()?;
    let client = src.connect(&rt)?;
    let version: u32 = rows(&rt, &client, "SHOW server_version_num")?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (start_fn, stop_fn) = if version >= 150_000 {
        (
            "SELECT pg_backup_start('dbvault', true)",
            "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup('dbvault', true, false)",
            "SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)",
        )
    };
    let data_dir = rows(&rt, &client, "SHOW data_directory")?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    let same = std::fs::canonicalize(pgdata).ok() == std::fs::canonicalize(&data_dir).ok();
    if !same {
        return Err(FormatError::Invalid(format!(
            "--pgdata {} is not this server's data directory ({data_dir})",
            pgdata.display()
        )));
    }
    // Readable before the server is asked to start: an error then leaves nothing to end.
    std::fs::read_dir(pgdata).map_err(|e| io(pgdata, e))?;
    rows(&rt, &client, start_fn)?;
    let root = pgdata.to_path_buf();
    let (tx, rx) = sync_channel::<Vec<u8>>(8);
    let producer = std::thread::spawn(move || -> Result<Stopped> {
        // Listed after the start: files created since are in, and each file's size is
        // taken when it is read.
        let sent = walk(&root).and_then(|entries| produce(&entries, &tx));
        // Always end the backup on the server, even when copying failed.
        let stopped = rows(&rt, &client, stop_fn);
        sent?;
        let row = stopped?.into_iter().next().unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (lsn, label, map) = (get(0), get(1), get(2));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, text) in [("backup_label", label), ("tablespace_map", map)] {
            let mut b = header(name, false, 0o600, text.len() as u64, now)?;
            b.extend_from_slice(text.as_bytes());
            b.resize(b.len().div_ceil(512) * 512, 0);
            if tx.send(b).is_err() {
                return Err(FormatError::Invalid("the backup stopped reading".into()));
            }
        }
        let _ = tx.send(vec![0u8; 1024]);
        Ok(Stopped { stop_lsn: lsn })
    });
    Ok((
        Pipe {
            rx,
            buf: Vec::new(),
            at: 0,
        },
        producer,
    ))
}

/// Writes every entry as tar, the files read two at a time by reader threads.
fn produce(entries: &[Entry], tx: &SyncSender<Vec<u8>>) -> Result<()> {
    let stopped = || FormatError::Invalid("the backup stopped reading".into());
    let files: Vec<&Entry> = entries.iter().filter(|e| !e.dir).collect();
    std::thread::scope(|scope| -> Result<()> {
        // Reader k reads files k, k+2, …, each into a channel of its own, in order.
        let mut readers = Vec::new();
        for k in 0..2 {
            let (ftx, frx) = sync_channel::<Result<Piece>>(4);
            let mine: Vec<&Entry> = files.iter().skip(k).step_by(2).copied().collect();
            scope.spawn(move || {
                for e in mine {
                    read_file(e, &ftx);
                }
            });
            readers.push(frx);
        }
        let mut nth = 0usize;
        for e in entries {
            if e.dir {
                tx.send(header(&e.rel, true, e.mode, 0, e.mtime)?)
                    .map_err(|_| stopped())?;
                continue;
            }
            let rx = &readers[nth % 2];
            nth += 1;
            let Piece::Size(size) = rx.recv().map_err(|_| stopped())?? else {
                return Err(FormatError::Invalid("a reader lost its place".into()));
            };
            tx.send(header(&e.rel, false, e.mode, size, e.mtime)?)
                .map_err(|_| stopped())?;
            loop {
                match rx.recv().map_err(|_| stopped())?? {
                    Piece::Data(b) => tx.send(b).map_err(|_| stopped())?,
                    Piece::End => break,
                    Piece::Size(_) => {
                        return Err(FormatError::Invalid("a reader lost its place".into()))
                    }
                }
            }
            let pad = (512 - (size % 512) as usize) % 512;
            if pad > 0 {
                tx.send(vec![0u8; pad]).map_err(|_| stopped())?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_ustar_that_the_chunker_reads() {
        let mut tar = header("base/5/1259", false, 0o600, 3, 1_700_000_000).expect("h");
        tar.extend_from_slice(b"abc");
        tar.resize(1024, 0);
        tar.extend(header("pg_wal", true, 0o700, 0, 1_700_000_000).expect("h"));
        tar.extend(vec![0u8; 1024]);
        let mut t = super::super::tar::TarChunks::new(&tar[..]);
        let mut n = 0;
        while t.next_chunk().expect("chunk").is_some() {
            n += 1;
        }
        assert!(t.ended && t.members == 2 && n > 4);
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let h = header(&long, false, 0o600, 0, 0).expect("long");
        assert_eq!(&h[345..465], "d".repeat(120).as_bytes());
    }
}
