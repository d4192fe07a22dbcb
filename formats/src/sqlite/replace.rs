//! Restoring over an existing database file (`--force`), through SQLite rather than around
//! it.
//!
//! Renaming a new file over an SQLite database is not a restore: the `-wal` beside it
//! (committed frames of a migration that crashed, or of an application still running) is
//! replayed over the renamed file the next time anything opens it, and the new file has
//! the restoring user's owner and mode, so the application may not open it at all. So:
//! - A database another process has open (its file, `-wal` or `-shm` among the process's
//!   open files) is refused, naming the process, unless the caller says to restore while
//!   it is open.
//! - Into a file that is an SQLite database, the verified copy is written with SQLite's
//!   backup API: under the destination's own locks, through its journal or WAL, into the
//!   same inode (owner, group and mode stay), then the WAL is checkpointed and truncated.
//!   Whatever the old `-wal` held is overwritten by the restored pages, never replayed
//!   over them.
//! - Into a file that is not a database, the copy is renamed into place with the old
//!   file's owner, group and mode, and stale `-wal`, `-shm` and `-journal` files beside it
//!   are removed first (SQLite would replay a stale WAL over a new file: it does not tie a
//!   WAL to its database).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{FormatError, Result};

/// The database's companion files.
fn companions(target: &Path) -> [PathBuf; 3] {
    let with = |s: &str| {
        let mut p = target.as_os_str().to_owned();
        p.push(s);
        PathBuf::from(p)
    };
    [with("-wal"), with("-shm"), with("-journal")]
}

/// Processes other than this one that have `target` (or its `-wal`, `-shm`, `-journal`)
/// open: (pid, command name). Only the processes this user may look at are seen.
pub fn holders(target: &Path) -> Vec<(u32, String)> {
    let mut files: Vec<PathBuf> = vec![target.to_path_buf()];
    files.extend(companions(target));
    let files: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let open = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|l| files.contains(&l));
        if open {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// Replaces the database at `target` (which exists) with the verified database file
/// `restored` (see the module docs). `while_open`: go ahead although other processes have
/// it open (through SQLite's locks, waiting for them up to a minute).
///
/// # Errors
/// [`FormatError::InUse`]-like refusal naming the processes; SQLite's errors (busy past
/// the wait: the target is then unchanged, SQLite's transaction rolled back); I/O errors.
pub fn replace(target: &Path, restored: &Path, while_open: bool) -> Result<()> {
    let users = holders(target);
    if !users.is_empty() && !while_open {
        let list: Vec<String> = users
            .iter()
            .map(|(p, c)| format!("{c} (pid {p})"))
            .collect();
        return Err(FormatError::Invalid(format!(
            "{} is open in {}: stop it first, or give --while-open to restore into it through SQLite's locks (the application then sees the restored data)",
            target.display(),
            list.join(", ")
        )));
    }
    if is_database(target) {
        return through_sqlite(target, restored);
    }
    around(target, restored)
}

/// Whether `target` opens as an SQLite database.
fn is_database(target: &Path) -> bool {
    Connection::open_with_flags(target, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)))
        .is_ok()
}

/// The backup API from `restored` into the live file, then a checkpoint.
fn through_sqlite(target: &Path, restored: &Path) -> Result<()> {
    let sq = |e| FormatError::sqlite(target.display().to_string(), e);
    // Read-write, though only read: our own temp file, whose -wal and -shm (it may be a
    // WAL database) are removed as the last connection closes.
    let src = Connection::open_with_flags(
        restored,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq)?;
    let mut dst = Connection::open_with_flags(
        target,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq)?;
    dst.busy_timeout(Duration::from_secs(60)).map_err(sq)?;
    {
        use rusqlite::backup::StepResult;
        let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(sq)?;
        // Every page in one step, under one write transaction of the destination: the
        // busy timeout covers waiting for its lock.
        match b.step(-1).map_err(sq)? {
            StepResult::Done => {}
            other => {
                return Err(FormatError::Invalid(format!(
                    "{}: the database stayed locked by another connection ({other:?}); nothing was changed",
                    target.display()
                )))
            }
        }
    }
    let mode: String = dst
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sq)?;
    if mode.eq_ignore_ascii_case("wal") {
        // The restore is committed (in the WAL) already; folding it into the file waits
        // for readers still in a transaction, so only briefly: one that outlasts this sees
        // the restored data when its transaction ends, and the next checkpoint folds it.
        dst.busy_timeout(Duration::from_secs(2)).map_err(sq)?;
        dst.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sq)?;
    }
    dst.close().map_err(|(_, e)| sq(e))?;
    drop(src);
    for c in companions(restored) {
        let _ = std::fs::remove_file(c);
    }
    Ok(())
}

/// The copy renamed over a file that is not a database, with its owner and mode.
fn around(target: &Path, restored: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |e| FormatError::io(target.display().to_string(), e);
    let old = std::fs::metadata(target).map_err(io)?;
    let _ = std::os::unix::fs::chown(restored, Some(old.uid()), Some(old.gid()));
    std::fs::set_permissions(restored, old.permissions()).map_err(io)?;
    for c in companions(target) {
        match std::fs::remove_file(&c) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FormatError::io(c.display().to_string(), e)),
        }
    }
    std::fs::rename(restored, target).map_err(io)?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}
