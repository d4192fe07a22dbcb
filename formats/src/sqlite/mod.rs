//! SQLite databases: online backup into a consistent copy, row counts, atomic restore of a
//! whole file, and restore of one table (with its indexes and triggers) into a live
//! database or as SQL text.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{FormatError, Result};
use names::quote_ident;
use plan::{find_table, plan_table};

pub mod export;
pub mod health;
mod names;
mod plan;
pub mod remote;
pub mod replace;
pub mod snapshot;
pub mod sql;
pub mod verify;
pub mod watch;

/// Chunk size for a database file: one page, so a page rewritten in place or moved by
/// VACUUM costs one chunk. The SQLite churn bench (`benches/benches/sqlite_churn.rs`)
/// measured it against content-defined 64 KiB chunks and 16/64 KiB fixed chunks: over 8
/// nights one-page chunks stored 6.5 MB, 64 KiB CDC 22.6 MB, 16 KiB fixed 29.9 MB (VACUUM
/// nights dominate). Very large files double the chunk until there are at most 4 Mi chunks,
/// keeping the index near 200 MiB.
pub fn chunk_size(page_size: u32, file_size: u64) -> u32 {
    let mut chunk = page_size.max(512);
    while file_size / u64::from(chunk) > 4 << 20 && chunk < 1 << 20 {
        chunk *= 2;
    }
    chunk
}

/// A consistent copy of a database, taken through the online backup API.
pub struct OnlineCopy {
    /// The copy (deleted on drop).
    pub file: tempfile::NamedTempFile,
    /// Size in bytes.
    pub size: u64,
    /// What is in it.
    pub info: DbInfo,
}

/// Tables and row counts of a database.
#[derive(Clone, Debug, Default)]
pub struct DbInfo {
    /// Page size.
    pub page_size: u32,
    /// Row count of every table (views excluded).
    pub tables: BTreeMap<String, u64>,
    /// SQLite library version.
    pub sqlite_version: String,
    /// The database's own foreign-key violations, per `"table -> parent"`.
    pub foreign_keys: BTreeMap<String, health::FkViolations>,
    /// `PRAGMA integrity_check`'s complaints (at most 100, as SQLite gives them; empty
    /// when it says `ok`).
    pub integrity: Vec<String>,
}

