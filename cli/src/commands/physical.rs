//! `restore SNAPSHOT --to pgdata:DIR [--target-…]` and `restore BASE-BACKUP --table …`:
//! point-in-time recovery (the work is `dbvault_jobs::recover`).

use std::path::Path;

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::postgres::PgSource;
use dbvault_jobs::recover::{self, FetchCommand, PgdataRequest, TablesRequest, TablesTo, Target};

use crate::args::{Cli, RestoreArgs};
use crate::{output, repo_access};

/// How a recovering server runs this dbvault: this repository, the passphrase file, the
/// store options.
pub fn fetch_command(cli: &Cli) -> Result<FetchCommand> {
    Ok(FetchCommand {
        program: std::env::current_exe()?,
        repo: cli.repo.clone(),
        password_file: cli.password_file.clone(),
        s3_endpoint: cli.s3_endpoint.clone(),
        s3_region: cli.s3_region.clone(),
        s3_path_style: cli.s3_path_style,
    })
}

fn target(a: &RestoreArgs) -> Target {
    let before = a.before_xid.is_some() || a.before_lsn.is_some();
    Target {
        time: a.target_time.clone(),
        lsn: a.target_lsn.clone().or_else(|| a.before_lsn.clone()),
        xid: a.target_xid.clone().or_else(|| a.before_xid.clone()),
        name: a.target_name.clone(),
        timeline: a.target_timeline.clone(),
        action: a.target_action.clone(),
        inclusive: before.then_some(false),
    }
}

/// Restores a physical snapshot into a data directory, ready to recover.
pub fn restore(cli: &Cli, a: &RestoreArgs, dir: &Path) -> Result<()> {
    if !a.tables.is_empty() || a.database.is_some() || a.schema_only || a.data_only {
        bail!("--to pgdata:DIR restores the whole cluster (--table, --database, --schema-only and --data-only are for logical snapshots)");
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore")?;
    let target = target(a);
    let (id, snap) = recover::pick_base(&repo, &a.snapshot, &a.filter(), &target)?;
    let req = PgdataRequest {
        dir,
        force: a.force,
        target,
        archive_mode: &a.archive_mode,
        fetch: &fetch_command(cli)?,
    };
    let r = recover::restore_pgdata(&repo, &snap, &req, &output::print_notice)?;
    eprintln!(
        "dbvault: base backup {} ({}, WAL from {}) restored into {}; start the server on it to recover {}",
        id.short(),
        output::time(&snap.time),
        r.start_wal,
        dir.display(),
        req.target.describe()
    );
    if let Some(t) = r.timeline {
        eprintln!("dbvault: recovery follows timeline {t} (recovery_target_timeline)");
    }
    if !r.archives {
        eprintln!(
            "dbvault: archiving is off in this copy (archive_mode = off in its postgresql.auto.conf): started, it pushes nothing into the archive of {:?}; if it becomes the primary, run ALTER SYSTEM RESET archive_mode and restart it (or restore with --archive-mode preserve)",
            r.wal_source
        );
    }
    Ok(())
}

/// `restore BASE-BACKUP --table NAME [--target-…] --to postgres://…` (or `--to -`): the
/// tables as they were at the target. `url`: the target database, `None` for stdout.
pub fn restore_tables(
    cli: &Cli,
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    a: &RestoreArgs,
    url: Option<&str>,
) -> Result<()> {
    if a.tables.is_empty() {
        bail!(
            "snapshot {} is a physical base backup: restore the cluster --to pgdata:DIR, or single tables as of a time with --table NAME [--target-time T] --to postgres://…",
            id.short()
        );
    }
    let live = url.map(PgSource::parse).transpose()?;
    if let Some(l) = &live {
        output::warn_url_password(l);
    }
    let database = match (a.database.clone(), live.as_ref().and_then(PgSource::url_database)) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => bail!("say which database of the cluster the table is in: --database NAME (or name it in the --to URL)"),
    };
    let target = target(a);
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let to = match &live {
        Some(db) => TablesTo::Database(db),
        None => TablesTo::Script(&mut stdout),
    };
    let req = TablesRequest {
        target: &target,
        fetch: &fetch_command(cli)?,
        database: &database,
        opts: &a.pg_options(),
    };
    let r = recover::restore_tables(repo, snap, &req, to, &output::print_notice)?;
    std::io::Write::flush(&mut stdout)?;
    eprintln!(
        "dbvault: {} of database {database} restored as of {} from base backup {} ({}) and WAL to {}, in {:.1} s; the throwaway server is gone",
        a.tables.join(", "),
        target.describe().trim_start_matches("to "),
        id.short(),
        output::time(&snap.time),
        r.last_segment.as_deref().unwrap_or("(none)"),
        r.elapsed.as_secs_f64()
    );
    Ok(())
}
