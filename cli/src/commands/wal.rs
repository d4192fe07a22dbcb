//! `dbvault wal-push %p` and `dbvault wal-fetch %f %p`: PostgreSQL's archive and restore
//! commands. Quiet on success (PostgreSQL logs what they print); one line on failure.
//!
//! `wal-fetch` fetches ahead: after handing PostgreSQL a segment it starts a background
//! `dbvault` (one at a time, one repository open for many segments) that puts the next
//! `--prefetch` segments in the cache directory's `wal-prefetch/<repository and source>/`,
//! where the next
//! `wal-fetch` takes them from without opening the repository at all.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Result;
use dbvault_core::files::Stored;
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::physical::relay;
use dbvault_formats::postgres::wal;

use crate::args::{Cli, WalFetchArgs, WalPushArgs, WalRemoveTimelineArgs};
use crate::{output, repo_access};

pub fn push(cli: &Cli, a: &WalPushArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-push")?;
    let p = dbvault_formats::postgres::physical::push::push(&repo, &a.name, &a.path)?;
    repo.unlock();
    if let Some(w) = &p.warning {
        eprintln!("dbvault: warning: {w}");
    }
    if cli.json {
        let added = match p.stored {
            Stored::New { bytes_added } => Some(bytes_added),
            Stored::Same => None,
        };
        output::json(&serde_json::json!({
            "name": p.name,
            "stored": added.is_some(),
            "bytes_added": added.unwrap_or(0),
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

/// Where segments fetched ahead for `source` of this repository wait (none without a cache
/// directory): one directory per repository and source, so two recoveries on one host
/// from different repositories never hand each other a segment.
fn spool(cli: &Cli, source: &str) -> Option<PathBuf> {
    let repo = cli.repo.as_deref().unwrap_or("");
    let key = dbvault_core::Id::hash_of(format!("{repo}\0{source}").as_bytes()).to_hex();
    dbvault_jobs::access::cache_dir().map(|d| d.join("wal-prefetch").join(&key.as_str()[..32]))
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
    let spool = spool(cli, &a.name).filter(|_| a.prefetch > 0);
    if a.prefetch_only {
        return prefetch_worker(cli, a, spool.as_deref());
    }
    if let Some(s) = &spool {
        if wal::take_prefetched(s, &a.file, &a.dest)? {
            start_prefetch(a, s);
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
        start_prefetch(a, s);
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the background fetcher for the segments after `a.file`, unless one runs.
fn start_prefetch(a: &WalFetchArgs, spool: &Path) {
    if !wal::is_segment(&a.file) || std::fs::create_dir_all(spool).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        // WAL in the clear: for this user's eyes only, as the data directory is.
        use std::os::unix::fs::PermissionsExt;
        if std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o700)).is_err() {
            return;
        }
    }
    let lock = spool.join(".running");
    // A fetcher that died leaves its mark; after a minute it no longer counts.
    let stale = std::fs::metadata(&lock)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() > 60));
    if stale {
        let _ = std::fs::remove_file(&lock);
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .is_err()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        let _ = std::fs::remove_file(&lock);
        return;
    };
    // Same repository, passphrase file and store options: they are in our arguments and
    // environment, which the child inherits.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--prefetch-only".into());
    let spawned = std::process::Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
}

fn prefetch_worker(cli: &Cli, a: &WalFetchArgs, spool: Option<&Path>) -> Result<ExitCode> {
    let Some(spool) = spool else {
        return Ok(ExitCode::SUCCESS);
    };
    let r = (|| -> Result<()> {
        let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-fetch (ahead)")?;
        // Named with the source's own segment size (not always 16 MiB).
        let next = wal::names_after(&repo, &a.name, &a.file, a.prefetch)?;
        wal::prefetch(&repo, &a.name, &next, spool)?;
        repo.unlock();
        Ok(())
    })();
    let _ = std::fs::remove_file(spool.join(".running"));
    r.map(|()| ExitCode::SUCCESS)
}
