//! SQLite snapshots: the database file as one part (page-sized chunks), what that part
//! records, and restoring it: the file, one table into a database, or a table as SQL.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use dbvault_core::backup::{Backup, Chunking, PartInput};
use dbvault_core::{Part, Repository, Snapshot, SourceInfo};
use serde::{Deserialize, Serialize};

use super::{chunk_size, restore_table, sql, write_new_file, DbInfo, OnlineCopy};
use crate::error::{FormatError, Result};
use crate::notice::{Notice, Notify};
use crate::read::stream_part;

/// Part kind of the database file.
pub const PART_KIND: &str = "sqlite-db";
/// The format name of SQLite snapshots in manifests (`SourceInfo::format`).
pub const FORMAT: &str = "sqlite";

/// What the database part records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePart {
    /// Every table's row count.
    #[serde(default)]
    pub tables: BTreeMap<String, u64>,
    /// Page size.
    #[serde(default)]
    pub page_size: u32,
    /// The source's own foreign-key violations at backup, per `"table -> parent"` (absent
    /// in snapshots made before dbvault recorded them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_key_violations: Option<BTreeMap<String, u64>>,
    /// The source's own `PRAGMA integrity_check` complaints at backup (empty: `ok`; absent
    /// in snapshots made before dbvault recorded them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_problems: Option<Vec<String>>,
}

impl DatabasePart {
    /// The part meta that records it.
    pub fn to_meta(&self) -> BTreeMap<String, serde_json::Value> {
        crate::partmeta::to_meta(self)
    }

    /// What a part recorded.
    ///
    /// # Errors
    /// The record does not read as this type (a newer dbvault wrote it).
    pub fn of(part: &dbvault_core::Part) -> crate::error::Result<DatabasePart> {
        crate::partmeta::from_meta(part, "database")
    }
}

/// The source description of an SQLite snapshot.
pub fn source(identity: String, info: &DbInfo) -> SourceInfo {
    let mut notes = Vec::new();
    if !info.integrity.is_empty() {
        notes.push(format!(
            "the database failed PRAGMA integrity_check at backup ({}): it was stored as it was",
            super::health::integrity_summary(&info.integrity)
        ));
    }
    SourceInfo {
        kind: "sqlite".into(),
        identity,
        format: FORMAT.into(),
        server_version: Some(format!("SQLite {}", info.sqlite_version)),
        notes,
    }
}

/// Adds a consistent copy of a database to `b` as its one part.
///
/// # Errors
/// Read and storage errors.
pub fn backup_copy(b: &Backup<'_>, copy: &OnlineCopy) -> Result<()> {
    let input = PartInput {
        name: "database".into(),
        kind: PART_KIND.into(),
        rows: Some(copy.info.tables.values().sum()),
        meta: DatabasePart {
            tables: copy.info.tables.clone(),
            page_size: copy.info.page_size,
            foreign_key_violations: Some(super::health::counts(&copy.info.foreign_keys)),
            integrity_problems: Some(copy.info.integrity.clone()),
        }
        .to_meta(),
        chunking: Chunking::Fixed(chunk_size(copy.info.page_size, copy.size)),
    };
    let file = std::fs::File::open(copy.file.path())
        .map_err(|e| FormatError::io(copy.file.path().display().to_string(), e))?;
    b.add_part(input, std::io::BufReader::with_capacity(1 << 20, file))?;
    Ok(())
}

/// The database part of a snapshot.
///
/// # Errors
/// [`FormatError::Invalid`] when there is none.
pub fn database_part(snap: &Snapshot) -> Result<&Part> {
    snap.parts
        .iter()
        .find(|p| p.kind == PART_KIND)
        .ok_or_else(|| FormatError::Invalid("the snapshot has no database part".into()))
}

/// How to restore an SQLite snapshot.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Only these tables, into an existing database (or as SQL).
    pub tables: Vec<String>,
    /// Restore the one table under this name.
    pub rename_table: Option<String>,
    /// Replace an existing table of the same name.
    pub clean: bool,
    /// Replace an existing database file.
    pub force: bool,
    /// With `force`: replace it although other processes have it open (through SQLite's
    /// locks).
    pub while_open: bool,
}

/// Where an SQLite restore goes.
#[non_exhaustive]
pub enum Target<'a> {
    /// The file's bytes, or with tables the tables as SQL for `sqlite3`.
    Stream(&'a mut (dyn Write + Send)),
    /// A new database file (with tables: the existing database they go into).
    File(&'a Path),
}

/// Restores an SQLite snapshot.
///
/// # Errors
/// A table not in the snapshot (checked before any data is read), an existing file or
/// table, damage and storage errors.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    target: Target<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    let part = database_part(snap)?;
    if opts.rename_table.is_some() && opts.tables.len() != 1 {
        return Err(FormatError::Invalid(
            "--rename-table needs exactly one --table".into(),
        ));
    }
    if opts.tables.is_empty() {
        return match target {
            Target::Stream(out) => {
                let mut out = BufWriter::with_capacity(1 << 20, out);
                stream_part(repo, part, &mut out, notify)?;
                Ok(out.flush()?)
            }
            Target::File(path) => {
                let accepted = DatabasePart::of(part)?
                    .integrity_problems
                    .unwrap_or_default();
                let known =
                    write_new_file(path, opts.force, opts.while_open, Some(&accepted), |f| {
                        stream_part(repo, part, f, notify)
                    })?;
                if !known.is_empty() {
                    notify(Notice::Done(format!(
                        "warning: the restored database fails integrity_check as the source did at backup ({})",
                        super::health::integrity_summary(&known)
                    )));
                }
                notify(Notice::Done(format!(
                    "restored {} to {}",
                    snap.name,
                    path.display()
                )));
                Ok(())
            }
        };
    }
    // Check the names before reading any data: a missing table is the common 3 a.m. typo.
    // `ls` shows a newline in a name as `\n`: that spelling names it too.
    let recorded = DatabasePart::of(part)?;
    let mut tables = Vec::new();
    for t in &opts.tables {
        let known = |n: &str| recorded.tables.keys().any(|x| x.eq_ignore_ascii_case(n));
        let plain = crate::names::undisplay(t);
        if known(t) {
            tables.push(t.clone());
        } else if known(&plain) {
            tables.push(plain);
        } else {
            return Err(FormatError::NoSuchTable {
                table: crate::names::display(t),
                available: recorded
                    .tables
                    .keys()
                    .map(|n| crate::names::display(n))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".dbvault-snap-")
        .tempfile_in(std::env::temp_dir())
        .map_err(|e| FormatError::io("a temporary file", e))?;
    stream_part(repo, part, &mut tmp.as_file(), notify)?;
    let mut target = target;
    for t in &tables {
        match &mut target {
            Target::Stream(out) => {
                let mut out = BufWriter::with_capacity(1 << 20, &mut **out);
                sql::table_as_sql(tmp.path(), t, opts.rename_table.as_deref(), &mut out)?;
            }
            Target::File(path) => {
                let rows = restore_table(
                    tmp.path(),
                    path,
                    t,
                    opts.rename_table.as_deref(),
                    opts.clean,
                )?;
                notify(Notice::Done(format!(
                    "restored table {} ({rows} rows) into {} as {}",
                    crate::names::display(t),
                    path.display(),
                    crate::names::display(opts.rename_table.as_deref().unwrap_or(t))
                )));
            }
        }
    }
    Ok(())
}
