//! The WAL archive of a physical source as a whole: which segments each base backup needs
//! to become consistent, how far recovery can go from it (following timeline switches
//! through history files), where a gap ends that window, and which files no kept base
//! backup needs any more.
//!
//! A history file `0000000N.history` lists timeline N's ancestors, one line each:
//! `parentTLI<TAB>switchpoint LSN<TAB>reason`. Recovery from a base backup on timeline A
//! follows the newest timeline whose ancestry holds A (`recovery_target_timeline =
//! 'latest'`, PostgreSQL's default): the segments of A up to the first switch point, then
//! those of the next timeline, and so on.

use std::collections::{BTreeMap, BTreeSet};

use dbvault_core::Repository;

use super::{parse_lsn, BaseBackup};
use crate::error::Result;
use crate::postgres::wal::{self, WalFile};

/// The archive's files, by kind.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    /// Segments per timeline, by number.
    pub segments: BTreeMap<u32, BTreeSet<u64>>,
    /// Each timeline's ancestors, oldest first: (parent timeline, switch point LSN).
    pub history: BTreeMap<u32, Vec<(u32, u64)>>,
    /// Every file name (segments, histories, backup histories, partial segments).
    pub names: Vec<String>,
    /// Segment size in bytes.
    pub segment_size: u64,
}

/// Why recovery from a base backup stops where it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The last segment recovery can replay, in order, from the backup's start.
    pub last: String,
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// The first segment missing while later ones exist (a gap: damage), if any.
    pub gap: Option<String>,
    /// Segments the backup needs to become consistent that are missing.
    pub missing_for_consistency: Vec<String>,
}

/// Parses a history file's text.
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = parse_lsn(f.next()?).ok()?;
            Some((tli, lsn))
        })
        .collect()
}

impl Archive {
    /// Reads the names (and the history files) of `source`'s archive.
    ///
    /// # Errors
    /// Storage and damage errors reading a history file.
    pub fn load(repo: &Repository, source: &str, segment_size: u64) -> Result<Archive> {
        let ns = wal::namespace(repo, source);
        let names = repo.file_names(&ns)?;
        let per_log = wal::segments_per_log(segment_size);
        let mut a = Archive {
            segment_size,
            ..Default::default()
        };
        for n in &names {
            match wal::parse_name(n, per_log) {
                Some(WalFile::Segment { timeline, number }) => {
                    a.segments.entry(timeline).or_default().insert(number);
                }
                Some(WalFile::History(t)) => {
                    let rec = repo.file(&ns, n)?;
                    let mut text = Vec::new();
                    dbvault_core::restore::restore_part(repo, &rec.part, &mut text)?;
                    a.history
                        .insert(t, parse_history(&String::from_utf8_lossy(&text)));
                }
                _ => {}
            }
        }
        a.names = names;
        Ok(a)
    }

    /// Segments per 4 GiB of WAL (the "log" of a segment name), for this segment size.
    pub fn per_log(&self) -> u64 {
        wal::segments_per_log(self.segment_size)
    }

    fn name(&self, tli: u32, n: u64) -> String {
        wal::segment_name(tli, n, self.per_log())
    }

    /// The newest timeline whose ancestry holds `tli` (or `tli` itself).
    pub fn latest_from(&self, tli: u32) -> u32 {
        self.history
            .iter()
            .filter(|(_, h)| h.iter().any(|(p, _)| *p == tli))
            .map(|(t, _)| *t)
            .chain([tli])
            .max()
            .unwrap_or(tli)
    }

    /// How far recovery can go from `b` following the newest timeline (see the module
    /// docs).
    ///
    /// # Errors
    /// A base backup whose record is malformed.
    pub fn window(&self, b: &BaseBackup) -> Result<Window> {
        self.window_to(b, self.latest_from(b.timeline))
    }

