//! `backup postgres://… --physical` and `restore SNAPSHOT --to pgdata:DIR [--target-…]`:
//! base backups and point-in-time recovery (the work is in
//! `dbvault_formats::postgres::physical`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use dbvault_core::backup::{BackupSummary, SnapshotMeta};
use dbvault_core::lock::LockKind;
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::{self, backup::PhysicalOptions, restore};
use dbvault_formats::postgres::PgSource;

use super::backup::Job;
use crate::args::{Cli, RestoreArgs};
use crate::output::Progress;
use crate::{output, repo_access};

/// The default source name of physical backups and their WAL.
const DEFAULT_NAME: &str = "postgres";

/// Takes a base backup of the cluster at `url`.
pub fn backup(
    cli: &Cli,
    repo: &Repository,
    a: &Job,
    url: &str,
    time: chrono::DateTime<chrono::FixedOffset>,
) -> Result<BackupSummary> {
    if !a.selection.is_whole() || a.enable_row_security {
        bail!("--physical copies the whole cluster: selections and --enable-row-security are for logical backups");
    }
    let pg = PgSource::parse(url)?;
    let name = a.name.clone().unwrap_or_else(|| DEFAULT_NAME.into());
    let b = super::backup::start(repo, &name)?;
    let progress = Progress::start(
        &format!("base backup of {}", pg.describe()),
        b.progress(),
        cli.json,
    );
    let opts = PhysicalOptions {
        wal_source: name.clone(),
        wal_wait: a.physical.unwrap_or(std::time::Duration::from_secs(300)),
    };
    let r = physical::backup::backup(&b, repo, &pg, &opts);
    progress.finish();
    match r {
        Ok((source, _)) => Ok(b.finish(SnapshotMeta {
            time,
            name,
            tags: a.tags.clone(),
            source,
        })?),
        Err(e) => {
            b.abort();
            Err(anyhow::Error::from(e).context(format!(
                "base backup of {}: no snapshot recorded",
                pg.describe()
            )))
        }
    }
}

/// A word for the shell, quoted.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `restore_command` the recovering server runs: this dbvault, this repository, the
/// passphrase from a file (never the passphrase itself).
fn restore_command(cli: &Cli, source: &str) -> Result<String> {
    let exe = std::env::current_exe().context("where is this dbvault")?;
    let Some(repo) = &cli.repo else {
        bail!("give --repo (or DBVAULT_REPO): the recovering server's restore_command names it");
    };
    let Some(pw) = &cli.password_file else {
        bail!("the recovering server reads the passphrase from a file: give --password-file (or DBVAULT_PASSWORD_FILE); a passphrase in the environment is not written into its settings");
    };
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let repo = if repo.contains("://") {
        repo.clone()
    } else {
        abs(Path::new(repo)).display().to_string()
    };
    let mut words = vec![
        sh_quote(&exe.display().to_string()),
        "--repo".into(),
        sh_quote(&repo),
        "--password-file".into(),
        sh_quote(&abs(pw).display().to_string()),
    ];
    let endpoint = cli
        .s3_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    if repo.starts_with("s3://") {
        if let Some(e) = endpoint {
            words.extend(["--s3-endpoint".into(), sh_quote(&e)]);
        }
        if let Some(r) = &cli.s3_region {
            words.extend(["--s3-region".into(), sh_quote(r)]);
        }
        if cli.s3_path_style {
            words.push("--s3-path-style".into());
        }
    }
    words.extend([
        "wal-fetch".into(),
        "--name".into(),
        sh_quote(source),
        "%f".into(),
        "%p".into(),
    ]);
    Ok(words.join(" "))
}

/// Restores a physical snapshot into a data directory, ready to recover.
pub fn restore(cli: &Cli, a: &RestoreArgs, dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        bail!("pgdata: needs a directory, e.g. --to pgdata:/var/lib/postgresql/15/restored");
    }
    if !a.tables.is_empty() || a.database.is_some() || a.schema_only || a.data_only {
        bail!("--to pgdata:DIR restores the whole cluster (--table, --database, --schema-only and --data-only are for logical snapshots)");
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore")?;
    // `latest` with a target time: the newest base backup taken before it.
    let (id, snap) = match (&a.target_time, a.snapshot.as_str()) {
        (Some(t), "latest") => repo.find_at(a.name.as_deref(), output::parse_time(t)?)?,
        _ => repo.find_snapshot(&a.snapshot, a.name.as_deref())?,
    };
    if snap.source.format != physical::FORMAT {
        bail!(
            "snapshot {} is a logical backup ({}): --to pgdata: takes a physical one (`backup --physical`)",
            id.short(),
            snap.source.format
        );
    }
    let part = snap.part(physical::PART).context("no base.tar")?;
    let info = physical::BaseBackup::of(part);
    let target = restore::RecoveryTarget {
        time: a.target_time.as_deref().map(recovery_time).transpose()?,
        lsn: a.target_lsn.clone(),
        xid: a.target_xid.clone(),
        name: a.target_name.clone(),
        action: a.target_action.clone(),
    };
    let o = restore::PgdataOptions {
        dir,
        force: a.force,
        restore_command: restore_command(cli, &info.wal_source)?,
        target,
    };
    physical::restore::restore_pgdata(&repo, &snap, &o, &super::restore::print_notice)?;
    eprintln!(
        "dbvault: base backup {} ({}, WAL from {}) restored into {}; start the server on it to recover{}",
        id.short(),
        output::time(&snap.time),
        info.start_wal,
        dir.display(),
        match (&a.target_time, &a.target_lsn, &a.target_xid, &a.target_name) {
            (Some(t), ..) => format!(" to {t}"),
            (_, Some(l), ..) => format!(" to LSN {l}"),
            (_, _, Some(x), _) => format!(" to transaction {x}"),
            (.., Some(n)) => format!(" to restore point {n}"),
            _ => " to the end of the archive".into(),
        }
    );
    Ok(())
}

/// A time PostgreSQL reads unambiguously: with its zone, as RFC 3339 gives it.
fn recovery_time(t: &str) -> Result<String> {
    Ok(output::parse_time(t)?
        .format("%Y-%m-%d %H:%M:%S%.6f%:z")
        .to_string())
}
