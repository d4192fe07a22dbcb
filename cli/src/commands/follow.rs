//! `dbvault backup sqlite:PATH --follow [--interval 10s]`: continuous backup. A snapshot
//! whenever the database changed and the interval has passed, each an ordinary backup
//! (the online copy is one consistent state; unchanged pages dedup, so a snapshot costs the
//! changed pages and a small manifest). The repository lock is taken for each snapshot and
//! released between them, so a prune on the admin host is never kept waiting for long.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::retention::Span;
use dbvault_formats::sqlite::watch::ChangeWatch;

use crate::args::{BackupArgs, Cli};
use crate::repo_access;

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
    let path = std::path::Path::new(path);
    let job = super::backup::Job::from(a);
    let repo = repo_access::open(cli)?;
    let mut watch = ChangeWatch::open(path)?;
    // Polling is cheap (one PRAGMA on an idle connection): a change is seen within this.
    let poll = (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut pending = true;
    let mut last: Option<Instant> = None;
    eprintln!(
        "dbvault: following {} (a snapshot at most every {}s when it changed)",
        path.display(),
        interval.as_secs()
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
            let taken = repo_access::lock(cli, &repo, LockKind::Shared, "backup --follow")
                .and_then(|()| super::backup::backup_into(cli, &repo, &job, None, None));
            repo.unlock();
            match taken {
                Ok(sum) => super::backup::report(cli, &sum, None),
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