    /// How far recovery can go from `b` to timeline `end` (`b`'s own, or one descending
    /// from it).
    ///
    /// # Errors
    /// A base backup whose record is malformed.
    pub fn window_to(&self, b: &BaseBackup, end: u32) -> Result<Window> {
        let needed = super::segments(b)?;
        let per_log = self.per_log();
        let has = |t: u32, n: u64| self.segments.get(&t).is_some_and(|s| s.contains(&n));
        let missing_for_consistency: Vec<String> = needed
            .iter()
            .filter(|s| {
                !matches!(wal::parse_name(s, per_log), Some(WalFile::Segment { timeline, number }) if has(timeline, number))
            })
            .cloned()
            .collect();
        let Some(WalFile::Segment { number: start, .. }) = wal::parse_name(&b.start_wal, per_log)
        else {
            return Err(crate::error::FormatError::Invalid(format!(
                "base backup starts at {:?}, not a segment",
                b.start_wal
            )));
        };
        // The hops: (timeline, the first segment of the next timeline) along the ancestry
        // of the newest timeline, from the backup's own timeline on.
        let mut hops: Vec<(u32, Option<u64>)> = Vec::new();
        if let (true, Some(h)) = (end != b.timeline, self.history.get(&end)) {
            let from = h.iter().position(|(p, _)| *p == b.timeline).unwrap_or(0);
            for (p, sw) in h.iter().skip(from) {
                hops.push((*p, Some(sw / self.segment_size)));
            }
        }
        hops.push((end, None));
        // Only the timelines on the way count as "later" (another branch's segments do not
        // make the end of this one a gap).
        let on_way: Vec<u32> = hops.iter().map(|(t, _)| *t).collect();
        let mut n = start;
        let mut last: Option<(u32, u64)> = None;
        let mut gap = None;
        for (tli, until) in hops {
            loop {
                if until.is_some_and(|u| n >= u) {
                    break;
                }
                if has(tli, n) {
                    last = Some((tli, n));
                    n += 1;
                    continue;
                }
                // The first missing one: a gap when anything later exists on the way.
                let later = self.segments.iter().any(|(t, s)| {
                    *t >= tli && on_way.contains(t) && s.range(n + 1..).next().is_some()
                });
                if later || until.is_some() {
                    gap = Some(self.name(tli, n));
                }
                break;
            }
            if gap.is_some() || until.is_none_or(|u| n < u) {
                break;
            }
        }
        let (tli, l) = last.unwrap_or((b.timeline, start.saturating_sub(1)));
        Ok(Window {
            last: self.name(tli, l),
            timeline: tli,
            gap,
            missing_for_consistency,
        })
    }

    /// The segments recovery from `b` replays, in order, to the end of the newest
    /// timeline it can reach (as [`Archive::window`] finds it), timeline switches
    /// included.
    ///
    /// # Errors
    /// A base backup whose record is malformed.
    pub fn replay_path(&self, b: &BaseBackup) -> Result<Vec<String>> {
        let w = self.window(b)?;
        let per_log = self.per_log();
        let number = |name: &str| match wal::parse_name(name, per_log) {
            Some(WalFile::Segment { timeline, number }) => Some((timeline, number)),
            _ => None,
        };
        let (Some((_, start)), Some((last_tli, last))) = (number(&b.start_wal), number(&w.last))
        else {
            return Ok(Vec::new());
        };
        // Each segment number's timeline: the newest on the way that has it (a timeline's
        // first segments are its parent's up to the switch).
        let mut way: Vec<(u32, u64)> = Vec::new();
        if let (true, Some(h)) = (last_tli != b.timeline, self.history.get(&last_tli)) {
            let from = h.iter().position(|(p, _)| *p == b.timeline).unwrap_or(0);
            for (p, sw) in h.iter().skip(from) {
                way.push((*p, sw / self.segment_size));
            }
        }
        let tli_of = |n: u64| {
            way.iter()
                .find(|(_, switch_seg)| n < *switch_seg)
                .map_or(last_tli, |(t, _)| *t)
        };
        Ok((start..=last).map(|n| self.name(tli_of(n), n)).collect())
    }

    /// `path` with the segments before it from `first` on put in front, when the archive
    /// has every one of them on `b`'s timeline (a catalog read shortly before the base
    /// backup began).
    pub fn extend_back(&self, b: &BaseBackup, first: u64, path: Vec<String>) -> Vec<String> {
        let per_log = self.per_log();
        let Some(WalFile::Segment { number: start, .. }) = wal::parse_name(&b.start_wal, per_log)
        else {
            return path;
        };
        let has = |n: u64| {
            self.segments
                .get(&b.timeline)
                .is_some_and(|s| s.contains(&n))
        };
        if first >= start || !(first..start).all(has) {
            return path;
        }
        (first..start)
            .map(|n| self.name(b.timeline, n))
            .chain(path)
            .collect()
    }

