//! The state of every configured source (`dbvault status`): its newest snapshot and
//! whether it is overdue (older than the source's `max_age`, default 26 h), when it last
//! passed a restore-test; for physical sources, the WAL archive's newest segment and
//! whether archiving has stalled.

use anyhow::Result;
use serde::Serialize;

use crate::access::Access;
use crate::config::Config;
use crate::events::Events;

/// One configured source's state.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// Repository name.
    pub repository: String,
    /// Backed up within `max_age`, WAL archiving not stalled.
    pub ok: bool,
    /// `ok`, `NEVER`, `MISSED`, `STALLED`, `UNKNOWN` (the repository cannot be opened).
    pub state: String,
    /// The newest snapshot's time (RFC 3339).
    pub last_backup: Option<String>,
    /// Its age.
    pub age_seconds: Option<i64>,
    /// Older than this is a missed backup.
    pub max_age_seconds: u64,
    /// Snapshots of the source.
    pub snapshots: usize,
    /// When a restore-test of one of its snapshots last passed.
    pub last_restore_test_passed: Option<String>,
    /// Why the repository cannot be opened.
    pub error: Option<String>,
    /// Physical sources: the WAL archive.
    pub wal: Option<crate::wal_health::WalHealth>,
}

/// Every source of `cfg`, in the file's order per repository. A repository that cannot be
/// opened makes its sources `UNKNOWN`, not an error.
///
/// # Errors
/// A source's malformed `max_age`.
pub fn status(access: &Access, ev: &dyn Events, cfg: &Config) -> Result<Vec<SourceStatus>> {
    let mut out = Vec::new();
    for (rname, rc) in &cfg.repository {
        // Read-only: never wrapped append-only, never locked.
        let opened = crate::access::configured_passphrase(rname, rc).and_then(|p| {
            access.open(
                crate::access::backend_for(&rc.url, &access.s3_for(rc)?)?,
                &p,
            )
        });
        let sources = cfg
            .source
            .iter()
            .filter(|s| cfg.repo_of(s).is_ok_and(|r| r == rname));
        let (snaps, reports) = match &opened {
            Ok(repo) => (
                repo.readable_snapshots().map(|x| x.0).unwrap_or_default(),
                match repo.reports_and_unreadable() {
                    Ok((r, bad)) => {
                        if let Some(e) = bad.first() {
                            ev.warn(&format!(
                                "{} report(s) of repository {rname} cannot be read, so a restore-test may show as never done: {e}",
                                bad.len()
                            ));
                        }
                        r
                    }
                    Err(_) => Vec::new(),
                },
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        for s in sources {
            let max_age = s.max_age_secs()?;
            let mine: Vec<_> = snaps.iter().filter(|(_, x)| x.name == s.name).collect();
            let newest = mine.iter().map(|(_, x)| x.time).max();
            let age = newest.map(|t| chrono::Local::now().signed_duration_since(t).num_seconds());
            let passed = reports
                .iter()
                .filter(|r| r.kind == dbvault_core::report::ReportKind::RestoreTest && r.ok)
                .filter(|r| mine.iter().any(|(id, _)| Some(*id) == r.snapshot))
                .map(|r| r.time)
                .max();
            let wal = match &opened {
                Ok(repo) if s.physical => Some(crate::wal_health::of(repo, s)),
                _ => None,
            };
            let stalled = wal.as_ref().is_some_and(|w| w.stalled.is_some());
            let (ok, state, error) = match (&opened, age) {
                (Err(e), _) => (false, "UNKNOWN".to_string(), Some(format!("{e:#}"))),
                (Ok(_), None) => (false, "NEVER".to_string(), None),
                (Ok(_), Some(a)) if a > max_age as i64 => (false, "MISSED".to_string(), None),
                (Ok(_), Some(_)) if stalled => (false, "STALLED".to_string(), None),
                (Ok(_), Some(_)) => (true, "ok".to_string(), None),
            };
            out.push(SourceStatus {
                name: s.name.clone(),
                repository: rname.clone(),
                ok,
                state,
                last_backup: newest.map(|t| crate::time_text(&t)),
                age_seconds: age,
                max_age_seconds: max_age,
                snapshots: mine.len(),
                last_restore_test_passed: passed.map(|t| crate::time_text(&t)),
                error,
                wal,
            });
        }
    }
    Ok(out)
}
