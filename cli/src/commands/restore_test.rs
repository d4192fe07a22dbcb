//! `dbvault restore-test SNAPSHOT`: the test is `dbvault_jobs::restore_test` (restore into
//! a scratch copy, the database's own checks, the report stored); this prints it and exits
//! 3 when anything is wrong.

use std::process::ExitCode;

use anyhow::Result;
use dbvault_core::check::Problem;
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::PgSource;
use dbvault_jobs::restore_test::{restore_test, TestRequest, Tested};

use crate::args::{Cli, RestoreTestArgs};
use crate::repo_access;

pub fn run(cli: &Cli, a: &RestoreTestArgs) -> Result<ExitCode> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore-test")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    super::note_latest(&a.snapshot, &id, &snap);
    let scratch = a.scratch.as_deref().map(PgSource::parse).transpose()?;
    if let Some(s) = &scratch {
        crate::output::warn_url_password(s);
    }
    let fetch = super::physical::fetch_command(cli)?;
    let req = TestRequest {
        scratch: scratch.as_ref(),
        target_time: a
            .target_time
            .as_deref()
            .map(crate::output::parse_time)
            .transpose()?,
        relay_command: &|socket| fetch.relay(socket),
    };
    let Tested {
        record: out,
        stored,
    } = restore_test(
        &crate::output::events(cli),
        &repo,
        &id,
        &snap,
        &req,
        &crate::output::print_notice,
    )?;
    let ok = out.ok;
    let seconds = out.seconds;
    if cli.json {
        crate::output::json(&serde_json::to_value(&out)?);
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
            if stored {
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
