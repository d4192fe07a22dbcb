//! `dbvault status`: the state of every configured source (the work is
//! `dbvault_jobs::status`). Exit 1 when a source missed its backup or stopped archiving.

use std::process::ExitCode;

use anyhow::Result;
use dbvault_jobs::config;

use crate::args::Cli;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let path = config::locate(cli.config.as_deref())?;
    let cfg = config::load(&path)?;
    let out = dbvault_jobs::status::status(
        &crate::repo_access::access(cli)?,
        &crate::output::events(cli),
        &cfg,
    )?;
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
