//! `dbvault copy --to-repo URL [SNAPSHOT…]`: snapshots into a second repository, and the
//! nightly offsite copy `run` makes for a repository with `copy_to`.

use anyhow::{Context, Result};
use dbvault_core::copy::{Copied, CopyReport};
use dbvault_core::lock::LockKind;
use dbvault_core::Repository;
use dbvault_formats::postgres::physical::copy::WalCopied;
use dbvault_jobs::maintain::{chosen_for_copy, copy};

use crate::args::{Cli, CopyArgs};
use crate::output;
use crate::repo_access;

pub fn run(cli: &Cli, a: &CopyArgs) -> Result<()> {
    let from = repo_access::open_locked(cli, LockKind::Shared, "copy")?;
    let to = open_target(cli, a)?;
    let (which, damaged) = chosen_for_copy(&from, &a.snapshots, a.name.as_deref())?;
    for e in &damaged {
        eprintln!("dbvault: warning: {e} (not copied)");
    }
    let human = !cli.json;
    let (wal, report) = copy(&from, &to, &which, &mut |c| {
        if human {
            crate::outln!("{}", describe(c));
        }
    })?;
    for w in &report.warnings {
        eprintln!("dbvault: warning: {w}");
    }
    if cli.json {
        let mut j = report_json(&report);
        j["wal"] = wal_json(&wal);
        output::json(&j);
    } else {
        for w in &wal {
            crate::outln!("{}", describe_wal(w));
        }
        let (new, present) = dbvault_jobs::maintain::copy_counts(&report);
        crate::outln!(
            "{new} snapshot(s) copied, {present} already in the target; {} added",
            output::bytes(report.bytes_added())
        );
    }
    Ok(())
}

fn open_target(cli: &Cli, a: &CopyArgs) -> Result<Repository> {
    let mut s3 = repo_access::s3_options(cli);
    s3.endpoint = a.to_s3_endpoint.clone().or(s3.endpoint);
    s3.region = a.to_s3_region.clone().or(s3.region);
    s3.path_style |= a.to_s3_path_style;
    let mut backend = repo_access::backend_for(&a.to_repo, &s3)?;
    if cli.append_only {
        backend = repo_access::append_only(backend);
    }
    let pass = repo_access::passphrase_from(
        a.to_password_file.as_deref(),
        "DBVAULT_TO_PASSWORD",
        "target repository passphrase: ",
        false,
    )?;
    let to = repo_access::open_with(cli, backend, &pass)
        .with_context(|| format!("target repository {}", a.to_repo))?;
    repo_access::lock(cli, &to, LockKind::Shared, "copy")?;
    Ok(to)
}

/// One line per snapshot, as it is done.
pub fn describe(c: &Copied) -> String {
    match c {
        Copied::New {
            from,
            to,
            snapshot,
            bytes_added,
        } => format!(
            "copied  {} -> {}  {} {}  {} added",
            from.short(),
            to.short(),
            snapshot.name,
            output::time(&snapshot.time),
            output::bytes(*bytes_added)
        ),
        Copied::Present { from, to } => {
            format!(
                "present {} -> {}  (already in the target)",
                from.short(),
                to.short()
            )
        }
        _ => String::new(),
    }
}

/// One line for a physical source's WAL copied.
pub fn describe_wal(w: &WalCopied) -> String {
    format!(
        "WAL of {}: {} file(s) copied, {} added",
        w.source,
        w.files,
        output::bytes(w.bytes_added)
    )
}

pub fn wal_json(wal: &[WalCopied]) -> serde_json::Value {
    wal.iter()
        .map(|w| {
            serde_json::json!({"source": w.source, "files": w.files, "bytes_added": w.bytes_added})
        })
        .collect()
}

pub fn report_json(r: &CopyReport) -> serde_json::Value {
    let items: Vec<serde_json::Value> = r
        .snapshots
        .iter()
        .map(|c| match c {
            Copied::New {
                from,
                to,
                snapshot,
                bytes_added,
            } => serde_json::json!({
                "from": from.to_hex(), "to": to.to_hex(), "copied": true,
                "name": snapshot.name, "time": output::time(&snapshot.time),
                "bytes_added": bytes_added,
            }),
            Copied::Present { from, to } => serde_json::json!({
                "from": from.to_hex(), "to": to.to_hex(), "copied": false,
            }),
            _ => serde_json::Value::Null,
        })
        .collect();
    let (new, present) = dbvault_jobs::maintain::copy_counts(r);
    serde_json::json!({
        "snapshots": items,
        "copied": new,
        "present": present,
        "bytes_added": r.bytes_added(),
        "warnings": r.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}
