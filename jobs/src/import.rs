//! `dbvault import`: the archive a `pg_dump | gzip` runbook left (`backup_20250115_143022.sql.gz`,
//! `shop-2025-01-15.dump`, …) backed up in date order, each snapshot with its own date, so
//! retention and `latest` treat the old nights as nights and each one deduplicates against
//! the one before.
//!
//! A file's date comes from the archive's header (a custom-format archive records when
//! pg_dump ran), else from its name (`YYYYMMDD[_HHMM[SS]]` or `YYYY-MM-DD[_HH-MM[-SS]]`,
//! local time), else from its modification time. Its snapshot's name is `--name`, else the
//! file name without the date and the extensions (`backup`, `shop`). A file whose name and
//! date a snapshot already has is skipped, so an import can be run again after a failure.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, TimeZone};
use dbvault_core::backup::{BackupSummary, SnapshotMeta};
use dbvault_core::{Repository, SourceInfo};
use dbvault_formats::compressed::{self, Compression};
use dbvault_formats::StreamFormat;
use serde::Serialize;

use crate::events::Events;

/// What to import.
#[derive(Clone, Debug, Default)]
pub struct ImportRequest {
    /// Files, and folders whose files (not sub-folders, not hidden files) are imported.
    pub paths: Vec<PathBuf>,
    /// One snapshot name for every file (default: from each file's name).
    pub name: Option<String>,
    /// Tags for every snapshot.
    pub tags: Vec<String>,
    /// Say what would be imported; store nothing.
    pub dry_run: bool,
}

/// Where a file's date came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DateFrom {
    /// The custom-format archive's header.
    Header,
    /// The file's name.
    Name,
    /// The file's modification time.
    Mtime,
}

/// One file's import.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    /// The file.
    pub file: PathBuf,
    /// The snapshot's name.
    pub name: String,
    /// The snapshot's time.
    pub time: DateTime<FixedOffset>,
    /// Where the time came from.
    pub date_from: DateFrom,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to one file.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored as this snapshot.
    Saved {
        /// The snapshot's id.
        id: String,
        /// Bytes read (the dump, decompressed).
        bytes_in: u64,
        /// Bytes the repository grew by.
        bytes_added: u64,
        /// Caveats and facts (the compression, how it is given back).
        notes: Vec<String>,
    },
    /// A snapshot of this name and time exists already (its id).
    AlreadyImported(String),
    /// Would be imported (`dry_run`).
    Planned,
    /// Not a dump (a stray file in the folder): left alone, not a failure.
    Skipped(String),
    /// It failed; no snapshot recorded for it.
    Failed(String),
}

/// Imports the files of `req` in date order. Every file is tried; the result says which
/// failed.
///
/// # Errors
/// A path that does not exist or a folder without files (nothing is imported then).
pub fn import(ev: &dyn Events, repo: &Repository, req: &ImportRequest) -> Result<Vec<Imported>> {
    let mut plan = Vec::new();
    for f in files(&req.paths)? {
        let (time, date_from) = dated(&f)?;
        let name = req.name.clone().unwrap_or_else(|| name_of(&f));
        plan.push((time, f, name, date_from));
    }
    plan.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let existing = repo.snapshots()?;
    let mut out = Vec::new();
    for (time, file, name, date_from) in plan {
        let there = existing
            .iter()
            .find(|(_, s)| s.name == name && s.time.timestamp() == time.timestamp());
        let dump = compressed::dump_format_of(&file)?;
        let outcome = if dump.is_none() {
            Outcome::Skipped(
                "not a pg_dump dump or custom-format archive (plain, gzip or zstd compressed)"
                    .into(),
            )
        } else if let Some((id, _)) = there {
            Outcome::AlreadyImported(id.to_string())
        } else if req.dry_run {
            Outcome::Planned
        } else {
            match import_file(ev, repo, &file, &name, time, &req.tags) {
                Ok(s) => Outcome::Saved {
                    id: s.id.to_hex(),
                    bytes_in: s.snapshot.bytes_in,
                    bytes_added: s.snapshot.bytes_added,
                    notes: s.snapshot.source.notes,
                },
                Err(e) => Outcome::Failed(crate::one_line(&e)),
            }
        };
        out.push(Imported {
            file,
            name,
            time,
            date_from,
            outcome,
        });
    }
    Ok(out)
}

