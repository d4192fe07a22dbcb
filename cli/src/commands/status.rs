//! `dbvault status`: per configured source, its newest snapshot and whether it is overdue
//! (older than the source's `max_age`, default 26 h), and when it last passed a
//! restore-test; for physical sources, the WAL archive's newest segment and whether
//! archiving has stalled. Exit 1 when a source missed its backup or stopped archiving.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::args::Cli;
use crate::config;
use crate::repo_access;

#[derive(Serialize)]
struct SourceStatus {
    name: String,
    repository: String,
    ok: bool,
    state: String,
    last_backup: Option<String>,
    age_seconds: Option<i64>,
    max_age_seconds: u64,
    snapshots: usize,
    last_restore_test_passed: Option<String>,
    error: Option<String>,
    /// Physical sources: the WAL archive.
    wal: Option<super::wal_health::WalHealth>,
}

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let path = config::locate(cli.config.as_deref())?;
    let cfg = config::load(&path)?;
    let mut out = Vec::new();
    for (rname, rc) in &cfg.repository {
        let opened = config::passphrase(rname, rc).and_then(|p| {
            Ok(repo_access::open_with(
                cli,
                repo_access::backend_for(&rc.url, &repo_access::s3_options_for(cli, rc))?,
                &p,
            )?)
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
                            eprintln!(
                                "dbvault: warning: {} report(s) of repository {rname} cannot be read, so a restore-test may show as never done: {e}",
                                bad.len()
                            );
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
                Ok(repo) if s.physical => Some(super::wal_health::of(repo, s)),
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
                last_backup: newest.map(|t| crate::output::time(&t)),
                age_seconds: age,
                max_age_seconds: max_age,
                snapshots: mine.len(),
                last_restore_test_passed: passed.map(|t| crate::output::time(&t)),
                error,
                wal,
            });
        }
    }
    let ok = out.iter().all(|s| s.ok);
    if cli.json {
        crate::output::json(&serde_json::json!({ "ok": ok, "sources": out }));
    } else {
        crate::outln!(
            "{:<20} {:<12} {:<8} {:<26} {:>9} {:>6}  restore-test passed",
            "source",
            "repository",
            "state",
            "last backup",
            "age",
            "snaps"
        );
        for s in &out {
            crate::outln!(
                "{:<20} {:<12} {:<8} {:<26} {:>9} {:>6}  {}",
                s.name,
                s.repository,
                s.state,
                s.last_backup.as_deref().unwrap_or("-"),
                s.age_seconds
                    .map_or("-".into(), |a| format!("{:.1}h", a as f64 / 3600.0)),
                s.snapshots,
                s.last_restore_test_passed.as_deref().unwrap_or("never")
            );
            if let Some(e) = &s.error {
                crate::outln!("  {e}");
            }
            if let Some(w) = &s.wal {
                crate::outln!("  {}", w.describe());
            }
        }
        let missed = out.iter().filter(|s| !s.ok).count();
        let stalled = out
            .iter()
            .filter(|s| s.wal.as_ref().is_some_and(|w| w.stalled.is_some()))
            .count();
        if stalled > 0 {
            crate::outln!("{stalled} source(s) stopped archiving WAL: point-in-time recovery is not covered past their newest segment");
        }
        if missed > stalled {
            crate::outln!("{} source(s) missed their backup", missed - stalled);
        } else {
            crate::outln!("every source is backed up");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
