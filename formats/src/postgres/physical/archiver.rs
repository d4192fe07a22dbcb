//! Is WAL archiving working? The server's own account (`pg_stat_archiver`, its WAL
//! position, `archive_timeout`) against the newest segment in the repository, judged by
//! [`assess`]: pushes failing, segments waiting to be archived longer than the server's
//! `archive_timeout` allows, or an `archive_command` that succeeds without reaching this
//! repository. An idle server that writes no WAL is not stalled, however old its newest
//! segment: only when the server cannot be asked does the age alone decide.

use serde::Serialize;

use crate::error::Result;
use crate::postgres::wal::{parse_name, WalFile};
use crate::postgres::PgSource;

/// What the server says of its archiving.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiverStatus {
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_timeout` in seconds (0: off).
    pub archive_timeout_secs: u64,
    /// The last segment the server archived.
    pub last_archived_wal: Option<String>,
    /// Seconds since then.
    pub last_archived_age_secs: Option<i64>,
    /// Failed `archive_command` runs since the statistics were reset.
    pub failed_count: u64,
    /// The segment of the last failure.
    pub last_failed_wal: Option<String>,
    /// When it failed.
    pub last_failed_time: Option<String>,
    /// The last failure is newer than the last success: archiving is failing now.
    pub failing: bool,
    /// The segment being written (`None` on a standby).
    pub current_wal: Option<String>,
}

const STATUS_SQL: &str = "SELECT current_setting('archive_mode'), \
  (SELECT setting FROM pg_settings WHERE name = 'archive_timeout'), \
  coalesce(last_archived_wal, ''), \
  coalesce(extract(epoch FROM now() - last_archived_time)::bigint::text, ''), \
  failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
  coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false), \
  CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END \
  FROM pg_stat_archiver";

/// Asks the server.
///
/// # Errors
/// The server cannot be reached or queried.
pub fn archiver_status(pg: &PgSource) -> Result<ArchiverStatus> {
    let line = pg.query(STATUS_SQL)?;
    let f: Vec<&str> = line.split('|').collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("").trim();
    let opt = |i: usize| Some(get(i).to_string()).filter(|s| !s.is_empty());
    Ok(ArchiverStatus {
        archive_mode: get(0).to_string(),
        archive_timeout_secs: get(1).parse().unwrap_or(0),
        last_archived_wal: opt(2),
        last_archived_age_secs: get(3).parse().ok(),
        failed_count: get(4).parse().unwrap_or(0),
        last_failed_wal: opt(5),
        last_failed_time: opt(6),
        failing: get(7) == "t",
        current_wal: opt(8),
    })
}

/// A segment's place in the WAL stream (the timeline aside).
fn position(name: &str, segment_size: u64) -> Option<u64> {
    match parse_name(name, crate::postgres::wal::segments_per_log(segment_size)) {
        Some(WalFile::Segment { number, .. }) => Some(number),
        _ => None,
    }
}

/// How long segments may wait: twice `archive_timeout` and a minute for the push itself;
/// 5 minutes when the server forces no switches.
#[must_use]
pub fn allowance(archive_timeout_secs: u64) -> u64 {
    if archive_timeout_secs == 0 {
        300
    } else {
        2 * archive_timeout_secs + 60
    }
}

/// Why archiving is stalled, or `None` when it is not. `newest`: the repository's newest
/// segment and its age in seconds; `server`: the server's account (`None`: it could not be
/// asked); `timeout`: the `archive_timeout` to judge by (the configured one, else the
/// server's).
#[must_use]
pub fn assess(
    newest: Option<(&str, i64)>,
    server: Option<&ArchiverStatus>,
    timeout: Option<u64>,
    segment_size: u64,
) -> Option<String> {
    let Some(s) = server else {
        let limit = allowance(timeout?);
        return match newest {
            None => Some("no WAL segment has been archived, and the server cannot be asked".into()),
            Some((n, age)) if age > limit as i64 => Some(format!(
                "no WAL segment archived for {age} s (the newest is {n}; more than {limit} s, twice archive_timeout and a minute) and the server cannot be asked"
            )),
            Some(_) => None,
        };
    };
    if s.archive_mode == "off" {
        return Some("the server does not archive WAL (archive_mode = off)".into());
    }
    if s.failing {
        return Some(format!(
            "archiving is failing: {} failed attempt(s), the last for {} at {}",
            s.failed_count,
            s.last_failed_wal.as_deref().unwrap_or("?"),
            s.last_failed_time.as_deref().unwrap_or("?")
        ));
    }
    let pos = |n: &str| position(n, segment_size);
    if let (Some(srv), repo) = (s.last_archived_wal.as_deref(), newest.map(|n| n.0)) {
        if pos(srv).is_some() && repo.and_then(pos) < pos(srv) {
            return Some(format!(
                "the server archived {srv}, but the newest segment in this repository is {}: its archive_command does not push here (check --repo and --name)",
                repo.unwrap_or("none")
            ));
        }
    }
    let done = s.last_archived_wal.as_deref().and_then(pos);
    let writing = s.current_wal.as_deref().and_then(pos);
    if let (Some(w), age) = (writing, s.last_archived_age_secs.unwrap_or(i64::MAX)) {
        let waiting = w.saturating_sub(done.map_or(0, |d| d + 1));
        let limit = allowance(timeout.unwrap_or(s.archive_timeout_secs));
        if waiting > 0 && age > limit as i64 {
            return Some(format!(
                "{waiting} finished WAL segment(s) wait to be archived, and the last one was archived {} ago (allowed: {limit} s)",
                if age == i64::MAX {
                    "never".to_string()
                } else {
                    format!("{age} s")
                }
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn server(last: &str, current: &str, age: i64) -> ArchiverStatus {
        ArchiverStatus {
            archive_mode: "on".into(),
            archive_timeout_secs: 60,
            last_archived_wal: Some(last.into()),
            last_archived_age_secs: Some(age),
            current_wal: Some(current.into()),
            ..ArchiverStatus::default()
        }
    }

    #[test]
    fn stalls_are_told_apart_from_idle_servers() {
        let a = "000000010000000000000005";
        let b = "000000010000000000000006";
        let d = "000000010000000000000008";
        // Idle for a day, nothing waiting: fine.
        assert_eq!(
            assess(Some((a, 86_400)), Some(&server(a, b, 86_400)), None, SEG),
            None
        );
        // Two finished segments waiting for longer than 2 × 60 s + 60 s.
        let w = assess(Some((a, 200)), Some(&server(a, d, 200)), None, SEG).expect("stalled");
        assert!(w.contains("2 finished WAL segment(s) wait"), "{w}");
        assert_eq!(
            assess(Some((a, 100)), Some(&server(a, d, 100)), None, SEG),
            None
        );
        // Failing pushes are a stall at once.
        let mut f = server(a, b, 5);
        f.failing = true;
        f.failed_count = 3;
        f.last_failed_wal = Some(b.into());
        assert!(assess(Some((a, 5)), Some(&f), None, SEG)
            .expect("failing")
            .contains("3 failed"));
        // The server archives somewhere else.
        let e = assess(
            Some((a, 5)),
            Some(&server(d, "000000010000000000000009", 5)),
            None,
            SEG,
        )
        .expect("elsewhere");
        assert!(e.contains("does not push here"), "{e}");
        // Unreachable: the age against the configured timeout.
        assert!(assess(Some((a, 181)), None, Some(60), SEG).is_some());
        assert_eq!(assess(Some((a, 179)), None, Some(60), SEG), None);
        assert_eq!(assess(Some((a, 10_000)), None, None, SEG), None);
    }
}