fn import_file(
    ev: &dyn Events,
    repo: &Repository,
    path: &Path,
    name: &str,
    time: DateTime<FixedOffset>,
    tags: &[String],
) -> Result<BackupSummary> {
    let shown = path.display().to_string();
    let mut f = File::open(path).with_context(|| format!("opening {shown}"))?;
    let mut head = Vec::with_capacity(100);
    (&mut f).take(100).read_to_end(&mut head)?;
    if head.is_empty() {
        bail!("{shown} is empty (0 bytes): not a dump; nothing recorded");
    }
    if head.starts_with(b"SQLite format 3\0") {
        bail!("{shown} is an SQLite database: back it up with `dbvault backup sqlite:{shown}`");
    }
    let b = crate::backup::start(repo, name)?;
    // The bytes counted are the dump's: the file's size is its total only uncompressed.
    let size = std::fs::metadata(path).map(|m| m.len()).ok();
    let total = size.filter(|_| Compression::detect(&head).is_none());
    let progress = ev.step_of(&format!("importing {shown}"), b.progress(), total);
    let r = match Compression::detect(&head) {
        Some(c) => compressed::backup_file_as_detected(&b, c, path).map_err(anyhow::Error::from),
        None => {
            let fmt = StreamFormat::detect(&head);
            let f = File::open(path).with_context(|| format!("opening {shown}"))?;
            dbvault_formats::backup_stream(&b, fmt, BufReader::with_capacity(1 << 20, f))
                .map(|info| (fmt, info))
                .map_err(anyhow::Error::from)
        }
    };
    progress.finish();
    let (fmt, info) = match r {
        Ok(v) => v,
        Err(e) => {
            b.abort();
            return Err(e.context("no snapshot recorded"));
        }
    };
    let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(b.finish(SnapshotMeta {
        time,
        name: name.to_string(),
        tags: tags.to_vec(),
        source: SourceInfo {
            kind: "file".into(),
            identity: identity.display().to_string(),
            format: fmt.name().into(),
            server_version: info.server_version,
            notes: info.notes,
        },
    })?)
}

/// The files `paths` name: files as given, folders' visible files sorted by name.
///
/// # Errors
/// A path that does not exist; nothing to import.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let m = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if m.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect();
            inside.sort();
            out.extend(inside);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no files to import in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// A file's date: the archive header's, the name's, or the modification time.
///
/// # Errors
/// The file cannot be read.
pub fn dated(path: &Path) -> Result<(DateTime<FixedOffset>, DateFrom)> {
    if let Some(t) = header_time(path)? {
        return Ok((t, DateFrom::Header));
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((t, _)) = date_in_name(&file_name) {
        return Ok((t, DateFrom::Name));
    }
    let m = std::fs::metadata(path)?.modified()?;
    Ok((DateTime::<Local>::from(m).fixed_offset(), DateFrom::Mtime))
}

/// When a custom-format archive (plain or compressed) says pg_dump ran.
fn header_time(path: &Path) -> Result<Option<DateTime<FixedOffset>>> {
    let Some((y, mo, d, h, mi, s)) = compressed::archive_created(path)? else {
        return Ok(None);
    };
    Ok(NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)
        .and_then(|day| day.and_hms_opt(h as u32, mi as u32, s as u32))
        .and_then(|t| Local.from_local_datetime(&t).earliest())
        .map(|t| t.fixed_offset()))
}

/// The date and time in a file name (local time), and the byte range it took.
#[must_use]
pub fn date_in_name(name: &str) -> Option<(DateTime<FixedOffset>, std::ops::Range<usize>)> {
    let b = name.as_bytes();
    for start in 0..b.len() {
        if start > 0 && b[start - 1].is_ascii_digit() {
            continue;
        }
        if let Some((t, end)) = date_at(b, start) {
            return Some((t, start..end));
        }
    }
    None
}

