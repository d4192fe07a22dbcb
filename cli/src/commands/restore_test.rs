//! `dbvault restore-test SNAPSHOT`: restore into a scratch copy, run the database's own
//! checks, drop the copy, store and print a report; exit 3 when anything is wrong. The
//! tests themselves are the formats' (`postgres::verify`, `sqlite::verify`).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use dbvault_core::check::Problem;
use dbvault_core::lock::LockKind;
use dbvault_core::report::Report;
use dbvault_formats::postgres::{self, physical, PgSource};
use dbvault_formats::sqlite;

use crate::args::{Cli, RestoreTestArgs};
use crate::repo_access;
use dbvault_formats::kind::SnapshotFormat;

pub fn run(cli: &Cli, a: &RestoreTestArgs) -> Result<ExitCode> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore-test")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    super::note_latest(&a.snapshot, &id, &snap);
    let format = SnapshotFormat::of(&snap)?;
    if a.target_time.is_some() && format != SnapshotFormat::PgPhysical {
        bail!("--target-time is for physical snapshots (a logical one holds one moment)");
    }
    let started = Instant::now();
    let notify = &crate::output::print_notice;
    let out = match format {
        SnapshotFormat::PgDump => {
            let scratch =
                PgSource::parse(a.scratch.as_deref().unwrap_or("postgresql:///postgres"))?;
            crate::output::warn_url_password(&scratch);
            postgres::verify::restore_test(&repo, &id, &snap, &scratch, notify)
                .map_err(|e| anyhow::Error::from(e).context("the restore-test could not be done"))?
        }
        SnapshotFormat::Sqlite => sqlite::verify::restore_test(&repo, &id, &snap, notify)?,
        SnapshotFormat::PgPhysical => {
            if a.scratch.is_some() {
                bail!("--scratch is for logical snapshots: a physical one is recovered on a throwaway server of its own");
            }
            let o = physical::throwaway::RecoverOptions {
                target: physical::restore::RecoveryTarget {
                    time: a
                        .target_time
                        .as_deref()
                        .map(super::physical::recovery_time)
                        .transpose()?,
                    ..Default::default()
                },
                restore_command: &super::physical::relay_command,
            };
            physical::verify::restore_test(&repo, &id, &snap, &o, notify)
                .map_err(|e| anyhow::Error::from(e).context("the restore-test could not be done"))?
        }
        SnapshotFormat::Raw => bail!(
            "snapshot {} is a raw stream ({}): restore-test needs a PostgreSQL or SQLite snapshot",
            id.short(),
            snap.source.kind
        ),
    };
    let ok = out.problems.is_empty();
    let seconds = started.elapsed().as_secs_f64();
    let body = serde_json::json!({
        "ok": ok,
        "snapshot": id.to_hex(),
        "name": snap.name,
        "snapshot_time": crate::output::time(&snap.time),
        "scratch": out.scratch,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "tables": out.tables,
        "problems": out.problems,
        "notes": out.notes,
    });
    let stored = repo.save_report(&Report::now(
        dbvault_core::report::ReportKind::RestoreTest,
        ok,
        Some(id),
        seconds,
        body.clone(),
    ));
    if let Err(e) = &stored {
        eprintln!("dbvault: warning: the report could not be stored: {e}");
    }
    if cli.json {
        crate::output::json(&body);
    } else {
        crate::outln!(
            "restore-test of snapshot {} ({}, {}) into {}",
            id.short(),
            snap.name,
            crate::output::time(&snap.time),
            out.scratch
        );
        // Every table when there are few; else the failed ones and a count.
        let many = out.tables.len() > 30;
        let shown = if many {
            crate::output::SHOWN
        } else {
            usize::MAX
        };
        for t in out.tables.iter().filter(|t| !many || !t.ok).take(shown) {
            let rows = t
                .rows_restored
                .map(|r| format!("{r} rows"))
                .unwrap_or_default();
            crate::outln!(
                "  {:<30} {:>14}  {}",
                crate::output::name(&t.name),
                rows,
                if t.ok {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", t.detail)
                }
            );
        }
        if many {
            let ok_count = out.tables.iter().filter(|t| t.ok).count();
            crate::outln!(
                "  {ok_count} of {} tables ok{} (--json lists them all)",
                out.tables.len(),
                if out.tables.len() - ok_count > shown {
                    format!("; the first {shown} that failed are above")
                } else {
                    String::new()
                }
            );
        }
        let listed = |p: &Problem| out.tables.iter().any(|t| Some(&t.name) == p.part.as_ref());
        // A list that grows with the data stays short here; --json has it all.
        let unlisted: Vec<&Problem> = out.problems.iter().filter(|p| !listed(p)).collect();
        for p in unlisted.iter().take(10) {
            match &p.part {
                Some(part) => {
                    crate::outln!("  {}: FAILED: {}", crate::output::name(part), p.detail)
                }
                None => crate::outln!("  FAILED: {}", p.detail),
            }
        }
        if unlisted.len() > 10 {
            crate::outln!(
                "  … and {} more problems (--json lists them all)",
                unlisted.len() - 10
            );
        }
        for n in &out.notes {
            crate::outln!("  note: {n}");
        }
        crate::outln!(
            "{} in {:.1} s{}",
            if ok { "PASSED" } else { "FAILED" },
            seconds,
            if stored.is_ok() {
                " (report stored in the repository)"
            } else {
                ""
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
