//! Reading a snapshot's parts back, every blob verified, with the warnings passed on.

use std::io::Write;

use dbvault_core::restore::{restore_part_with, Batches};
use dbvault_core::{Part, Repository};

use crate::error::Result;
use crate::notice::{Notice, Notify};

/// Writes one part's bytes to `out`, passing its warnings on, in small batches shared with
/// the parts restored beside it: for outputs that hold memory of their own (a database
/// session, a loader), and wherever memory matters more than speed.
///
/// # Errors
/// Damage, storage and write errors, with their kinds.
pub fn write_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
) -> Result<()> {
    write_in(repo, part, out, Batches::Small, notify)
}

/// [`write_part`] for an output that holds nothing of its own (a file, a pipe): larger
/// batches, fewer hand-overs between the threads that open blobs and the one that writes.
///
/// # Errors
/// As [`write_part`].
pub fn stream_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
) -> Result<()> {
    write_in(repo, part, out, Batches::Large, notify)
}

fn write_in(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    batches: Batches,
    notify: Notify<'_>,
) -> Result<()> {
    let report = restore_part_with(repo, part, out, batches)?;
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
