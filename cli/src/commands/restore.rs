//! `dbvault restore`: picks the snapshot and the target, then calls the restore of
//! `dbvault_jobs::restore` (a base backup: `physical`).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::postgres::PgSource;
use dbvault_jobs::restore::{restore, Destination, Request};

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
    let (id, snap) =
        super::pick_snapshot(&repo, &a.snapshot, &a.filter(), a.target_time.as_deref())?;
    let format = SnapshotFormat::of(&snap)?;
    if format == SnapshotFormat::PgPhysical {
        let url = match tgt {
            Target::Stdout => None,
            Target::Postgres(u) => Some(u),
            Target::Sqlite(_) => bail!("a physical snapshot restores --to pgdata:DIR, or single tables --to postgres://… or --to -"),
        };
        return super::physical::restore_tables(cli, &repo, &id, &snap, a, url);
    }
    if a.target_lsn.is_some()
        || a.target_xid.is_some()
        || a.target_name.is_some()
        || a.target_action.is_some()
        || a.before_xid.is_some()
        || a.before_lsn.is_some()
    {
        bail!("--target-lsn, --target-xid, --target-name, --target-action, --before-xid and --before-lsn recover a physical snapshot (restore it --to pgdata:DIR, or one table --table NAME --to postgres://…)");
    }
    // A selective or filtered snapshot says so before anyone takes it for the whole database.
    for n in &snap.source.notes {
        eprintln!("dbvault: note: snapshot {}: {n}", id.short());
    }
    let mut stdout = BufWriter::with_capacity(1 << 20, raw_stdout()?);
    let pg;
    let dest = match tgt {
        Target::Stdout => Destination::Stream(&mut stdout),
        Target::Sqlite(p) => Destination::SqliteFile(p),
        Target::Postgres(url) => {
            pg = PgSource::parse(url)?;
            crate::output::warn_url_password(&pg);
            Destination::Postgres(&pg)
        }
    };
    let req = Request {
        pg: a.pg_options(),
        database: a.database.clone(),
        force: a.force,
        while_open: a.while_open,
        entries: a
            .list_file
            .as_ref()
            .map(|f| -> Result<_> {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--list-file {}: {e}", f.display()))?;
                Ok(dbvault_formats::postgres::entries::parse_list(&text)?)
            })
            .transpose()?,
    };
    restore(&repo, &id, &snap, &req, dest, &crate::output::print_notice)?;
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
