//! Physical sources: a base backup as a job, and the WAL that retention lets go.

use anyhow::{bail, Result};
use dbvault_core::backup::{BackupSummary, SnapshotMeta};
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::{self, backup::PhysicalOptions};
use dbvault_formats::postgres::PgSource;

use crate::events::Events;
use crate::job::Job;

/// The default source name of physical backups and their WAL.
const DEFAULT_NAME: &str = "postgres";
/// zstd level of base backups: measured on a pgbench cluster (185 MB), a full base backup
/// stored 21.0 MB at level 1, 19.4 at 3, 17.9 at 6, in about the same time (pg_basebackup
/// sets the pace), and the next one after 30 s of pgbench 7.7, 7.8 and 6.5 MB.
const BASE_LEVEL: i32 = 6;

/// Takes a base backup of the cluster at `url` (the job's name, default `postgres`, names
/// its WAL archive too).
///
/// # Errors
/// Selections given, the server or pg_basebackup failing (no snapshot is then recorded),
/// storage errors.
pub fn backup(
    ev: &dyn Events,
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
    let parent = repo.newest_of(&name).ok().flatten().map(|(_, s)| s);
    let b = repo.start_backup_at(parent.as_ref(), BASE_LEVEL)?;
    let progress = ev.step(&format!("base backup of {}", pg.describe()), b.progress());
    let opts = PhysicalOptions {
        wal_source: name.clone(),
        wal_wait: a.physical.unwrap_or(std::time::Duration::from_secs(300)),
        pgdata: a.pgdata.clone(),
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

/// Removes (unless `dry_run`) each physical source's WAL files that no base backup in
/// `kept` needs, keeping those archived within `keep_within`; returns (source, files).
///
/// # Errors
/// Reading the archive, or removing (an append-only host cannot).
pub fn forget_wal(
    repo: &Repository,
    kept: &[(dbvault_core::Id, dbvault_core::Snapshot)],
    keep_within: Option<dbvault_core::retention::Span>,
    dry_run: bool,
) -> Result<Vec<(String, usize)>> {
    let mut by_source: std::collections::BTreeMap<String, Vec<physical::BaseBackup>> =
        Default::default();
    for (_, s) in kept
        .iter()
        .filter(|(_, s)| s.source.format == physical::FORMAT)
    {
        // A record that does not read stops retention: its WAL must not look unneeded.
        if let Some(b) = s
            .part(physical::PART)
            .map(physical::BaseBackup::of)
            .transpose()?
        {
            by_source.entry(b.wal_source.clone()).or_default().push(b);
        }
    }
    let now = chrono::Local::now().fixed_offset();
    let mut out = Vec::new();
    for (source, bases) in by_source {
        let a = physical::archive::Archive::load(repo, &source, bases[0].segment_size)?;
        let ns = dbvault_formats::postgres::wal::namespace(repo, &source);
        let mut gone = a.unneeded(&bases);
        if let Some(span) = keep_within {
            let since = span.before(now);
            let mut older = Vec::new();
            for n in gone {
                if repo.file(&ns, &n).map(|r| r.time < since).unwrap_or(true) {
                    older.push(n);
                }
            }
            gone = older;
        }
        if !dry_run && !gone.is_empty() {
            repo.remove_files(&ns, &gone)?;
        }
        out.push((source, gone.len()));
    }
    Ok(out)
}
