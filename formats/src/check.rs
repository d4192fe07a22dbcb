//! The repository's check with each database's own added: the one function behind
//! `dbvault check` and the check a configured `run` schedules.

use dbvault_core::check::{CheckReport, ReadData};
use dbvault_core::Repository;

use crate::error::Result;

/// Checks the repository ([`dbvault_core::check::check`]) and the WAL archives of its
/// physical sources ([`crate::postgres::physical::health::problems`]).
///
/// # Errors
/// The check could not be done (storage errors listing the repository); damage is in the
/// report.
pub fn check(repo: &Repository, read: ReadData, progress: &dyn Fn(&str)) -> Result<CheckReport> {
    let mut r = dbvault_core::check::check(repo, read, progress)?;
    let (snaps, _) = repo.readable_snapshots()?;
    r.problems
        .extend(crate::postgres::physical::health::problems(repo, &snaps));
    r.ok = r.problems.is_empty();
    Ok(r)
}
