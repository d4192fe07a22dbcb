//! PostgreSQL WAL archiving into a repository: segment arithmetic and names, the storage
//! layout, and `restore_command = 'dbvault wal-fetch %f %p'`, as library functions (the
//! push, which also looks at the archive's timelines, is `physical::push`).
//!
//! Each WAL file (segment, timeline history, backup history, partial segment) is a file
//! record ([`dbvault_core::files`]) in namespace `pgwal-<h>`, where `<h>` is a keyed hash of
//! the source name (so a name never shows in the store's paths). A push returns only once
//! the data and the record are durably stored, so PostgreSQL (which retries a failed
//! `archive_command` forever) never loses a segment; the same file pushed again with the
//! same bytes succeeds, with other bytes fails loudly and keeps the stored one.
//!
//! A source is bound to one cluster: its first segment records the cluster's system
//! identifier (from the segment's long page header) as a marker file
//! `system-identifier-<id>` in namespace `pgwal-<h>.cluster`; a segment of another cluster
//! pushed under that name is refused.

use std::path::Path;

use dbvault_core::Repository;

use crate::error::{FormatError, Result};

/// `wal-fetch`'s exit status when the archive answers that it does not have the file:
/// PostgreSQL takes it as the end of the archive (and, past the target, ends recovery).
pub const FETCH_MISSING: u8 = 1;
/// `wal-fetch`'s exit status for every other failure (store unreachable, damage, wrong
/// passphrase, a lock not had, a bad command line): above 125, which PostgreSQL treats as
/// fatal, so the server stops instead of ending recovery early and promoting with part of
/// the archive replayed. Started again once the cause is fixed, it carries on.
pub const FETCH_FAILED: u8 = 255;

/// XLogPageHeaderData flag: the page has the long header (first page of a segment).
const XLP_LONG_HEADER: u16 = 0x0002;

/// What a WAL file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a segment of timeline T.
    Segment {
        /// Timeline.
        timeline: u32,
        /// Segment number across the timeline (log * segments-per-log + seg).
        number: u64,
    },
    /// `TTTTTTTT.history`.
    History(u32),
    /// `…​.backup` (a base backup's history file) or `….partial` (the last segment of an
    /// old timeline at promotion): kept, never needed for continuity.
    Other,
}

fn hex_u32(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// The one piece of WAL segment arithmetic everything else uses: how many segments of
/// `segment_size` bytes make one "log" (the middle 8 hex digits of a segment name, 4 GiB
/// of WAL): 256 for 16 MiB segments, 64 for 64 MiB.
pub fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size.max(1)
}

/// The LSN where segment `number` (counted from 0/0) starts.
pub fn segment_start(number: u64, segment_size: u64) -> u64 {
    number * segment_size
}

/// Whether `name` is a WAL segment's name (not a history, backup or partial file).
pub fn is_segment(name: &str) -> bool {
    matches!(parse_name(name, 1), Some(WalFile::Segment { .. }))
}

