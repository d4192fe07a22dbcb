//! Noticing that a live database changed, for continuous backups: `PRAGMA data_version`
//! on a connection of our own moves whenever another connection commits (WAL or rollback
//! journal, `VACUUM` included), and a file replaced under the same path (a restored or
//! moved-in database) is noticed by its inode. The connection holds no transaction between
//! polls, so it blocks neither writers nor checkpoints.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{FormatError, Result};

/// Watches one database file.
pub struct ChangeWatch {
    path: PathBuf,
    conn: Connection,
    version: i64,
    inode: (u64, u64),
}

fn inode(path: &Path) -> Result<(u64, u64)> {
    let m = std::fs::metadata(path).map_err(|e| FormatError::io(path.display().to_string(), e))?;
    Ok((m.dev(), m.ino()))
}

fn version(c: &Connection, path: &Path) -> Result<i64> {
    c.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(|e| super::not_sqlite(path, e))
}

impl ChangeWatch {
    /// Starts watching `path`.
    ///
    /// # Errors
    /// A missing or non-SQLite file.
    pub fn open(path: &Path) -> Result<ChangeWatch> {
        let conn = super::open_existing(path)?;
        let version = version(&conn, path)?;
        Ok(ChangeWatch {
            path: path.to_path_buf(),
            conn,
            version,
            inode: inode(path)?,
        })
    }

    /// True when the database changed since the last call (or since it was opened).
    ///
    /// # Errors
    /// The file vanished or stopped being a database.
    pub fn changed(&mut self) -> Result<bool> {
        let now = inode(&self.path)?;
        if now != self.inode {
            *self = ChangeWatch::open(&self.path)?;
            return Ok(true);
        }
        let v = version(&self.conn, &self.path)?;
        let changed = v != self.version;
        self.version = v;
        Ok(changed)
    }
}
