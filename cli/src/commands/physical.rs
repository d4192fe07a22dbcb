//! `restore SNAPSHOT --to pgdata:DIR [--target-…]`: point-in-time recovery (the work is in
//! `dbvault_formats::postgres::physical`; base backups are `dbvault_jobs::physical`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::{self, reach, restore};
use dbvault_formats::postgres::PgSource;

use crate::args::{Cli, RestoreArgs};
use crate::{output, repo_access};

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
    let mut words = Vec::new();
    // The recovering server's environment is not this one: a cache directory given here
    // goes along (the prefetched segments live there).
    if let Some(d) = std::env::var_os("DBVAULT_CACHE_DIR").filter(|d| !d.is_empty()) {
        words.extend([
            "env".to_string(),
            sh_quote(&format!("DBVAULT_CACHE_DIR={}", Path::new(&d).display())),
        ]);
    }
    words.extend([
        sh_quote(&exe.display().to_string()),
        "--repo".into(),
        sh_quote(&repo),
        "--password-file".into(),
        sh_quote(&abs(pw).display().to_string()),
    ]);
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

/// The `restore_command` of a throwaway recovery: this dbvault asking the relay.
pub fn relay_command(socket: &Path) -> String {
    let exe = std::env::current_exe()
        .map(|e| e.display().to_string())
        .unwrap_or_else(|_| "dbvault".into());
    format!(
        "{} wal-fetch --relay {} %f %p",
        sh_quote(&exe),
        sh_quote(&socket.display().to_string())
    )
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
    if dbvault_formats::kind::SnapshotFormat::of(&snap)?
        != dbvault_formats::kind::SnapshotFormat::PgPhysical
    {
        bail!(
            "snapshot {} is a logical backup ({}): --to pgdata: takes a physical one (`backup --physical`)",
            id.short(),
            snap.source.format
        );
    }
    let part = snap.part(physical::PART).context("no base.tar")?;
    let info = physical::BaseBackup::of(part)?;
    let archive = restore::ArchiveMode::parse(&a.archive_mode)?;
    let resolved = reach::reachable(&repo, &info, &goal(a)?)?;
    let target = restore::RecoveryTarget {
        time: a.target_time.as_deref().map(recovery_time).transpose()?,
        lsn: a.target_lsn.clone(),
        xid: a.target_xid.clone(),
        name: a.target_name.clone(),
        action: a.target_action.clone(),
        timeline: resolved.setting.clone(),
    };
    let o = restore::PgdataOptions {
        dir,
        force: a.force,
        restore_command: restore_command(cli, &info.wal_source)?,
        target,
        archive,
    };
    physical::restore::restore_pgdata(&repo, &snap, &o, &crate::output::print_notice)?;
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
    if resolved.setting.is_some() {
        eprintln!(
            "dbvault: recovery follows timeline {} (recovery_target_timeline)",
            resolved.timeline
        );
    }
    if archive == restore::ArchiveMode::Off {
        eprintln!(
            "dbvault: archiving is off in this copy (archive_mode = off in its postgresql.auto.conf): started, it pushes nothing into the archive of {:?}; if it becomes the primary, run ALTER SYSTEM RESET archive_mode and restart it (or restore with --archive-mode preserve)",
            info.wal_source
        );
    }
    Ok(())
}

/// `restore PHYSICAL-SNAPSHOT --table NAME [--target-…] --to postgres://…` (or `--to -`):
/// the tables as they were at the target, through a throwaway recovery. `url`: the
/// database URL of the target, `Some(None)` for stdout, `None` for a target it cannot be.
pub fn restore_tables(
    repo: &Repository,
    id: &dbvault_core::Id,
    snap: &dbvault_core::Snapshot,
    a: &RestoreArgs,
    url: &Option<Option<String>>,
) -> Result<()> {
    let Some(url) = url else {
        bail!("a physical snapshot restores --to pgdata:DIR, or single tables --to postgres://… or --to -");
    };
    if a.tables.is_empty() {
        bail!(
            "snapshot {} is a physical base backup: restore the cluster --to pgdata:DIR, or single tables as of a time with --table NAME [--target-time T] --to postgres://…",
            id.short()
        );
    }
    let live = url.as_deref().map(PgSource::parse).transpose()?;
    if let Some(l) = &live {
        output::warn_url_password(l);
    }
    let database = match (a.database.clone(), live.as_ref().and_then(PgSource::url_database)) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => bail!("say which database of the cluster the table is in: --database NAME (or name it in the --to URL)"),
    };
    let info = physical::BaseBackup::of(snap.part(physical::PART).context("no base.tar")?)?;
    reach::reachable(repo, &info, &goal(a)?)?;
    let target = restore::RecoveryTarget {
        time: a.target_time.as_deref().map(recovery_time).transpose()?,
        lsn: a.target_lsn.clone(),
        xid: a.target_xid.clone(),
        name: a.target_name.clone(),
        action: None,
        timeline: a.target_timeline.clone(),
    };
    if a.target_action.is_some() {
        bail!("--target-action is for --to pgdata:DIR (a table restore's throwaway server always ends its recovery)");
    }
    let o = physical::throwaway::RecoverOptions {
        target,
        restore_command: &relay_command,
    };
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let to = match &live {
        Some(db) => dbvault_formats::postgres::Target::Database(db),
        None => dbvault_formats::postgres::Target::Script(&mut stdout),
    };
    let t0 = std::time::Instant::now();
    let served = physical::table::restore_tables_at(
        repo,
        snap,
        &o,
        &database,
        &a.pg_options(),
        to,
        &crate::output::print_notice,
    )?;
    std::io::Write::flush(&mut stdout)?;
    eprintln!(
        "dbvault: {} of database {database} restored as of {} from base backup {} ({}) and WAL to {}, in {:.1} s; the throwaway server is gone",
        a.tables.join(", "),
        a.target_time
            .as_deref()
            .or(a.target_lsn.as_deref())
            .or(a.target_xid.as_deref())
            .or(a.target_name.as_deref())
            .unwrap_or("the end of the archive"),
        id.short(),
        output::time(&snap.time),
        served.segments.last().map_or("(none)", String::as_str),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where `a` asks the recovery to stop.
fn goal(a: &RestoreArgs) -> Result<reach::Goal<'_>> {
    Ok(reach::Goal {
        time: a
            .target_time
            .as_deref()
            .map(output::parse_time)
            .transpose()?,
        lsn: a.target_lsn.as_deref(),
        timeline: a
            .target_timeline
            .as_deref()
            .map(physical::timeline::TimelineChoice::parse)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// `--target-time` as PostgreSQL reads it unambiguously.
pub fn recovery_time(t: &str) -> Result<String> {
    Ok(reach::recovery_time(&output::parse_time(t)?))
}
