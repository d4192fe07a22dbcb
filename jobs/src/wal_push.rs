//! `archive_command` for a backlog. PostgreSQL runs `wal-push %p` once per segment, and
//! each run would open the repository (the passphrase's key derivation, a lock, the index)
//! for one file: after an outage a server hands its backlog over one segment at a time.
//! So a push also stores the segments PostgreSQL has marked ready after `%p`
//! (`archive_status/*.ready`), in the same process, and leaves a mark for each in this
//! user's cache; when PostgreSQL then asks for one of them, the push finds its mark,
//! checks the file's size and BLAKE3 against it, and answers 0 without opening the
//! repository at all.
//!
//! Durability is unchanged: a mark is written only once its segment is stored (the
//! store's own write order makes it durable before `put_file` returns), a mark whose file
//! differs is ignored (the segment is pushed as usual), and a lost mark only means the
//! segment is pushed again (the repository answers "already there"). Marks live in the
//! cache directory of the server's user, private to it (0700), keyed by repository URL and
//! source, and are removed when used or after a week.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::push::{self, Pushed};

/// Where the marks of segments stored ahead for `source` of `repo_url` are (none without a
/// cache directory).
#[must_use]
pub fn marks(repo_url: &str, source: &str) -> Option<PathBuf> {
    let key = dbvault_core::Id::hash_of(format!("{repo_url}\0{source}").as_bytes()).to_hex();
    crate::access::cache_dir().map(|d| d.join("wal-pushed").join(&key.as_str()[..32]))
}

/// Whether the file at `path` was stored ahead (its mark matches its size and hash); the
/// mark is then removed: PostgreSQL will not ask again.
///
/// # Errors
/// The file cannot be read.
pub fn stored_ahead(marks: &Path, path: &Path) -> Result<bool> {
    let Some(name) = path.file_name() else {
        return Ok(false);
    };
    let mark = marks.join(name);
    let Ok(recorded) = std::fs::read_to_string(&mark) else {
        return Ok(false);
    };
    let same = recorded.trim() == fingerprint(path)?;
    if same {
        let _ = std::fs::remove_file(&mark);
    }
    Ok(same)
}

fn fingerprint(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok(format!("{n} {}", h.finalize().to_hex()))
}

/// What a push stored: `%p`, and the ready segments after it.
#[derive(Debug)]
pub struct BacklogPush {
    /// The file PostgreSQL asked for.
    pub pushed: Pushed,
    /// The ready files stored after it (and marked).
    pub ahead: Vec<Pushed>,
    /// A ready file that could not be stored (PostgreSQL will ask for it, and get the
    /// reason then): the batch stopped there.
    pub stopped: Option<String>,
}

/// Stores `path` for `source`, then up to `limit` of the files PostgreSQL marked ready
/// after it, within `budget`, marking each in `marks`. The handle must hold a shared lock.
///
/// # Errors
/// As [`push::push`], for `path` only: the files after it never fail the push.
pub fn push_backlog(
    repo: &Repository,
    source: &str,
    path: &Path,
    marks: Option<&Path>,
    limit: usize,
    budget: Duration,
) -> Result<BacklogPush> {
    let started = Instant::now();
    let pushed = push::push(repo, source, path)?;
    let mut out = BacklogPush {
        pushed,
        ahead: Vec::new(),
        stopped: None,
    };
    let Some(marks) = marks else {
        return Ok(out);
    };
    if prepare(marks).is_err() {
        return Ok(out);
    }
    for next in push::ready_after(path).into_iter().take(limit) {
        if started.elapsed() > budget {
            break;
        }
        match push::push(repo, source, &next)
            .map_err(anyhow::Error::from)
            .and_then(|p| {
                let tmp = marks.join(format!(".{}.tmp", p.name));
                std::fs::write(&tmp, fingerprint(&next)?)?;
                std::fs::rename(&tmp, marks.join(&p.name))?;
                Ok(p)
            }) {
            Ok(p) => out.ahead.push(p),
            Err(e) => {
                out.stopped = Some(format!("{}: {}", next.display(), crate::one_line(&e)));
                break;
            }
        }
    }
    Ok(out)
}

/// The marks directory, private to this user, with marks older than a week removed.
fn prepare(marks: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(marks)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(marks, std::fs::Permissions::from_mode(0o700))?;
    }
    for e in std::fs::read_dir(marks)?.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|a| a > Duration::from_secs(7 * 86_400))
        });
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_trusted_only_for_the_same_bytes_and_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let marks = dir.path().join("marks");
        prepare(&marks).expect("marks");
        let seg = dir.path().join("000000010000000000000007");
        std::fs::write(&seg, b"segment bytes").expect("write");
        // No mark: pushed as usual.
        assert!(!stored_ahead(&marks, &seg).expect("check"));
        // A mark of other bytes (a segment rewritten since): not trusted, and kept.
        std::fs::write(marks.join("000000010000000000000007"), "13 00ff").expect("mark");
        assert!(!stored_ahead(&marks, &seg).expect("check"));
        // The mark of these bytes: trusted once, then gone.
        std::fs::write(
            marks.join("000000010000000000000007"),
            fingerprint(&seg).expect("fp"),
        )
        .expect("mark");
        assert!(stored_ahead(&marks, &seg).expect("check"));
        assert!(!marks.join("000000010000000000000007").exists());
        assert!(!stored_ahead(&marks, &seg).expect("check"));
    }
}
