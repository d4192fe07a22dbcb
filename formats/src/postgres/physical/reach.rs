//! How far a recovery can go: a recovery the archive cannot complete is refused before
//! anything is restored, and each physical source's recovery window is described for
//! `snapshots`.

use chrono::{DateTime, FixedOffset};
use dbvault_core::{Id, Repository, Snapshot};

use super::archive::Archive;
use super::timeline::{Resolved, TimelineChoice};
use super::{parse_lsn, BaseBackup, FORMAT, PART};
use crate::error::{FormatError, Result};
use crate::postgres::wal::{self, WalFile};

/// Where a recovery is asked to stop.
#[derive(Clone, Debug, Default)]
pub struct Goal<'a> {
    /// `--target-time`.
    pub time: Option<DateTime<FixedOffset>>,
    /// `--target-lsn`.
    pub lsn: Option<&'a str>,
    /// `--target-timeline`.
    pub timeline: TimelineChoice,
}

fn text(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Refuses a recovery the archive cannot complete: WAL missing for the base backup to
/// become consistent, a gap before the goal (PostgreSQL would stop there and carry on as
/// if it were the end), a goal time after everything archived, or `latest` across two
/// servers' branches. Returns the timeline recovery follows.
///
/// # Errors
/// Each refusal above as [`FormatError::Invalid`], saying what to do instead; the archive
/// cannot be read.
pub fn reachable(repo: &Repository, b: &BaseBackup, goal: &Goal<'_>) -> Result<Resolved> {
    let arch = Archive::load(repo, &b.wal_source, b.segment_size)?;
    let resolved = arch.resolve(b, goal.timeline.clone(), &b.wal_source)?;
    let w = arch.window_to(b, resolved.timeline)?;
    if let Some(m) = w.missing_for_consistency.first() {
        return Err(FormatError::Invalid(format!(
            "the base backup needs WAL segment {m} to become consistent, and the archive of {:?} does not have it: restore an older base backup (`dbvault snapshots`)",
            b.wal_source
        )));
    }
    let ns = wal::namespace(repo, &b.wal_source);
    let last_time = repo.file(&ns, &w.last).map(|r| r.time).ok();
    let Some(gap) = &w.gap else {
        if let (Some(t), Some(lt)) = (goal.time, last_time) {
            if t > lt {
                return Err(FormatError::Invalid(format!(
                    "the archive of {:?} ends before {}: its newest WAL segment, {}, was archived {}, and the WAL that reaches the target is still in the server's pg_wal. On the server, run SELECT pg_switch_wal() (or wait for archive_timeout) and restore again; without a target, recovery replays everything archived",
                    b.wal_source,
                    text(&t),
                    w.last,
                    text(&lt)
                )));
            }
        }
        return Ok(resolved);
    };
    let before_gap = match (goal.time, goal.lsn) {
        (Some(t), _) => last_time.is_some_and(|lt| t <= lt),
        (_, Some(l)) => {
            let gap_start = match wal::parse_name(gap, arch.per_log()) {
                Some(WalFile::Segment { number, .. }) => wal::segment_start(number, b.segment_size),
                _ => 0,
            };
            parse_lsn(l).is_ok_and(|l| l < gap_start)
        }
        _ => false,
    };
    if !before_gap {
        return Err(FormatError::Invalid(format!(
            "WAL segment {gap} is missing from the archive of {:?}: recovery would stop at {} (archived {}) and the server would carry on from there; give a --target-time or --target-lsn before it to recover up to the gap",
            b.wal_source,
            w.last,
            last_time.map_or_else(|| "?".into(), |t| text(&t))
        )));
    }
    Ok(resolved)
}

/// A time as `recovery_target_time` reads it unambiguously: with its zone.
#[must_use]
pub fn recovery_time(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
}

/// What each physical source's archive lets recovery reach, one line each: from its
/// oldest base backup to the last segment archived without a gap, with forks and what the
/// oldest base backup lacks.
#[must_use]
pub fn windows(repo: &Repository, snaps: &[(Id, Snapshot)]) -> Vec<String> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&Snapshot>> = Default::default();
    for (_, s) in snaps.iter().filter(|(_, s)| s.source.format == FORMAT) {
        by_name.entry(&s.name).or_default().push(s);
    }
    let mut out = Vec::new();
    for (name, list) in by_name {
        let Some(oldest) = list.iter().min_by_key(|s| s.time) else {
            continue;
        };
        let b = match oldest.part(PART).map(BaseBackup::of) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                out.push(format!("{name}: {e}"));
                continue;
            }
            None => continue,
        };
        let line = (|| -> Result<String> {
            let a = Archive::load(repo, &b.wal_source, b.segment_size)?;
            let w = a.window(&b)?;
            let ns = wal::namespace(repo, &b.wal_source);
            let until = repo
                .file(&ns, &w.last)
                .map(|r| text(&r.time))
                .unwrap_or_else(|_| "?".into());
            let mut l = format!(
                "{name}: point-in-time recovery from {} to about {until} (WAL to {}, timeline {})",
                text(&oldest.time),
                w.last,
                w.timeline
            );
            if let Some(g) = &w.gap {
                l.push_str(&format!(
                    "; ends at a gap: segment {g} is missing (run `dbvault check`)"
                ));
            }
            for f in a.forks() {
                l.push_str(&format!("; {}", f.describe(name)));
            }
            if !w.missing_for_consistency.is_empty() {
                l.push_str(&format!(
                    "; the oldest base backup lacks {} to become consistent",
                    w.missing_for_consistency.join(", ")
                ));
            }
            Ok(l)
        })();
        out.push(line.unwrap_or_else(|e| format!("{name}: WAL archive unreadable: {e}")));
    }
    out
}
