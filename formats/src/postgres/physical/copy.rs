//! `copy` of physical sources: a base backup is worth nothing without the WAL after it,
//! so the WAL archive goes along, before the base backups (the same write order as a
//! backup's: a base backup is recorded only once the WAL it needs is stored). Each run
//! copies what the target lacks, so the nightly copy carries the archive forward.

use std::collections::BTreeSet;

use dbvault_core::files::Stored;
use dbvault_core::{Id, Repository, Snapshot};

use super::health::by_source;
use crate::error::{FormatError, Result};
use crate::postgres::wal::{self, WalFile};

/// What was copied of one source's archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalCopied {
    /// The WAL source name.
    pub source: String,
    /// Files copied now.
    pub files: usize,
    /// Bytes added to the target.
    pub bytes_added: u64,
}

/// Copies into `to` the WAL of the physical sources among `which` (snapshots of `from`):
/// every history file, and every segment (and partial or backup history file) from the
/// oldest base backup of that source in `which` or already in `to` on, that `to` lacks.
/// Each file keeps the time it was archived.
///
/// # Errors
/// The target's source archiving another cluster; damage in `from` (a file is restored
/// whole and verified before it is stored, so nothing partial is copied); storage errors.
pub fn copy_wal(
    from: &Repository,
    to: &Repository,
    which: &[(Id, Snapshot)],
) -> Result<Vec<WalCopied>> {
    let (held, _) = to.readable_snapshots()?;
    let held = by_source(&held);
    let mut out = Vec::new();
    for (source, list) in by_source(which) {
        let seg = list.first().map_or(16 << 20, |(_, b, _)| b.segment_size);
        let per_log = crate::postgres::wal::segments_per_log(seg);
        let number = |name: &str| match wal::parse_name(name.get(..24).unwrap_or(""), per_log) {
            Some(WalFile::Segment { number, .. }) => Some(number),
            _ => None,
        };
        let oldest = list
            .iter()
            .chain(held.get(&source).into_iter().flatten())
            .filter_map(|(_, b, _)| number(&b.start_wal))
            .min()
            .unwrap_or(0);
        if let Some(sysid) = wal::bound_cluster(from, &source)? {
            wal::bind(to, &source, sysid, u32::try_from(seg).unwrap_or(16 << 20))?;
        }
        let (src_ns, dst_ns) = (wal::namespace(from, &source), wal::namespace(to, &source));
        let have: BTreeSet<String> = to.file_names(&dst_ns)?.into_iter().collect();
        let mut done = WalCopied {
            source: source.clone(),
            ..Default::default()
        };
        for name in from.file_names(&src_ns)? {
            let wanted = match wal::parse_name(&name, per_log) {
                Some(WalFile::History(_)) => true,
                Some(_) => number(&name).is_some_and(|n| n >= oldest),
                None => false,
            };
            if !wanted || have.contains(&name) {
                continue;
            }
            if let Stored::New { bytes_added } = copy_file(from, &src_ns, to, &dst_ns, &name)? {
                done.bytes_added += bytes_added;
            }
            done.files += 1;
        }
        out.push(done);
    }
    Ok(out)
}

/// One file, through a temporary file: restored and verified whole before the target
/// stores it, so a failure midway never records a truncated file there.
fn copy_file(
    from: &Repository,
    src_ns: &str,
    to: &Repository,
    dst_ns: &str,
    name: &str,
) -> Result<Stored> {
    let rec = from.file(src_ns, name)?;
    wal::index_covers(from, &rec.part)?;
    let io = |e| FormatError::io(format!("a temporary copy of WAL file {name}"), e);
    let mut tmp = tempfile::tempfile().map_err(io)?;
    dbvault_core::restore::restore_part(from, &rec.part, &mut tmp)?;
    std::io::Seek::rewind(&mut tmp).map_err(io)?;
    Ok(to.put_file_at(dst_ns, name, std::io::BufReader::new(tmp), rec.time)?)
}
