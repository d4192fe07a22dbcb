//! `dbvault import`: a folder of dated dumps, each backed up with its own date.

use std::process::ExitCode;

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_jobs::import::{import, ImportRequest, Outcome};

use crate::args::{Cli, ImportArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &ImportArgs) -> Result<ExitCode> {
    let req = ImportRequest {
        paths: a.paths.clone(),
        name: a.name.clone(),
        tags: a.tags.clone(),
        dry_run: a.dry_run,
    };
    let repo = repo_access::open_locked(cli, LockKind::Shared, "import")?;
    let done = import(&output::events(cli), &repo, &req)?;
    repo.unlock();
    let failed = done
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::Failed(_)))
        .count();
    if cli.json {
        output::json(&serde_json::to_value(&done)?);
    } else {
        for i in &done {
            let what = match &i.outcome {
                Outcome::Saved {
                    id,
                    bytes_in,
                    bytes_added,
                    ..
                } => format!(
                    "snapshot {} ({} read, {} added)",
                    &id[..8],
                    output::bytes(*bytes_in),
                    output::bytes(*bytes_added)
                ),
                Outcome::AlreadyImported(id) => format!("already imported as {}", &id[..8]),
                Outcome::Planned => "would be imported".into(),
                Outcome::Skipped(why) => format!("skipped: {why}"),
                Outcome::Failed(e) => format!("FAILED: {e}"),
            };
            crate::outln!(
                "{}  {}  {}  (date from {}): {what}",
                output::time(&i.time),
                i.name,
                i.file.display(),
                serde_json::to_value(i.date_from)?.as_str().unwrap_or("?")
            );
        }
        if failed > 0 {
            eprintln!("dbvault: {failed} of {} file(s) failed; run import again to retry them (the others are skipped)", done.len());
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
