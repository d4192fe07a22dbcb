//! `archive_command = 'dbvault wal-push %p'`: one WAL file into the repository (the
//! arithmetic and storage layout are [`crate::postgres::wal`]'s).

use std::io::Read;
use std::path::Path;

use dbvault_core::files::Stored;
use dbvault_core::Repository;

use super::archive::Archive;
use crate::error::{FormatError, Result};
use crate::postgres::wal::{self, WalFile};

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The file's name.
    pub name: String,
    /// Stored now, or already there with the same bytes.
    pub stored: Stored,
    /// A history file that forks a timeline its parent went on past: two servers archive
    /// into this source ([`super::timeline`]). Stored all the same (a
    /// push returns 0 only once stored, and refusing would only fill this server's
    /// `pg_wal`); `check` names it until it is removed.
    pub warning: Option<String>,
}

/// Stores the WAL file at `path` for `source` (`archive_command`). The handle must hold
/// a shared lock.
///
/// # Errors
/// A name that is not a WAL file's; a segment of another cluster than the source's; the
/// file already stored with other bytes ([`dbvault_core::Error::Conflict`]); reading and
/// storage errors. On any error nothing PostgreSQL may then delete is claimed stored.
pub fn push(repo: &Repository, source: &str, path: &Path) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FormatError::Invalid(format!("{}: not a WAL file", path.display())))?
        .to_string();
    let kind = wal::parse_name(&name, 256)
        .ok_or_else(|| FormatError::Invalid(format!("{name}: not a WAL file name")))?;
    let mut f =
        std::fs::File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e))?;
    if let WalFile::Segment { .. } = kind {
        let mut page = vec![0u8; 64];
        f.read_exact(&mut page)
            .map_err(|e| FormatError::io(path.display().to_string(), e))?;
        let (sysid, seg_size) =
            wal::segment_header(&page).map_err(|e| FormatError::Invalid(format!("{name}: {e}")))?;
        wal::bind(repo, source, sysid, seg_size)?;
        std::io::Seek::rewind(&mut f)
            .map_err(|e| FormatError::io(path.display().to_string(), e))?;
    }
    let stored = repo.put_file(&wal::namespace(repo, source), &name, f)?;
    let warning = match kind {
        WalFile::History(t) => fork_of(repo, source, t),
        _ => None,
    };
    Ok(Pushed {
        name,
        stored,
        warning,
    })
}

/// The fork timeline `tli` makes, if its parent was archived past its switch point.
fn fork_of(repo: &Repository, source: &str, tli: u32) -> Option<String> {
    let seg = wal::segment_size(repo, source)
        .ok()
        .flatten()
        .unwrap_or(16 << 20);
    let a = Archive::load(repo, source, seg).ok()?;
    a.forks()
        .into_iter()
        .find(|f| f.timeline == tli)
        .map(|f| f.describe(source))
}

/// The files PostgreSQL marked ready for archiving (`archive_status/*.ready` beside
/// `path`), but `path` itself, in name order: what it will ask `archive_command` for next.
#[must_use]
pub fn ready_after(path: &Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(me)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(status) = std::fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = status
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            (n != me && wal::parse_name(&n, 256).is_some()).then_some(n)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect()
}
