//! `dbvault restore`

use std::io::BufWriter;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::restore::restore_part;
use dbvault_core::{Part, Repository, Snapshot};
use dbvault_formats::{sqlite, sqlite_sql};

use crate::args::{Cli, RestoreArgs};
use crate::commands::restore_pg::{self, PgTarget};
use crate::pg::PgUrl;
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

fn write_part(repo: &Repository, part: &Part, out: &mut (dyn std::io::Write + Send)) -> Result<()> {
    let report = restore_part(repo, part, out)?;
    for w in report.warnings {
        eprintln!("dbvault: warning: {w}");
    }
    Ok(())
}

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<()> {
    let tgt = target(&a.to)?;
    if (a.schema_only || a.data_only) && a.to.starts_with("sqlite:") {
        bail!("--schema-only and --data-only are for PostgreSQL snapshots");
    }
    if a.rename_table.is_some() && a.tables.len() != 1 {
        bail!("--rename-table needs exactly one --table");
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    if snap.source.kind == dbvault_formats::pgserver::KIND {
        return super::restore_pg_server::restore(&repo, &id, &snap, a);
    }
    if let Some(d) = &a.database {
        bail!(
            "--database {d:?}: snapshot {} is of one database, not of a whole server",
            id.short()
        );
    }
    match snap.source.format.as_str() {
        "sqlite" => restore_sqlite(&repo, &snap, a, tgt),
        "pg_dump" => {
            let target = match tgt {
                Target::Stdout => PgTarget::Stdout,
                Target::Postgres(url) => PgTarget::Database(PgUrl::parse(url)?),
                Target::Sqlite(_) => bail!(
                    "snapshot {} is a PostgreSQL dump: restore it --to postgres://… or --to -",
                    id.short()
                ),
            };
            restore_pg::restore(&repo, &snap, a, target)
        }
        _ => {
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
            let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout());
            for part in &snap.parts {
                write_part(&repo, part, &mut out)?;
            }
            Ok(())
        }
    }
}

fn restore_sqlite(
    repo: &Repository,
    snap: &Snapshot,
    a: &RestoreArgs,
    tgt: Target<'_>,
) -> Result<()> {
    let part = snap
        .parts
        .iter()
        .find(|p| p.kind == "sqlite-db")
        .ok_or_else(|| anyhow!("the snapshot has no database part"))?;
    if a.tables.is_empty() {
        return match tgt {
            Target::Stdout => write_part(
                repo,
                part,
                &mut BufWriter::with_capacity(1 << 20, std::io::stdout()),
            ),
            Target::Postgres(_) => {
                bail!("this is an SQLite snapshot: restore it --to sqlite:PATH or --to -")
            }
            Target::Sqlite(path) => {
                sqlite::write_new_file(path, a.force, |f| {
                    write_part(repo, part, f).map_err(|e| {
                        dbvault_formats::FormatError::Core(dbvault_core::Error::Invalid(format!(
                            "{e:#}"
                        )))
                    })
                })?;
                eprintln!("restored {} to {}", snap.name, path.display());
                Ok(())
            }
        };
    }
    // Check the names before reading any data: a missing table is the common 3 a.m. typo.
    let tables: Vec<String> = part
        .meta
        .get("tables")
        .and_then(|t| t.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for t in &a.tables {
        if !tables.iter().any(|x| x.eq_ignore_ascii_case(t)) {
            bail!(
                "the snapshot has no table {t:?} (it has: {})",
                tables.join(", ")
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".dbvault-snap-")
        .tempfile_in(std::env::temp_dir())
        .context("creating a temporary file")?;
    write_part(repo, part, &mut tmp.as_file())?;
    for t in &a.tables {
        match tgt {
            Target::Postgres(_) => {
                bail!("this is an SQLite snapshot: restore its tables --to sqlite:PATH or --to -")
            }
            Target::Stdout => {
                let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout());
                sqlite_sql::table_as_sql(tmp.path(), t, a.rename_table.as_deref(), &mut out)?;
            }
            Target::Sqlite(path) => {
                let rows =
                    sqlite::restore_table(tmp.path(), path, t, a.rename_table.as_deref(), a.clean)?;
                eprintln!(
                    "restored table {t} ({rows} rows) into {} as {}",
                    path.display(),
                    a.rename_table.as_deref().unwrap_or(t)
                );
            }
        }
    }
    Ok(())
}
