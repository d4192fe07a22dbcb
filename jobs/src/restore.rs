//! Restoring a logical snapshot of any kind to any target: a PostgreSQL database (or one
//! database of a whole-server snapshot), an SQLite file, or a stream (a script, the
//! database file, the archive or the raw bytes). Routed by [`SnapshotFormat`]; a base
//! backup is recovered by `dbvault_formats::postgres::physical` instead.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::notice::Notify;
use dbvault_formats::postgres::{self, restore_server, PgSource};
use dbvault_formats::read::stream_part;
use dbvault_formats::sqlite::snapshot as sqlite;

/// Where a restore goes.
pub enum Destination<'a> {
    /// A stream: a PostgreSQL snapshot's script (or archive), an SQLite database's file
    /// (or its tables as SQL), a raw stream's bytes.
    Stream(&'a mut (dyn Write + Send)),
    /// An SQLite database file (new, or with tables the one they go into).
    SqliteFile(&'a Path),
    /// A PostgreSQL database.
    Postgres(&'a PgSource),
}

/// What to restore: PostgreSQL's options (tables, renames, schema or data only, clean,
/// create, jobs) serve SQLite's too where they mean the same.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The PostgreSQL restore's options; `tables`, `rename_table` and `clean` also select
    /// an SQLite snapshot's tables.
    pub pg: postgres::RestoreOptions,
    /// The database of a whole-server snapshot.
    pub database: Option<String>,
    /// Replace an existing SQLite database file.
    pub force: bool,
    /// With `force`: although other processes have it open.
    pub while_open: bool,
    /// Only these archive entries of a PostgreSQL snapshot (`restore --list-file`; see
    /// `dbvault_formats::postgres::entries`).
    pub entries: Option<std::collections::BTreeSet<u32>>,
}

/// Restores the logical snapshot `snap` (`id`) as `req` says into `dest`.
///
/// # Errors
/// A destination the snapshot's kind cannot go to, a physical snapshot, options that do
/// not apply, and the format's own restore errors.
pub fn restore(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    req: &Request,
    dest: Destination<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    let format = SnapshotFormat::of(snap)?;
    // A whole restore reads about every part once; a table's, an unknown share.
    let total = req
        .pg
        .tables
        .is_empty()
        .then(|| snap.parts.iter().map(|p| p.size).sum::<u64>());
    let _all = repo.overall_task(
        &format!("restoring {} ({})", id.short(), snap.name),
        total,
        dbvault_core::progress::Unit::Bytes,
    );
    if snap.source.kind == postgres::server::KIND {
        let Some(db) = &req.database else {
            let names: Vec<String> = restore_server::databases(snap)?.into_keys().collect();
            bail!(
                "snapshot {} holds every database of a server ({}): choose one with --database NAME",
                id.short(),
                names.join(", ")
            );
        };
        let target = pg_target(dest)?;
        restore_server::restore_database_of_server(repo, id, snap, db, &req.pg, target, notify)?;
        return Ok(());
    }
    if req.entries.is_some() && format != SnapshotFormat::PgDump {
        bail!(
            "--list-file chooses entries of a PostgreSQL logical snapshot; snapshot {} is not one",
            id.short()
        );
    }
    if let Some(d) = &req.database {
        bail!(
            "--database {d:?}: snapshot {} is of one database, not of a whole server",
            id.short()
        );
    }
    match format {
        SnapshotFormat::Sqlite => {
            if req.pg.schema_only || req.pg.data_only {
                bail!("--schema-only and --data-only are for PostgreSQL snapshots");
            }
            let target = match dest {
                Destination::Stream(out) => sqlite::Target::Stream(out),
                Destination::SqliteFile(path) => sqlite::Target::File(path),
                Destination::Postgres(_) if req.pg.tables.is_empty() => {
                    bail!("this is an SQLite snapshot: restore it --to sqlite:PATH or --to -")
                }
                Destination::Postgres(_) => bail!(
                    "this is an SQLite snapshot: restore its tables --to sqlite:PATH or --to -"
                ),
            };
            let opts = sqlite::RestoreOptions {
                tables: req.pg.tables.clone(),
                rename_table: req.pg.rename_table.clone(),
                clean: req.pg.clean,
                force: req.force,
                while_open: req.while_open,
            };
            sqlite::restore(repo, snap, &opts, target, notify)?;
        }
        SnapshotFormat::PgDump => match &req.entries {
            Some(chosen) => postgres::entries::restore_entries(repo, snap, chosen, pg_target(dest)?, notify)?,
            None => postgres::restore(repo, snap, &req.pg, pg_target(dest)?, notify)?,
        },
        SnapshotFormat::PgPhysical => bail!(
            "snapshot {} is a base backup: recover it --to pgdata:DIR, or single tables as of a time with --table NAME",
            id.short()
        ),
        SnapshotFormat::Raw => {
            if let Some(t) = req.pg.tables.first() {
                bail!(
                    "snapshot {} has no table {t:?}: it is a raw stream from {}, with no tables",
                    id.short(),
                    snap.source.kind
                );
            }
            let Destination::Stream(out) = dest else {
                bail!(
                    "snapshot {} is a raw stream: restore it with --to -",
                    id.short()
                );
            };
            for part in &snap.parts {
                stream_part(repo, part, out, notify)?;
            }
        }
    }
    Ok(())
}

/// The PostgreSQL target a destination is.
fn pg_target(dest: Destination<'_>) -> Result<postgres::Target<'_>> {
    match dest {
        Destination::Stream(out) => Ok(postgres::Target::Script(out)),
        Destination::Postgres(db) => Ok(postgres::Target::Database(db)),
        Destination::SqliteFile(_) => bail!(
            "a PostgreSQL snapshot restores --to postgres://… or --to -, not into an SQLite file"
        ),
    }
}
