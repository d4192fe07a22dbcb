//! `dbvault wal-push %p` and `dbvault wal-fetch %f %p`: PostgreSQL's archive and restore
//! commands. Quiet on success (PostgreSQL logs what they print); one line on failure.
//! `wal-fetch` fetches `--prefetch` segments ahead (`dbvault_jobs::wal_fetch`).

use std::process::ExitCode;

use anyhow::Result;
use dbvault_core::files::Stored;
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::physical::relay;
use dbvault_formats::postgres::wal;
use dbvault_jobs::{wal_fetch, wal_push};

use crate::args::{Cli, WalFetchArgs, WalPushArgs, WalRemoveTimelineArgs};
use crate::{output, repo_access};

pub fn push(cli: &Cli, a: &WalPushArgs) -> Result<()> {
    let marks = wal_push::marks(cli.repo.as_deref().unwrap_or(""), &a.name).filter(|_| a.ahead > 0);
    // Stored ahead by the push of an earlier segment: no repository to open.
    if let Some(m) = &marks {
        if wal_push::stored_ahead(m, &a.path)? {
            if cli.json {
                output::json(&serde_json::json!({
                    "name": a.path.file_name().map(|n| n.to_string_lossy()),
                    "stored": false,
                    "stored_ahead": true,
                    "bytes_added": 0,
                    "ahead": 0,
                }));
            }
            return Ok(());
        }
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-push")?;
    let r = wal_push::push_backlog(
        &repo,
        &a.name,
        &a.path,
        marks.as_deref(),
        a.ahead,
        std::time::Duration::from_secs(30),
    )?;
    repo.unlock();
    for w in std::iter::once(&r.pushed)
        .chain(&r.ahead)
        .filter_map(|p| p.warning.as_ref())
    {
        eprintln!("dbvault: warning: {w}");
    }
    if let Some(s) = &r.stopped {
        eprintln!("dbvault: note: storing the ready files ahead stopped at {s}");
    }
    if cli.json {
        let added = match r.pushed.stored {
            Stored::New { bytes_added } => Some(bytes_added),
            Stored::Same => None,
        };
        output::json(&serde_json::json!({
            "name": r.pushed.name,
            "stored": added.is_some(),
            "bytes_added": added.unwrap_or(0),
            "ahead": r.ahead.len(),
            "requests": repo.backend().requests(),
        }));
    }
    Ok(())
}

/// `wal-remove-timeline N --name SOURCE [--dry-run]`.
pub fn remove_timeline(cli: &Cli, a: &WalRemoveTimelineArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-remove-timeline")?;
    let (snaps, _) = repo.readable_snapshots()?;
    let files = dbvault_formats::postgres::physical::timeline::remove_branch(
        &repo, &a.name, a.timeline, &snaps, a.dry_run,
    )?;
    repo.unlock();
    if cli.json {
        output::json(&serde_json::json!({
            "source": a.name,
            "timeline": a.timeline,
            "removed": !a.dry_run,
            "files": files,
        }));
    } else {
        for f in &files {
            crate::outln!("{} {f}", if a.dry_run { "would remove" } else { "removed" });
        }
        crate::outln!(
            "{} {} WAL file(s) of timeline {} and after from the archive of {:?}{}",
            if a.dry_run { "would remove" } else { "removed" },
            files.len(),
            a.timeline,
            a.name,
            if a.dry_run {
                ""
            } else {
                " (their data goes at the next prune)"
            }
        );
    }
    Ok(())
}

/// `restore_command`: exits 0 with the file in place, [`wal::FETCH_MISSING`] only when the
/// archive answers that it does not have it, [`wal::FETCH_FAILED`] for anything else
/// (with one line for the server's log), so that no failure ends recovery early.
pub fn fetch(cli: &Cli, a: &WalFetchArgs) -> Result<ExitCode> {
    match fetch_inner(cli, a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!(
                "dbvault: error: wal-fetch {}: {}; recovery must not end here: the server stops, and carries on when started again once this is fixed",
                a.file,
                crate::one_line(&e)
            );
            Ok(ExitCode::from(wal::FETCH_FAILED))
        }
    }
}

fn fetch_inner(cli: &Cli, a: &WalFetchArgs) -> Result<ExitCode> {
    if let Some(socket) = &a.relay {
        return Ok(match relay::ask(socket, &a.file, &a.dest)? {
            relay::Reply::Ok => ExitCode::SUCCESS,
            relay::Reply::Missing => ExitCode::from(wal::FETCH_MISSING),
            relay::Reply::Error(e) => {
                eprintln!("dbvault: error: wal-fetch {}: {e}", a.file);
                ExitCode::from(wal::FETCH_FAILED)
            }
        });
    }
    let spool =
        wal_fetch::spool(cli.repo.as_deref().unwrap_or(""), &a.name).filter(|_| a.prefetch > 0);
    if a.prefetch_only {
        if let Some(s) = &spool {
            let open = || repo_access::open_locked(cli, LockKind::Shared, "wal-fetch (ahead)");
            wal_fetch::fetch_ahead(open, &a.name, &a.file, a.prefetch, s)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // The fetcher ahead is this command again: same repository, passphrase file and
    // store options (in our arguments and environment, which the child inherits).
    let ahead = |s: &std::path::Path| {
        if let Ok(exe) = std::env::current_exe() {
            let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            args.push("--prefetch-only".into());
            wal_fetch::start_ahead(s, &a.file, &exe, &args);
        }
    };
    if let Some(s) = &spool {
        if wal_fetch::take(s, &a.file, &a.dest)? {
            ahead(s);
            return Ok(ExitCode::SUCCESS);
        }
    }
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-fetch")?;
    let found = wal::fetch(&repo, &a.name, &a.file, &a.dest)?;
    repo.unlock();
    if !found {
        eprintln!("dbvault: {} is not in the archive of {}", a.file, a.name);
        return Ok(ExitCode::from(wal::FETCH_MISSING));
    }
    if let Some(s) = &spool {
        ahead(s);
    }
    Ok(ExitCode::SUCCESS)
}
