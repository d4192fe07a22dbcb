//! `dbvault backup sqlite:PATH --follow [--interval 10s]`, and `dbvault follow [SOURCE]`
//! for the configuration file's sources with `follow = "10s"` (the work is
//! `dbvault_jobs::follow`). They run until the process is stopped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dbvault_core::retention::Span;
use dbvault_jobs::config::{self, Source};
use dbvault_jobs::follow::{follow, follow_configured, open_recent, Follow, Stop, COMPACT_EVERY};

use crate::args::{BackupArgs, Cli, RunArgs};
use crate::repo_access;

/// `backup sqlite:PATH --follow`.
pub fn run(cli: &Cli, a: &BackupArgs) -> Result<()> {
    let Some(path) = a.source.as_deref().and_then(|s| s.strip_prefix("sqlite:")) else {
        bail!("--follow backs up an SQLite database continuously: give sqlite:PATH");
    };
    let interval = match &a.interval {
        Some(i) => Duration::from_secs(Span::parse(i).context("--interval")?.approx_seconds()),
        None => Duration::from_secs(10),
    };
    if interval.is_zero() {
        bail!("--interval must be at least 1s");
    }
    let access = repo_access::access(cli)?;
    let repo = open_recent(
        &access,
        repo_access::backend(cli)?,
        &repo_access::passphrase(cli, false)?,
    )?;
    // Deleting is the admin host's job on an append-only host.
    let compact = if a.no_compact || cli.append_only {
        None
    } else {
        Some((
            repo.policy()?.unwrap_or_default().continuous(),
            COMPACT_EVERY,
        ))
    };
    let f = Follow {
        path: PathBuf::from(path),
        job: super::backup::job_of(a),
        interval,
        compact,
    };
    follow(
        &access,
        &crate::output::events(cli),
        &repo,
        &f,
        &Stop::new(),
    )
}

/// `dbvault follow [SOURCE]`: every followed source of the configuration, one thread
/// each, until stopped. A source whose repository or database cannot be opened is tried
/// again every 30 s (at boot the store or the file may not be there yet).
pub fn from_config(cli: &Cli, a: &RunArgs) -> Result<()> {
    if a.dry_run {
        bail!("--dry-run is for `run`: `follow` has nothing to plan");
    }
    let path = config::locate(cli.config.as_deref())?;
    let cfg = config::load(&path)?;
    let chosen: Vec<&Source> = cfg
        .source
        .iter()
        .filter(|s| s.follow.is_some())
        .filter(|s| a.job.as_ref().is_none_or(|j| &s.name == j))
        .collect();
    if chosen.is_empty() {
        match &a.job {
            Some(j) => bail!(
                "{}: no source named {j:?} with follow = \"…\"",
                path.display()
            ),
            None => bail!(
                "{}: no source has follow = \"…\" (e.g. follow = \"10s\" on an sqlite source)",
                path.display()
            ),
        }
    }
    follow_configured(
        &repo_access::access(cli)?,
        &crate::output::events(cli),
        &cfg,
        &chosen,
        &Stop::new(),
    );
    Ok(())
}
