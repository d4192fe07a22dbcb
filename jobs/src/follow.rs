//! Continuous SQLite backup: a snapshot whenever the database changed and the interval
//! has passed, each an ordinary backup (the online copy is one consistent state; unchanged
//! pages dedup, so a snapshot costs the changed pages and a small manifest). The repository
//! lock is taken for each snapshot and released between them, so a prune on the admin host
//! is never kept waiting for long. Every `compact` period the follower applies the
//! continuous retention (`Policy::continuous`), so the snapshot list stays a few hundred
//! long. A follower runs until its [`Stop`] is stopped.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dbvault_core::backend::recent::Recent;
use dbvault_core::backend::Backend;
use dbvault_core::lock::LockKind;
use dbvault_core::retention::Policy;
use dbvault_core::Repository;
use dbvault_formats::sqlite::watch::ChangeWatch;

use crate::access::Access;
use crate::config::{Config, Source};
use crate::events::Events;
use crate::job::Job;

/// How often a follower compacts unless told (the configuration's default too).
pub const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// Pack bytes a follower keeps in memory between snapshots.
const RECENT_BYTES: usize = 16 << 20;
/// How long a configured source that could not start waits before it is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// One followed database.
pub struct Follow {
    /// The SQLite file.
    pub path: PathBuf,
    /// The backup each snapshot is.
    pub job: Job,
    /// At most one snapshot this often.
    pub interval: Duration,
    /// The retention applied at most this often; `None` keeps every snapshot.
    pub compact: Option<(Policy, Duration)>,
}

/// Stops followers: cloned into each, stopped once from anywhere.
#[derive(Clone, Default)]
pub struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    /// A handle not yet stopped.
    #[must_use]
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops every follower holding a clone (each ends after its current snapshot).
    pub fn stop(&self) {
        let (m, c) = &*self.0;
        *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        c.notify_all();
    }

    /// Whether [`Stop::stop`] was called.
    #[must_use]
    pub fn stopped(&self) -> bool {
        *self
            .0
             .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits `d`, or less when stopped meanwhile.
    pub fn sleep(&self, d: Duration) {
        let (m, c) = &*self.0;
        let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = c.wait_timeout_while(g, d, |stopped| !*stopped);
    }
}

/// Opens the repository with [`Recent`] in front of its storage: the next snapshot's
/// parent lists and delta bases are then mostly in memory (a handful of requests per
/// snapshot on S3 instead of dozens).
///
/// # Errors
/// As [`Access::open`].
pub fn open_recent(access: &Access, backend: Arc<dyn Backend>, pass: &str) -> Result<Repository> {
    access.open(Arc::new(Recent::new(backend, RECENT_BYTES)), pass)
}

/// Every source of `chosen` (followed sources of `cfg`), one thread each, until `stop`.
/// A source whose repository or database cannot be opened is tried again every 30 s (at
/// boot the store or the file may not be there yet).
pub fn follow_configured(
    access: &Access,
    ev: &dyn Events,
    cfg: &Config,
    chosen: &[&Source],
    stop: &Stop,
) {
    std::thread::scope(|scope| {
        for s in chosen {
            scope.spawn(move || {
                while !stop.stopped() {
                    if let Err(e) = follow_source(access, ev, cfg, s, stop) {
                        ev.warn(&format!("{}: error: {e:#} (starting again in 30s)", s.name));
                    }
                    stop.sleep(RETRY);
                }
            });
        }
    });
}

/// Follows one configured source until `stop`.
///
/// # Errors
/// The source is not followed, its repository or database cannot be opened.
pub fn follow_source(
    access: &Access,
    ev: &dyn Events,
    cfg: &Config,
    s: &Source,
    stop: &Stop,
) -> Result<()> {
    let Some((interval, every)) = s.following()? else {
        bail!("source {} is not followed", s.name);
    };
    let rname = cfg.repo_of(s)?;
    let rc = &cfg.repository[rname];
    let repo = open_recent(
        access,
        access.configured_backend(rc)?,
        &crate::access::configured_passphrase(rname, rc)?,
    )?;
    let compact = if access.is_append_only(Some(rc)) {
        None
    } else {
        crate::run::policy_for(&repo, cfg, s)?.map(|p| (p, every))
    };
    let f = Follow {
        path: s.sqlite.clone().unwrap_or_default(),
        job: crate::run::job_of(s)?,
        interval,
        compact,
    };
    follow(access, ev, &repo, &f, stop)
}

/// The follower's loop, until `stop`; each snapshot is told to [`Events::snapshot`].
///
/// # Errors
/// The database cannot be watched at the start.
pub fn follow(
    access: &Access,
    ev: &dyn Events,
    repo: &Repository,
    f: &Follow,
    stop: &Stop,
) -> Result<()> {
    let path = f.path.as_path();
    let interval = f.interval;
    let mut watch = ChangeWatch::open(path)?;
    // Polling is cheap (one PRAGMA on an idle connection): a change is seen within this.
    let poll = (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut pending = true;
    let mut last: Option<Instant> = None;
    let mut compacted: Option<Instant> = None;
    ev.note(&format!(
        "following {} (a snapshot at most every {}s when it changed; {})",
        path.display(),
        interval.as_secs(),
        match &f.compact {
            Some((p, every)) => format!("compacted every {}s to {}", every.as_secs(), p.describe()),
            None => "every snapshot kept".into(),
        }
    ));
    while !stop.stopped() {
        match watch.changed() {
            Ok(true) => pending = true,
            Ok(false) => {}
            Err(e) => {
                // The file may be mid-replacement; try again on the next poll.
                ev.warn(&e.to_string());
                stop.sleep(interval);
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
            let taken = access
                .lock(repo, LockKind::Shared, "backup --follow")
                .and_then(|()| crate::backup::backup_into(ev, repo, &f.job, None, None));
            let due = f
                .compact
                .as_ref()
                .filter(|(_, every)| compacted.is_none_or(|t| t.elapsed() >= *every));
            if let (Ok(sum), Some((policy, _))) = (&taken, due) {
                compacted = Some(Instant::now());
                match crate::maintain::forget_by_policy(repo, &sum.snapshot.name, policy) {
                    Ok(0) => {}
                    Ok(n) => ev.note(&format!(
                        "compacted {}: {n} older snapshot(s) forgotten",
                        sum.snapshot.name
                    )),
                    Err(e) => ev.warn(&format!("compaction failed: {e:#}")),
                }
            }
            repo.unlock();
            let requests = repo.backend().requests().zip(before).map(|(a, b)| a - b);
            match taken {
                Ok(sum) => ev.snapshot(&sum, requests),
                Err(e) => {
                    ev.warn(&format!(
                        "error: {e:#} (trying again in {}s)",
                        interval.as_secs()
                    ));
                    pending = true;
                }
            }
        }
        stop.sleep(poll);
    }
    Ok(())
}
