//! Continuous SQLite backup: `dbvault backup sqlite:PATH --follow [--interval 10s]`, and
//! `dbvault follow [SOURCE]` for the configuration file's sources with `follow = "10s"`.
//! A snapshot whenever the database changed and the interval has passed, each an ordinary
//! backup (the online copy is one consistent state; unchanged pages dedup, so a snapshot
//! costs the changed pages and a small manifest). The repository lock is taken for each
//! snapshot and released between them, so a prune on the admin host is never kept waiting
//! for long. Every `compact_every` the follower applies the continuous retention
//! (`Policy::continuous`), so the snapshot list stays a few hundred long.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dbvault_core::backend::recent::Recent;
use dbvault_core::backend::Backend;
use dbvault_core::lock::LockKind;
use dbvault_core::retention::{Policy, Span};
use dbvault_core::Repository;
use dbvault_formats::sqlite::watch::ChangeWatch;

use super::backup::Job;
use crate::args::{BackupArgs, Cli, RunArgs};
use crate::config::{self, Config, Source};
use crate::repo_access;

/// How often the command-line follower compacts (the configuration's default too).
const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// Pack bytes the follower keeps in memory between snapshots.
const RECENT_BYTES: usize = 16 << 20;

/// One followed database.
struct Follow {
    path: PathBuf,
    job: Job,
    interval: Duration,
    /// The retention applied at most this often; `None` keeps every snapshot.
    compact: Option<(Policy, Duration)>,
}

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
    let repo = open_recent(
        cli,
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
        job: Job::from(a),
        interval,
        compact,
    };
    follow(cli, &repo, &f)
}

/// `dbvault follow [SOURCE]`: every followed source of the configuration, one thread
/// each, until stopped. A source whose repository or database cannot be opened is tried
/// again every 30 s (at boot the store or the file may not be there yet).
pub fn from_config(cli: &Cli, a: &RunArgs) -> Result<()> {
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
    std::thread::scope(|scope| {
        for s in chosen {
            let cfg = &cfg;
            scope.spawn(move || loop {
                if let Err(e) = follow_source(cli, cfg, s) {
                    eprintln!("dbvault: {}: error: {e:#} (starting again in 30s)", s.name);
                }
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    Ok(())
}

fn follow_source(cli: &Cli, cfg: &Config, s: &Source) -> Result<()> {
    let Some((interval, every)) = s.following()? else {
        bail!("source {} is not followed", s.name);
    };
    let rname = cfg.repo_of(s)?;
    let rc = &cfg.repository[rname];
    let repo = open_recent(
        cli,
        repo_access::configured_backend(cli, rc)?,
        &config::passphrase(rname, rc)?,
    )?;
    let compact = if cli.append_only || rc.append_only {
        None
    } else {
        super::run::policy_for(&repo, cfg, s)?.map(|p| (p, every))
    };
    let f = Follow {
        path: s.sqlite.clone().unwrap_or_default(),
        job: super::run::job_of(s)?,
        interval,
        compact,
    };
    follow(cli, &repo, &f)
}

/// Opens the repository with [`Recent`] in front of its storage: the next snapshot's
/// parent lists and delta bases are then mostly in memory (a handful of requests per
/// snapshot on S3 instead of dozens).
fn open_recent(cli: &Cli, backend: Arc<dyn Backend>, pass: &str) -> Result<Repository> {
    repo_access::open_with(cli, Arc::new(Recent::new(backend, RECENT_BYTES)), pass)
}

/// The follower's loop; returns only when the database cannot be watched at the start.
fn follow(cli: &Cli, repo: &Repository, f: &Follow) -> Result<()> {
    let path = f.path.as_path();
    let interval = f.interval;
    let mut watch = ChangeWatch::open(path)?;
    // Polling is cheap (one PRAGMA on an idle connection): a change is seen within this.
    let poll = (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut pending = true;
    let mut last: Option<Instant> = None;
    let mut compacted: Option<Instant> = None;
    eprintln!(
        "dbvault: following {} (a snapshot at most every {}s when it changed; {})",
        path.display(),
        interval.as_secs(),
        match &f.compact {
            Some((p, every)) => format!("compacted every {}s to {}", every.as_secs(), p.describe()),
            None => "every snapshot kept".into(),
        }
    );
    loop {
        match watch.changed() {
            Ok(true) => pending = true,
            Ok(false) => {}
            Err(e) => {
                // The file may be mid-replacement; try again on the next poll.
                eprintln!("dbvault: warning: {e}");
                std::thread::sleep(interval);
                if let Ok(w) = ChangeWatch::open(path) {
                    watch = w;
                    pending = true;
                }
                continue;
            }
        }
        if pending && last.is_none_or(|t| t.elapsed() >= interval) {
            // Commits during the copy move data_version again: the next round takes them.
            pending = false;
            last = Some(Instant::now());
            let before = repo.backend().requests();
            let taken = repo_access::lock(cli, repo, LockKind::Shared, "backup --follow")
                .and_then(|()| super::backup::backup_into(cli, repo, &f.job, None, None));
            let due = f
                .compact
                .as_ref()
                .filter(|(_, every)| compacted.is_none_or(|t| t.elapsed() >= *every));
            if let (Ok(sum), Some((policy, _))) = (&taken, due) {
                compacted = Some(Instant::now());
                match super::forget::by_policy(repo, &sum.snapshot.name, policy) {
                    Ok(0) => {}
                    Ok(n) => eprintln!(
                        "dbvault: compacted {}: {n} older snapshot(s) forgotten",
                        sum.snapshot.name
                    ),
                    Err(e) => eprintln!("dbvault: warning: compaction failed: {e:#}"),
                }
            }
            repo.unlock();
            let requests = repo.backend().requests().zip(before).map(|(a, b)| a - b);
            match taken {
                Ok(sum) => super::backup::report(cli, &sum, requests),
                Err(e) => {
                    eprintln!(
                        "dbvault: error: {e:#} (trying again in {}s)",
                        interval.as_secs()
                    );
                    pending = true;
                }
            }
        }
        std::thread::sleep(poll);
    }
}
