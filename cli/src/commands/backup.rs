//! `dbvault backup`: the arguments as a job for the jobs library, and the summary printed.

use anyhow::{anyhow, Context, Result};
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::PgSource;
use dbvault_formats::StreamFormat;
use dbvault_jobs::backup::{backup_into, input, Input, Job};

use crate::args::{BackupArgs, Cli};
use crate::output;
use crate::repo_access;

fn snapshot_time(a: &BackupArgs) -> Result<chrono::DateTime<chrono::FixedOffset>> {
    match &a.time {
        Some(t) => output::parse_time(t).map_err(|e| anyhow!("--time: {e}")),
        None => Ok(chrono::Local::now().fixed_offset()),
    }
}

/// The job `backup`'s arguments describe.
pub fn job_of(a: &BackupArgs) -> Job {
    Job {
        source: a.source.clone(),
        command: a.command.clone(),
        name: a.name.clone(),
        tags: a.tags.clone(),
        jobs: a.jobs,
        all_databases: a.all_databases,
        enable_row_security: a.enable_row_security,
        selection: a.selection.clone(),
        physical: a.physical.then(|| {
            a.wal_wait
                .as_deref()
                .and_then(|w| dbvault_core::retention::Span::parse(w).ok())
                .map_or(std::time::Duration::from_secs(300), |s| {
                    std::time::Duration::from_secs(s.approx_seconds())
                })
        }),
        pgdata: a.pgdata.clone(),
        allow_empty: a.allow_empty,
    }
}

pub fn run(cli: &Cli, a: &BackupArgs) -> Result<()> {
    let format = match &a.format {
        Some(f) => Some(StreamFormat::parse(f).map_err(|e| anyhow!(e))?),
        None => None,
    };
    let time = a.time.as_ref().map(|_| snapshot_time(a)).transpose()?;
    if let Some(w) = &a.wal_wait {
        dbvault_core::retention::Span::parse(w).context("--wal-wait")?;
    }
    let job = job_of(a);
    if let Input::Postgres(url) = input(&job)? {
        output::warn_url_password(&PgSource::parse(url)?);
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "backup")?;
    let summary = backup_into(&crate::output::events(cli), &repo, &job, format, time)?;
    // Counted after the lock is gone: its removal is a request too.
    repo.unlock();
    output::backup_summary(cli, &summary, repo.backend().requests());
    Ok(())
}
