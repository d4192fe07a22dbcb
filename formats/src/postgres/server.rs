//! Whole-server PostgreSQL backups: roles and tablespaces (`pg_dumpall --globals-only`) and
//! every database that accepts connections, in one snapshot. Each database's parts are
//! named `<database>/pre-data`, `<database>/<schema>.<table>`, `<database>/post-data`
//! (each database is read in its own consistent snapshot, as `pg_dumpall` does).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::process::Stdio;

use dbvault_core::backup::{Chunking, PartInput};
use dbvault_core::{Backup, SourceInfo};

use crate::error::{FormatError, Result};
use crate::postgres::backup::{backup, DirectOptions};
use crate::postgres::conn::{rows, runtime, PgSource};
use crate::postgres::dump::SCHEMA_CHUNKS;
use crate::postgres::meta::{FORMAT, GLOBALS};

/// Source kind of a whole-server snapshot.
pub const KIND: &str = "postgres-server";

/// What the globals part of a whole-server snapshot records.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Globals {
    /// Every database backed up, with its owner.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
}

impl Globals {
    /// The part meta that records it.
    pub fn to_meta(&self) -> BTreeMap<String, serde_json::Value> {
        crate::partmeta::to_meta(self)
    }

    /// What a globals part recorded.
    ///
    /// # Errors
    /// The record does not read as this type (a newer dbvault wrote it).
    pub fn of(part: &dbvault_core::Part) -> crate::error::Result<Globals> {
        crate::partmeta::from_meta(part, "globals")
    }
}

/// Backs up the server `src` points at (its database names only where to connect first).
///
/// # Errors
/// Connection, query, `pg_dumpall` or per-database backup failures (no snapshot then).
pub fn backup_server(b: &Backup<'_>, src: &PgSource, opts: &DirectOptions) -> Result<SourceInfo> {
    let rt = runtime()?;
    let c = src.connect(&rt)?;
    let dbs = rows(
        &rt,
        &c,
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database \
         WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    )?;
    let version = rows(&rt, &c, "SHOW server_version")?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten());
    drop(c);
    let out = src
        .tool("pg_dumpall")?
        .arg("--globals-only")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FormatError::io("pg_dumpall (apt-get install postgresql-client)", e))?;
    if !out.status.success() {
        return Err(FormatError::Postgres {
            context: "pg_dumpall --globals-only".into(),
            message: String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
                .to_string(),
            sqlstate: None,
        });
    }
    let databases: BTreeMap<String, String> = dbs
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    let meta = Globals {
        databases: databases.clone(),
    }
    .to_meta();
    b.add_part(
        PartInput {
            chunking: Chunking::Lines(SCHEMA_CHUNKS),
            name: GLOBALS.into(),
            kind: GLOBALS.into(),
            rows: None,
            meta,
        },
        Cursor::new(out.stdout),
    )
    .map_err(FormatError::Core)?;
    for db in databases.keys() {
        b.set_part_prefix(&format!("{db}/"));
        let r = backup(b, &src.for_database(db), opts);
        b.set_part_prefix("");
        r?;
    }
    Ok(SourceInfo {
        kind: KIND.into(),
        identity: src.describe(),
        format: FORMAT.into(),
        server_version: version,
        notes: if opts.enable_row_security {
            vec!["backed up with --enable-row-security: tables with row-level security hold only the rows the backup's role could see".into()]
        } else {
            Vec::new()
        },
    })
}