/// Parses a WAL file name (`000000010000000A000000FF`, `00000002.history`, …) for
/// segments of `segments_per_log` (256 for 16 MiB segments).
pub fn parse_name(name: &str, segments_per_log: u64) -> Option<WalFile> {
    if let Some(t) = name.strip_suffix(".history") {
        return hex_u32(t).map(WalFile::History);
    }
    if name.ends_with(".backup") || name.ends_with(".partial") {
        return (name.len() > 24 && name[..24].bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(WalFile::Other);
    }
    if name.len() != 24 {
        return None;
    }
    let (t, l, s) = (
        hex_u32(&name[..8])?,
        hex_u32(&name[8..16])?,
        hex_u32(&name[16..])?,
    );
    Some(WalFile::Segment {
        timeline: t,
        number: u64::from(l) * segments_per_log + u64::from(s),
    })
}

/// The name of segment `number` of `timeline`.
pub fn segment_name(timeline: u32, number: u64, segments_per_log: u64) -> String {
    format!(
        "{timeline:08X}{:08X}{:08X}",
        number / segments_per_log,
        number % segments_per_log
    )
}

/// The system identifier and segment size a segment's first page names.
///
/// # Errors
/// [`FormatError::Invalid`] when the page is not the start of a WAL segment.
pub fn segment_header(page: &[u8]) -> Result<(u64, u32)> {
    let u16_at = |o: usize| page.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        page.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        page.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let bad = || FormatError::Invalid("not a PostgreSQL WAL segment (no long page header)".into());
    let info = u16_at(2).ok_or_else(bad)?;
    if info & XLP_LONG_HEADER == 0 {
        return Err(bad());
    }
    let sysid = u64_at(24).ok_or_else(bad)?;
    let seg_size = u32_at(32).ok_or_else(bad)?;
    if !seg_size.is_power_of_two() || seg_size < (1 << 20) {
        return Err(bad());
    }
    Ok((sysid, seg_size))
}

/// The namespace of a source's WAL (see the module docs).
pub fn namespace(repo: &Repository, source: &str) -> String {
    let h = repo.keys().blob_id(format!("pgwal {source}").as_bytes());
    format!("pgwal-{}", &h.to_hex()[..24])
}

fn cluster_namespace(repo: &Repository, source: &str) -> String {
    format!("{}.cluster", namespace(repo, source))
}

/// The system identifier the source is bound to, if any.
///
/// # Errors
/// Storage errors.
pub fn bound_cluster(repo: &Repository, source: &str) -> Result<Option<u64>> {
    Ok(repo
        .file_names(&cluster_namespace(repo, source))?
        .iter()
        .filter_map(|n| n.strip_prefix("system-identifier-")?.parse().ok())
        .min())
}

/// The namespace that says which source names archive which cluster: a file
/// `<system identifier>-<source namespace hash>` per source, whose sealed record holds the
/// source's name (in its part's meta: read without the index, which a base backup's
/// repository handle loaded before the server archived anything), so a base backup can
/// name the source its server archives under.
const CLUSTERS: &str = "pgwal-clusters";

/// The names of the sources whose archives hold WAL of cluster `sysid`.
///
/// # Errors
/// Storage and damage errors.
pub fn sources_of_cluster(repo: &Repository, sysid: u64) -> Result<Vec<String>> {
    let prefix = format!("{sysid}-");
    let mut out = Vec::new();
    for n in repo.file_names(CLUSTERS)? {
        if n.starts_with(&prefix) {
            let rec = repo.file(CLUSTERS, &n)?;
            if let Some(name) = rec.part.meta.get("source").and_then(|v| v.as_str()) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// The WAL segment size the source's segments have (recorded with its first segment by
/// this version on), if known.
///
/// # Errors
/// Storage errors.
pub fn segment_size(repo: &Repository, source: &str) -> Result<Option<u64>> {
    Ok(repo
        .file_names(&cluster_namespace(repo, source))?
        .iter()
        .find_map(|n| n.strip_prefix("segment-size-")?.parse().ok()))
}

/// Records a source's segment size and its entry in [`CLUSTERS`] (the size marker last:
/// it says both are there).
fn register(repo: &Repository, source: &str, sysid: u64, seg_size: u32) -> Result<()> {
    let ns = namespace(repo, source);
    let entry = format!("{sysid}-{}", ns.trim_start_matches("pgwal-"));
    let meta = [("source".to_string(), serde_json::Value::from(source))].into();
    repo.put_file_with(CLUSTERS, &entry, std::io::empty(), meta)?;
    repo.put_file(
        &cluster_namespace(repo, source),
        &format!("segment-size-{seg_size}"),
        std::io::empty(),
    )?;
    Ok(())
}

/// Binds `source` to cluster `sysid` on its first segment, refusing another cluster's,
/// and registers it (once; one listing per push otherwise).
///
/// # Errors
/// [`FormatError::Invalid`] when the source archives another cluster; storage errors.
pub fn bind(repo: &Repository, source: &str, sysid: u64, seg_size: u32) -> Result<()> {
    let names = repo.file_names(&cluster_namespace(repo, source))?;
    let bound = names
        .iter()
        .filter_map(|n| n.strip_prefix("system-identifier-")?.parse::<u64>().ok())
        .min();
    match bound {
        Some(b) if b != sysid => Err(FormatError::Invalid(format!(
            "this segment is of the cluster with system identifier {sysid}, but source {source:?} archives the cluster {b}: refused (give this cluster another --name)"
        ))),
        Some(_) if names.iter().any(|n| n.starts_with("segment-size-")) => Ok(()),
        Some(_) => register(repo, source, sysid, seg_size),
        None => {
            let marker = format!("system-identifier-{sysid}");
            repo.put_file(&cluster_namespace(repo, source), &marker, std::io::empty())?;
            match bound_cluster(repo, source)? {
                // Two clusters raced for a new name: the smaller identifier keeps it.
                Some(b) if b != sysid => bind(repo, source, sysid, seg_size),
                _ => register(repo, source, sysid, seg_size),
            }
        }
    }
}

/// Writes WAL file `name` of `source` to `dest` (`restore_command`), through a temporary
/// file beside it renamed into place, so PostgreSQL never reads a partial file. Returns
/// false when the archive does not have it (PostgreSQL asks for files that may not exist).
///
/// # Errors
/// Damage and storage errors; writing `dest`.
pub fn fetch(repo: &Repository, source: &str, name: &str, dest: &Path) -> Result<bool> {
    let rec = match repo.file(&namespace(repo, source), name) {
        Ok(r) => r,
        Err(dbvault_core::Error::NotFound { .. }) => return Ok(false),
        Err(dbvault_core::Error::Invalid(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    index_covers(repo, &rec.part)?;
    write_beside(dest, |f| {
        dbvault_core::restore::restore_part(repo, &rec.part, f)?;
        Ok(())
    })?;
    Ok(true)
}

/// Reloads the repository's index when it was loaded before `part` was stored: a
/// long-running reader (a recovery's relay, a copy) meets files archived after it began,
/// whose blobs its index does not know yet although they are durably stored.
///
/// # Errors
/// Reading the index.
pub fn index_covers(repo: &Repository, part: &dbvault_core::Part) -> Result<()> {
    let index = repo.index()?;
    if part.lists.iter().any(|id| !index.contains(id)) {
        repo.invalidate_index();
    }
    Ok(())
}

/// Writes `dest` through a temporary file beside it, synced, then renamed into place: a
/// reader never sees a partial file.
fn write_beside(dest: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |e| FormatError::io(dest.display().to_string(), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".dbvault-wal-")
        .tempfile_in(dir)
        .map_err(io)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(dest).map_err(|e| io(e.error))?;
    Ok(())
}

/// The segment names after `name` on its timeline, `count` of them (none for a file that
/// is not a segment).
pub fn following(name: &str, count: u64, segments_per_log: u64) -> Vec<String> {
    match parse_name(name, segments_per_log) {
        Some(WalFile::Segment { timeline, number }) => (1..=count)
            .map(|k| segment_name(timeline, number + k, segments_per_log))
            .collect(),
        _ => Vec::new(),
    }
}

/// The `count` segment names after `name` in `source`'s archive, with the segment size
/// recorded for the source (16 MiB when none is).
///
/// # Errors
/// Storage errors.
pub fn names_after(repo: &Repository, source: &str, name: &str, count: u64) -> Result<Vec<String>> {
    let size = segment_size(repo, source)?.unwrap_or(16 << 20);
    Ok(following(name, count, segments_per_log(size)))
}

/// Fetches `names` of `source` into `spool` (each through a temporary file renamed into
/// place, so a file there is always whole), in order, stopping at the first the archive
/// does not have; files already there are skipped. Returns how many were fetched.
///
/// # Errors
/// Damage and storage errors; writing the spool.
pub fn prefetch(repo: &Repository, source: &str, names: &[String], spool: &Path) -> Result<usize> {
    std::fs::create_dir_all(spool).map_err(|e| FormatError::io(spool.display().to_string(), e))?;
    let mut n = 0;
    for name in names {
        let dest = spool.join(name);
        if dest.exists() {
            continue;
        }
        if !fetch(repo, source, name, &dest)? {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// Moves a prefetched `name` from `spool` to `dest` when it is there and was fetched
/// within the hour (a copy through a temporary file beside `dest` when they are on
/// different file systems). Spooled files before `name` are dropped: recovery has gone
/// past them.
///
/// # Errors
/// Writing `dest`.
pub fn take_prefetched(spool: &Path, name: &str, dest: &Path) -> Result<bool> {
    let src = spool.join(name);
    if let Ok(rd) = std::fs::read_dir(spool) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.len() == 24 && n.as_str() < name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if !src.exists() {
        return Ok(false);
    }
    // A file left by an earlier recovery (an hour is far longer than any wait between two
    // segments of one) is not trusted: it is fetched again from the repository.
    let fresh = std::fs::metadata(&src)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 3600));
    if !fresh {
        let _ = std::fs::remove_file(&src);
        return Ok(false);
    }
    let io = |e| FormatError::io(dest.display().to_string(), e);
    if std::fs::rename(&src, dest).is_ok() {
        return Ok(true);
    }
    write_beside(dest, |out| {
        let mut f = std::fs::File::open(&src).map_err(io)?;
        std::io::copy(&mut f, out).map_err(io)?;
        Ok(())
    })?;
    let _ = std::fs::remove_file(&src);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_parse_and_print() {
        assert_eq!(
            parse_name("000000010000000A000000FF", 256),
            Some(WalFile::Segment {
                timeline: 1,
                number: 10 * 256 + 255
            })
        );
        assert_eq!(
            segment_name(1, 10 * 256 + 255, 256),
            "000000010000000A000000FF"
        );
        assert_eq!(
            parse_name("00000002.history", 256),
            Some(WalFile::History(2))
        );
        assert_eq!(
            parse_name("000000010000000000000002.00000028.backup", 256),
            Some(WalFile::Other)
        );
        assert_eq!(
            parse_name("000000010000000000000002.partial", 256),
            Some(WalFile::Other)
        );
        for bad in [
            "",
            "x.history",
            "00000001000000000000000",
            "../../etc/passwd",
        ] {
            assert_eq!(parse_name(bad, 256), None, "{bad}");
        }
    }

    #[test]
    fn the_long_page_header_names_the_cluster() {
        let mut page = vec![0u8; 64];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        page[24..32].copy_from_slice(&7_300_000_000_000_000_001u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        assert_eq!(
            segment_header(&page).expect("header"),
            (7_300_000_000_000_000_001, 16 << 20)
        );
        page[2] = 0;
        assert!(segment_header(&page).is_err());
    }
}