fn open_existing(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(FormatError::io(
            path.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such database file"),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let c = Connection::open_with_flags(path, flags)
        .map_err(|e| FormatError::sqlite(path.display().to_string(), e))?;
    c.busy_timeout(Duration::from_secs(30))
        .map_err(|e| FormatError::sqlite("busy_timeout", e))?;
    Ok(c)
}

fn not_sqlite(path: &Path, e: rusqlite::Error) -> FormatError {
    let msg = e.to_string();
    if msg.contains("not a database") || msg.contains("file is encrypted") {
        FormatError::NotSqlite(path.display().to_string())
    } else {
        FormatError::sqlite(path.display().to_string(), e)
    }
}

/// Copies a live database through the backup API. All pages are copied in one step under
/// one read transaction, so the copy is one consistent state even while an application
/// commits (WAL mode: writers go on; rollback mode: they wait for the copy).
///
/// # Errors
/// A missing file, a non-SQLite file, or SQLite errors (busy for over two minutes).
pub fn online_copy(src_path: &Path, tmp_dir: &Path) -> Result<OnlineCopy> {
    let src = open_existing(src_path)?;
    let file = tempfile::Builder::new()
        .prefix(".dbvault-sqlite-")
        .tempfile_in(tmp_dir)
        .map_err(|e| FormatError::io(tmp_dir.display().to_string(), e))?;
    let mut dst =
        Connection::open(file.path()).map_err(|e| FormatError::sqlite("temporary copy", e))?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(|e| not_sqlite(src_path, e))?;
        let started = Instant::now();
        loop {
            match backup.step(-1).map_err(|e| not_sqlite(src_path, e))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if started.elapsed() > Duration::from_secs(120) {
                        return Err(FormatError::Sqlite {
                            context: src_path.display().to_string(),
                            message: "the database stayed locked for 2 minutes".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    drop(dst);
    let info = inspect(file.path())?;
    let size = std::fs::metadata(file.path())
        .map_err(|e| FormatError::io("temporary copy", e))?
        .len();
    Ok(OnlineCopy { file, size, info })
}

/// Page size, tables and row counts of a database file.
///
/// # Errors
/// A non-SQLite file or SQLite errors.
pub fn inspect(path: &Path) -> Result<DbInfo> {
    let c = open_existing(path)?;
    let err = |e| not_sqlite(path, e);
    let page_size: u32 = c
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(err)?;
    let names: Vec<String> = {
        let mut st = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)?
    };
    let mut tables = BTreeMap::new();
    for n in names {
        let count: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM {}", quote_ident(&n)),
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        tables.insert(n, count as u64);
    }
    Ok(DbInfo {
        page_size,
        tables,
        sqlite_version: rusqlite::version().to_string(),
        foreign_keys: health::foreign_key_violations(&c, path)?,
        integrity: health::integrity_problems(&c, path)?,
    })
}

/// `PRAGMA integrity_check`'s complaints about a database file.
///
/// # Errors
/// SQLite errors (not problems in the data: those are returned).
pub fn check(path: &Path) -> Result<Vec<String>> {
    let c = open_existing(path)?;
    health::integrity_problems(&c, path)
}

/// Writes a new database file at `target` atomically: `fill` writes a temp file beside it,
/// which is fsynced and must pass `integrity_check` before it is renamed into place, but
/// for the complaints in `accepted` (those the source itself had at backup: the bytes are
/// the backup's, verified, and refusing them would leave nothing to restore); `None`
/// skips the check (for a caller that makes its own). An existing `target` is refused
/// unless `force`, and then replaced through SQLite ([`replace`]; refused while another
/// process has it open unless `while_open`). Returns the accepted complaints the file has.
///
/// # Errors
/// [`FormatError::TargetExists`], [`FormatError::Integrity`], a target in use, I/O or
/// `fill`'s errors.
pub fn write_new_file(
    target: &Path,
    force: bool,
    while_open: bool,
    accepted: Option<&[String]>,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<Vec<String>> {
    if target.exists() && !force {
        return Err(FormatError::TargetExists(target.display().to_string()));
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ioe = |e| FormatError::io(target.display().to_string(), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".dbvault-restore-")
        .tempfile_in(&dir)
        .map_err(ioe)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(ioe)?;
    let mut known = Vec::new();
    if let Some(accepted) = accepted {
        for p in check(tmp.path())? {
            if accepted.contains(&p) {
                known.push(p);
            } else if !p.starts_with("foreign key") {
                return Err(FormatError::Integrity(p));
            }
        }
    }
    if force && target.exists() {
        replace::replace(target, tmp.path(), while_open)?;
        return Ok(known);
    } else if force {
        tmp.persist(target).map_err(|e| ioe(e.error))?;
    } else {
        // persist_noclobber: a file that appeared meanwhile is still never replaced.
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                FormatError::TargetExists(target.display().to_string())
            } else {
                ioe(e.error)
            }
        })?;
    }
    File::open(&dir).and_then(|d| d.sync_all()).map_err(ioe)?;
    Ok(known)
}

/// Restores one table of the snapshot database `snap` into the database `target` (created
/// if missing), with its indexes and triggers, under `new_name` if given, in one
/// transaction. An existing table of that name is an error unless `clean`, which replaces it.
///
/// # Errors
/// [`FormatError::NoSuchTable`], [`FormatError::TableExists`], SQLite errors (the
/// transaction is rolled back: the target is unchanged).
pub fn restore_table(
    snap: &Path,
    target: &Path,
    table: &str,
    new_name: Option<&str>,
    clean: bool,
) -> Result<u64> {
    let mut c = Connection::open(target)
        .map_err(|e| FormatError::sqlite(target.display().to_string(), e))?;
    c.busy_timeout(Duration::from_secs(30))
        .map_err(|e| FormatError::sqlite("busy_timeout", e))?;
    // The rows come back as they were backed up, as `sqlite3 .dump` loads them: a
    // database's own foreign-key violations (common: SQLite does not enforce keys unless
    // asked) must not stop the restore of the table.
    c.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(|e| FormatError::sqlite("foreign_keys", e))?;
    c.execute(
        "ATTACH DATABASE ?1 AS dbvault_snap",
        [snap.to_string_lossy()],
    )
    .map_err(|e| FormatError::sqlite("opening the snapshot copy", e))?;
    let plan = plan_table(&c, "dbvault_snap", table, new_name)?;
    let source = find_table(&c, "dbvault_snap", table)?
        .map(|(n, _)| n)
        .unwrap_or_default();
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| FormatError::sqlite(target.display().to_string(), e))?;
    if find_table(&tx, "main", &plan.name)?.is_some() {
        if !clean {
            return Err(FormatError::TableExists {
                table: format!("{:?}", plan.name),
                target: target.display().to_string(),
            });
        }
        tx.execute_batch(&format!("DROP TABLE main.{}", quote_ident(&plan.name)))
            .map_err(|e| FormatError::sqlite(format!("dropping {}", plan.name), e))?;
    }
    tx.execute_batch(&plan.create)
        .map_err(|e| FormatError::sqlite(format!("creating table: {}", plan.create), e))?;
    let cols = plan.columns.join(", ");
    let (ins_cols, sel_cols) = if plan.rowid {
        (format!("rowid, {cols}"), format!("rowid, {cols}"))
    } else {
        (cols.clone(), cols)
    };
    let copy = format!(
        "INSERT INTO main.{} ({ins_cols}) SELECT {sel_cols} FROM dbvault_snap.{}",
        quote_ident(&plan.name),
        quote_ident(&source)
    );
    let rows = tx
        .execute(&copy, [])
        .map_err(|e| FormatError::sqlite(format!("copying rows: {copy}"), e))?;
    for sql in &plan.extras {
        tx.execute_batch(sql)
            .map_err(|e| FormatError::sqlite(format!("creating {sql}"), e))?;
    }
    tx.commit().map_err(|e| FormatError::sqlite("commit", e))?;
    c.execute("DETACH DATABASE dbvault_snap", [])
        .map_err(|e| FormatError::sqlite("detach", e))?;
    Ok(rows as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_is_a_page_until_the_file_is_huge() {
        assert_eq!(chunk_size(4096, 1 << 30), 4096);
        assert_eq!(chunk_size(65536, 1 << 20), 65536);
        assert_eq!(chunk_size(4096, 64 << 30), 16384);
    }
}