/// A date starting at `i`: `YYYYMMDD` or `YYYY-MM-DD`, then optionally a separator and
/// `HHMM[SS]` or `HH-MM[-SS]` / `HH:MM[:SS]`.
fn date_at(b: &[u8], i: usize) -> Option<(DateTime<FixedOffset>, usize)> {
    let digits = |at: usize, n: usize| -> Option<u32> {
        let s = b.get(at..at + n)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(s).ok()?.parse().ok())?
    };
    let sep = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    let y = digits(i, 4)?;
    let dashed = sep(i + 4, b"-");
    let mut at = i + 4 + usize::from(dashed);
    let mo = digits(at, 2)?;
    at += 2 + usize::from(dashed);
    if dashed && !sep(at - 1, b"-") {
        return None;
    }
    let d = digits(at, 2)?;
    at += 2;
    if b.get(at).is_some_and(u8::is_ascii_digit) || !(1990..=2100).contains(&y) {
        return None;
    }
    let day = NaiveDate::from_ymd_opt(y as i32, mo, d)?;
    let mut end = at;
    let mut hms = (0, 0, 0);
    if sep(at, b"_T -.") {
        let t = at + 1;
        let tsep = sep(t + 2, b"-:.");
        let step = 2 + usize::from(tsep);
        if let (Some(h), Some(mi)) = (digits(t, 2), digits(t + step, 2)) {
            hms = (h, mi, 0);
            end = t + step + 2;
            let ssep = usize::from(tsep && sep(end, b"-:."));
            if (!tsep || ssep == 1) && digits(end + ssep, 2).is_some() {
                hms.2 = digits(end + ssep, 2)?;
                end += ssep + 2;
            }
        }
    }
    let t = day.and_hms_opt(hms.0, hms.1, hms.2)?;
    let local = Local.from_local_datetime(&t).earliest()?;
    Some((local.fixed_offset(), end))
}

/// The snapshot name a file gives: its name without the date and the dump extensions.
#[must_use]
pub fn name_of(path: &Path) -> String {
    let mut n = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let lower = n.to_ascii_lowercase();
        let ext = [
            "gz", "zst", "zstd", "sql", "dump", "pgdump", "backup", "bak", "custom", "out",
        ]
        .into_iter()
        .find(|e| lower.ends_with(&format!(".{e}")));
        match ext {
            Some(e) => n.truncate(n.len() - e.len() - 1),
            None => break,
        }
    }
    if let Some((_, r)) = date_in_name(&n) {
        n.replace_range(r, "");
    }
    let n = n
        .trim_matches(|c: char| "_-. ".contains(c))
        .replace("__", "_");
    if n.is_empty() {
        "import".into()
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names_from_file_names() {
        let at = |n: &str| date_in_name(n).map(|(t, _)| t.naive_local().to_string());
        assert_eq!(
            at("backup_20250115_143022.sql.gz").as_deref(),
            Some("2025-01-15 14:30:22")
        );
        assert_eq!(
            at("shop-2025-01-15.dump").as_deref(),
            Some("2025-01-15 00:00:00")
        );
        assert_eq!(
            at("shop-2025-01-15_02-15.sql").as_deref(),
            Some("2025-01-15 02:15:00")
        );
        assert_eq!(
            at("db_2025-01-15T02:15:09.sql").as_deref(),
            Some("2025-01-15 02:15:09")
        );
        assert_eq!(at("x_20251301.sql"), None);
        assert_eq!(at("v12345678901.sql"), None);
        assert_eq!(
            name_of(Path::new("/a/backup_20250115_143022.sql.gz")),
            "backup"
        );
        assert_eq!(name_of(Path::new("shop-2025-01-15.dump.zst")), "shop");
        assert_eq!(name_of(Path::new("20250115.sql")), "import");
    }
}
