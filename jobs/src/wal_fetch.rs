//! `restore_command` with read-ahead: after handing PostgreSQL a segment, a background
//! process of the front end (one at a time per spool, one repository open for many
//! segments) puts the next segments in a spool directory, where the next fetch takes them
//! from without opening the repository at all.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Result;
use dbvault_core::Repository;
use dbvault_formats::postgres::wal;

/// Where segments fetched ahead for `source` of repository `repo_url` wait (none without a
/// cache directory): one directory per repository and source, so two recoveries on one
/// host from different repositories never hand each other a segment.
#[must_use]
pub fn spool(repo_url: &str, source: &str) -> Option<PathBuf> {
    let key = dbvault_core::Id::hash_of(format!("{repo_url}\0{source}").as_bytes()).to_hex();
    crate::access::cache_dir().map(|d| d.join("wal-prefetch").join(&key.as_str()[..32]))
}

/// Takes `file` from the spool into `dest` if it was fetched ahead.
///
/// # Errors
/// The spool cannot be read or `dest` written.
pub fn take(spool: &Path, file: &str, dest: &Path) -> Result<bool> {
    Ok(wal::take_prefetched(spool, file, dest)?)
}

/// Starts `program args…` in the background to fill `spool` with the segments after
/// `file`, unless one runs already (or the spool cannot be made private to this user).
/// Failing to start is not an error: the next fetch reads the repository itself.
pub fn start_ahead(spool: &Path, file: &str, program: &Path, args: &[OsString]) {
    if !wal::is_segment(file) || std::fs::create_dir_all(spool).is_err() {
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
    let spawned = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
}

/// The background fetcher's work: the `count` segments after `file` of `source` into
/// `spool` (named with the source's own segment size), then its mark removed.
///
/// # Errors
/// Opening the repository (`open`) or fetching failed; the mark is removed anyway.
pub fn fetch_ahead(
    open: impl FnOnce() -> Result<Repository>,
    source: &str,
    file: &str,
    count: u64,
    spool: &Path,
) -> Result<()> {
    let r = (|| -> Result<()> {
        let repo = open()?;
        let next = wal::names_after(&repo, source, file, count)?;
        wal::prefetch(&repo, source, &next, spool)?;
        repo.unlock();
        Ok(())
    })();
    let _ = std::fs::remove_file(spool.join(".running"));
    r
}