    /// The files no base backup in `kept` needs: segments (and backup history and partial
    /// files) before the oldest kept backup's first segment. History files are kept.
    pub fn unneeded(&self, kept: &[BaseBackup]) -> Vec<String> {
        let per_log = self.per_log();
        let Some(oldest) = kept
            .iter()
            .filter_map(|b| match wal::parse_name(&b.start_wal, per_log) {
                Some(WalFile::Segment { number, .. }) => Some(number),
                _ => None,
            })
            .min()
        else {
            return Vec::new();
        };
        self.names
            .iter()
            .filter(|n| match wal::parse_name(n, per_log) {
                Some(WalFile::Segment { number, .. }) => number < oldest,
                Some(WalFile::Other) => {
                    let base = &n[..24];
                    matches!(wal::parse_name(base, per_log), Some(WalFile::Segment { number, .. }) if number < oldest)
                }
                _ => false,
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SEG: u64 = 16 << 20;

    /// An archive of `segs` (timeline, segment number) and history files.
    pub(crate) fn archive(segs: &[(u32, u64)], history: &[(u32, Vec<(u32, u64)>)]) -> Archive {
        let mut a = Archive {
            segment_size: SEG,
            ..Default::default()
        };
        for (t, n) in segs {
            a.segments.entry(*t).or_default().insert(*n);
            a.names.push(wal::segment_name(*t, *n, 256));
        }
        for (t, h) in history {
            a.history.insert(*t, h.clone());
            a.names.push(format!("{t:08X}.history"));
        }
        a.names.sort();
        a
    }

    fn base(tli: u32, start: u64, stop: u64) -> BaseBackup {
        BaseBackup {
            timeline: tli,
            start_wal: wal::segment_name(tli, start, 256),
            stop_wal: wal::segment_name(tli, stop, 256),
            segment_size: SEG,
            ..Default::default()
        }
    }

    #[test]
    fn the_window_follows_timelines_and_a_gap_ends_it() {
        // Timeline 1: 2..=6; promoted at segment 5 to timeline 2: 5..=8.
        let a = archive(
            &[
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (2, 5),
                (2, 6),
                (2, 7),
                (2, 8),
            ],
            &[(2, vec![(1, 5 * SEG + 100)])],
        );
        let w = a.window(&base(1, 2, 3)).expect("window");
        assert_eq!(w.last, "000000020000000000000008");
        assert_eq!((w.timeline, w.gap.clone()), (2, None));
        assert!(w.missing_for_consistency.is_empty());
        // A hole on timeline 1 before the switch: the window ends there, named.
        let holed = archive(
            &[(1, 2), (1, 4), (1, 5), (2, 5), (2, 6)],
            &[(2, vec![(1, 5 * SEG + 100)])],
        );
        let w = holed.window(&base(1, 2, 2)).expect("window");
        assert_eq!(w.gap.as_deref(), Some("000000010000000000000003"));
        assert_eq!(w.last, "000000010000000000000002");
        // The end of the archive is no gap; a missing consistency segment is named.
        let short = archive(&[(1, 2)], &[]);
        let w = short.window(&base(1, 2, 3)).expect("window");
        assert_eq!(w.gap, None);
        assert_eq!(w.missing_for_consistency, vec!["000000010000000000000003"]);
    }

    #[test]
    fn only_what_no_kept_backup_needs_is_unneeded() {
        let mut a = archive(
            &[(1, 1), (1, 2), (1, 3), (1, 4)],
            &[(2, vec![(1, 4 * SEG)])],
        );
        a.names
            .push("000000010000000000000001.00000028.backup".into());
        a.names.sort();
        let gone = a.unneeded(&[base(1, 3, 3), base(1, 4, 4)]);
        assert_eq!(
            gone,
            vec![
                "000000010000000000000001",
                "000000010000000000000001.00000028.backup",
                "000000010000000000000002"
            ]
        );
        assert!(a.unneeded(&[]).is_empty());
    }
}
