//! Reading a snapshot's parts back, every blob verified, with the warnings passed on.

use std::io::Write;

use dbvault_core::restore::restore_part;
use dbvault_core::{Part, Repository};

use crate::error::Result;
use crate::notice::{Notice, Notify};

/// Writes one part's bytes to `out`, passing its warnings on.
///
/// # Errors
/// Damage, storage and write errors, with their kinds.
pub fn write_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
) -> Result<()> {
    let report = restore_part(repo, part, out)?;
    for w in report.warnings {
        notify(Notice::Warning(w));
    }
    Ok(())
}

/// One part's bytes.
///
/// # Errors
/// As [`write_part`].
pub fn part_bytes(repo: &Repository, part: &Part, notify: Notify<'_>) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(part.size as usize);
    write_part(repo, part, &mut v, notify)?;
    Ok(v)
}
