//! `restore SNAPSHOT --to pgdata:DIR [--target-…]`: point-in-time recovery (the work is in
//! `dbvault_formats::postgres::physical`; base backups are `dbvault_jobs::physical`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::{self, restore};
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
    if snap.source.format != physical::FORMAT {
        bail!(
            "snapshot {} is a logical backup ({}): --to pgdata: takes a physical one (`backup --physical`)",
            id.short(),
            snap.source.format
        );
    }
    let part = snap.part(physical::PART).context("no base.tar")?;
    let info = physical::BaseBackup::of(part);
    let archive = restore::ArchiveMode::parse(&a.archive_mode)?;
    let resolved = reachable(&repo, &info, a)?;
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
    let info = physical::BaseBackup::of(snap.part(physical::PART).context("no base.tar")?);
    reachable(repo, &info, a)?;
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

/// Refuses a recovery the archive cannot complete: WAL missing for the base backup to
/// become consistent, a gap before the target (PostgreSQL would stop there and carry on as
/// if it were the end), a target time after everything archived, or `latest` across two
/// servers' branches. Returns the timeline recovery follows.
fn reachable(
    repo: &Repository,
    b: &physical::BaseBackup,
    a: &RestoreArgs,
) -> Result<physical::timeline::Resolved> {
    use physical::timeline::TimelineChoice;
    let arch = physical::archive::Archive::load(repo, &b.wal_source, b.segment_size)?;
    let choice = a
        .target_timeline
        .as_deref()
        .map(TimelineChoice::parse)
        .transpose()?
        .unwrap_or_default();
    let resolved = arch.resolve(b, choice, &b.wal_source)?;
    let w = arch.window_to(b, resolved.timeline)?;
    if let Some(m) = w.missing_for_consistency.first() {
        bail!(
            "the base backup needs WAL segment {m} to become consistent, and the archive of {:?} does not have it: restore an older base backup (`dbvault snapshots`)",
            b.wal_source
        );
    }
    let ns = dbvault_formats::postgres::wal::namespace(repo, &b.wal_source);
    let last_time = repo.file(&ns, &w.last).map(|r| r.time).ok();
    let target_time = a
        .target_time
        .as_deref()
        .map(output::parse_time)
        .transpose()?;
    let Some(gap) = &w.gap else {
        if let (Some(t), Some(lt)) = (target_time, last_time) {
            if t > lt {
                bail!(
                    "the archive of {:?} ends before {}: its newest WAL segment, {}, was archived {}, and the WAL that reaches the target is still in the server's pg_wal. On the server, run SELECT pg_switch_wal() (or wait for archive_timeout) and restore again; without a target, recovery replays everything archived",
                    b.wal_source,
                    output::time(&t),
                    w.last,
                    output::time(&lt)
                );
            }
        }
        return Ok(resolved);
    };
    let before_gap = match (target_time, &a.target_lsn) {
        (Some(t), _) => last_time.is_some_and(|lt| t <= lt),
        (_, Some(l)) => {
            let gap_start = match dbvault_formats::postgres::wal::parse_name(gap, arch.per_log()) {
                Some(dbvault_formats::postgres::wal::WalFile::Segment { number, .. }) => {
                    dbvault_formats::postgres::wal::segment_start(number, b.segment_size)
                }
                _ => 0,
            };
            physical::parse_lsn(l).is_ok_and(|l| l < gap_start)
        }
        _ => false,
    };
    if !before_gap {
        bail!(
            "WAL segment {gap} is missing from the archive of {:?}: recovery would stop at {} (archived {}) and the server would carry on from there; give a --target-time or --target-lsn before it to recover up to the gap",
            b.wal_source,
            w.last,
            last_time.map_or_else(|| "?".into(), |t| output::time(&t))
        );
    }
    Ok(resolved)
}

/// A time PostgreSQL reads unambiguously: with its zone, as RFC 3339 gives it.
pub fn recovery_time(t: &str) -> Result<String> {
    Ok(output::parse_time(t)?
        .format("%Y-%m-%d %H:%M:%S%.6f%:z")
        .to_string())
}

/// What each physical source's archive lets recovery reach, one line each (for
/// `snapshots`): from its oldest base backup to the last segment archived without a gap.
pub fn windows(
    repo: &Repository,
    snaps: &[(dbvault_core::Id, dbvault_core::Snapshot)],
) -> Vec<String> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&dbvault_core::Snapshot>> =
        Default::default();
    for (_, s) in snaps
        .iter()
        .filter(|(_, s)| s.source.format == physical::FORMAT)
    {
        by_name.entry(&s.name).or_default().push(s);
    }
    let mut out = Vec::new();
    for (name, list) in by_name {
        let Some(oldest) = list.iter().min_by_key(|s| s.time) else {
            continue;
        };
        let Some(b) = oldest.part(physical::PART).map(physical::BaseBackup::of) else {
            continue;
        };
        let line = (|| -> Result<String> {
            let a = physical::archive::Archive::load(repo, &b.wal_source, b.segment_size)?;
            let w = a.window(&b)?;
            let ns = dbvault_formats::postgres::wal::namespace(repo, &b.wal_source);
            let until = repo
                .file(&ns, &w.last)
                .map(|r| output::time(&r.time))
                .unwrap_or_else(|_| "?".into());
            let mut l = format!(
                "{name}: point-in-time recovery from {} to about {until} (WAL to {}, timeline {})",
                output::time(&oldest.time),
                w.last,
                w.timeline
            );
            if let Some(g) = &w.gap {
                l.push_str(&format!(
                    "; ends at a gap: segment {g} is missing (run `dbvault check`)"
                ));
            }
            for f in a.forks() {
                l.push_str(&format!("; {}", f.describe(name)));
            }
            if !w.missing_for_consistency.is_empty() {
                l.push_str(&format!(
                    "; the oldest base backup lacks {} to become consistent",
                    w.missing_for_consistency.join(", ")
                ));
            }
            Ok(l)
        })();
        out.push(line.unwrap_or_else(|e| format!("{name}: WAL archive unreadable: {e:#}")));
    }
    out
}
