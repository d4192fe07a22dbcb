//! `dbvault check`: verify the repository; exit 3 on damage.

use std::process::ExitCode;

use anyhow::Result;
use dbvault_core::check::{CheckReport, Problem, ReadData};
use dbvault_core::lock::LockKind;
use dbvault_core::report::Report;

use crate::args::{CheckArgs, Cli};
use crate::output::bytes;
use crate::repo_access;

pub fn run(cli: &Cli, a: &CheckArgs) -> Result<ExitCode> {
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => ReadData::parse_subset(s)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let repo = repo_access::open_locked(cli, LockKind::Shared, "check")?;
    let quiet = cli.json;
    let r = dbvault_formats::check::check(&repo, read, &move |m| {
        if !quiet {
            eprintln!("dbvault: check: {m}");
        }
    })?;
    let body = serde_json::to_value(&r)?;
    let stored = repo.save_report(&Report::now(
        dbvault_core::report::ReportKind::Check,
        r.ok,
        None,
        r.seconds,
        body.clone(),
    ));
    if let Err(e) = &stored {
        eprintln!("dbvault: warning: the report could not be stored: {e}");
    }
    if cli.json {
        crate::output::json(&body);
    } else {
        print(&r);
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn print(r: &CheckReport) {
    crate::outln!(
        "checked {} snapshots, {}{} index files, {} packs{} in {:.1} s",
        r.snapshots,
        if r.files > 0 {
            format!("{} WAL files, ", r.files)
        } else {
            String::new()
        },
        r.index_files,
        r.packs,
        if r.packs_read > 0 {
            format!(
                "; read {} packs, {}, {} blobs",
                r.packs_read,
                bytes(r.bytes_read),
                r.blobs_read
            )
        } else {
            String::new()
        },
        r.seconds
    );
    // Lists that grow with the data (one missing pack can touch every snapshot) stay short.
    let lines = |ps: &[Problem], what: &str| -> Vec<(String, String)> {
        ps.iter()
            .map(|p| {
                (
                    p.kind.to_string(),
                    format!("{what}: {}", dbvault_jobs::maintain::describe_problem(p)),
                )
            })
            .collect()
    };
    crate::output::capped("", &lines(&r.warnings, "warning"));
    crate::output::capped("", &lines(&r.problems, "damage"));
    if r.ok {
        crate::outln!("no damage found");
    } else {
        crate::outln!("{} problem(s) found", r.problems.len());
    }
}
