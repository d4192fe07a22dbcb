//! `dbvault restore`: picks the snapshot and the target, then calls the format's restore.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::postgres::{self, restore_server, PgSource};
use dbvault_formats::read::stream_part;
use dbvault_formats::sqlite::snapshot as sqlite;

use crate::args::{Cli, RestoreArgs};
use crate::repo_access;

enum Target<'a> {
    Stdout,
    Sqlite(&'a Path),
    Postgres(&'a str),
}

fn target(to: &str) -> Result<Target<'_>> {
    if to == "-" {
        return Ok(Target::Stdout);
    }
    if let Some(p) = to.strip_prefix("sqlite:") {
        if p.is_empty() {
            bail!("sqlite: needs a path, e.g. --to sqlite:/tmp/restored.db");
        }
        return Ok(Target::Sqlite(Path::new(p)));
    }
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        return Ok(Target::Postgres(to));
    }
    bail!("unknown restore target {to:?}: use - (stdout), postgres://… or sqlite:PATH")
}

/// The database URL a target names (`None`: stdout; an SQLite file is refused).
fn tgt_url(t: &Target<'_>) -> Option<Option<String>> {
    match t {
        Target::Stdout => Some(None),
        Target::Postgres(u) => Some(Some((*u).to_string())),
        Target::Sqlite(_) => None,
    }
}

/// The database a PostgreSQL snapshot goes into (`None`: a script on stdout).
fn pg_source(tgt: &Target<'_>) -> Result<Option<PgSource>> {
    match tgt {
        Target::Stdout => Ok(None),
        Target::Postgres(url) => {
            let pg = PgSource::parse(url)?;
            crate::output::warn_url_password(&pg);
            Ok(Some(pg))
        }
        Target::Sqlite(_) => {
            bail!("a PostgreSQL snapshot restores --to postgres://… or --to -, not into an SQLite file")
        }
    }
}

fn pg_target<'a>(
    stdout: &'a mut (dyn Write + Send),
    pg: Option<&'a PgSource>,
) -> postgres::Target<'a> {
    match pg {
        Some(db) => postgres::Target::Database(db),
        None => postgres::Target::Script(stdout),
    }
}

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<()> {
    if let Some(dir) = a.to.strip_prefix("pgdata:") {
        return super::physical::restore(cli, a, Path::new(dir));
    }
    let tgt = target(&a.to)?;
    if (a.schema_only || a.data_only) && a.to.starts_with("sqlite:") {
        bail!("--schema-only and --data-only are for PostgreSQL snapshots");
    }
    if a.rename_table.is_some() && a.tables.len() != 1 {
        bail!("--rename-table needs exactly one --table");
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore")?;
    let (id, snap) = super::pick_snapshot(
        &repo,
        &a.snapshot,
        a.name.as_deref(),
        a.target_time.as_deref(),
    )?;
    let format = SnapshotFormat::of(&snap)?;
    if format == SnapshotFormat::PgPhysical {
        return super::physical::restore_tables(&repo, &id, &snap, a, &tgt_url(&tgt));
    }
    if a.target_lsn.is_some()
        || a.target_xid.is_some()
        || a.target_name.is_some()
        || a.target_action.is_some()
    {
        bail!("--target-lsn, --target-xid, --target-name and --target-action recover a physical snapshot (restore it --to pgdata:DIR, or one table --table NAME --to postgres://…)");
    }
    // A selective or filtered snapshot says so before anyone takes it for the whole database.
    for n in &snap.source.notes {
        eprintln!("dbvault: note: snapshot {}: {n}", id.short());
    }
    let notify = &crate::output::print_notice;
    let mut stdout = BufWriter::with_capacity(1 << 20, raw_stdout()?);
    if snap.source.kind == postgres::server::KIND {
        let Some(db) = &a.database else {
            let names: Vec<String> = restore_server::databases(&snap)?.into_keys().collect();
            bail!(
                "snapshot {} holds every database of a server ({}): choose one with --database NAME",
                id.short(),
                names.join(", ")
            );
        };
        let pg = pg_source(&tgt)?;
        let target = pg_target(&mut stdout, pg.as_ref());
        restore_server::restore_database_of_server(
            &repo,
            &id,
            &snap,
            db,
            &a.pg_options(),
            target,
            notify,
        )?;
        return Ok(stdout.flush()?);
    }
    if let Some(d) = &a.database {
        bail!(
            "--database {d:?}: snapshot {} is of one database, not of a whole server",
            id.short()
        );
    }
    match format {
        SnapshotFormat::Sqlite => {
            let target = match tgt {
                Target::Stdout => sqlite::Target::Stream(&mut stdout),
                Target::Sqlite(path) => sqlite::Target::File(path),
                Target::Postgres(_) if a.tables.is_empty() => {
                    bail!("this is an SQLite snapshot: restore it --to sqlite:PATH or --to -")
                }
                Target::Postgres(_) => bail!(
                    "this is an SQLite snapshot: restore its tables --to sqlite:PATH or --to -"
                ),
            };
            let opts = sqlite::RestoreOptions {
                tables: a.tables.clone(),
                rename_table: a.rename_table.clone(),
                clean: a.clean,
                force: a.force,
                while_open: a.while_open,
            };
            sqlite::restore(&repo, &snap, &opts, target, notify)?;
        }
        SnapshotFormat::PgDump => {
            let pg = pg_source(&tgt)?;
            let target = pg_target(&mut stdout, pg.as_ref());
            postgres::restore(&repo, &snap, &a.pg_options(), target, notify)?;
        }
        SnapshotFormat::Raw | SnapshotFormat::PgPhysical => {
            if let Some(t) = a.tables.first() {
                bail!(
                    "snapshot {} has no table {t:?}: it is a raw stream from {}, with no tables",
                    id.short(),
                    snap.source.kind
                );
            }
            if !matches!(tgt, Target::Stdout) {
                // (a raw stream has no database to restore into)
                bail!(
                    "snapshot {} is a raw stream: restore it with --to -",
                    id.short()
                );
            }
            for part in &snap.parts {
                stream_part(&repo, part, &mut stdout, notify)?;
            }
        }
    }
    Ok(stdout.flush()?)
}

/// Standard output without std's line buffering in front: the restore writes megabytes at
/// a time, and `Stdout` would copy the bytes after each last newline into its own buffer.
fn raw_stdout() -> Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        std::io::stdout().as_fd().try_clone_to_owned()?,
    ))
}
