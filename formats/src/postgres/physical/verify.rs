//! restore-test of a physical snapshot: the base backup recovered on a throwaway server to
//! the end of the archive (or a target), `pg_amcheck` on every database, each table's rows
//! counted; the WAL it needs checked before (missing segments, gaps) and after (every
//! segment up to the archive's end handed over, none damaged).

use std::process::Stdio;

use dbvault_core::{Id, Repository, Snapshot};

use super::archive::Archive;
use super::throwaway::{RecoverOptions, Recovered};
use super::{BaseBackup, PART};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::verify::{problem, Outcome, TableResult};

/// Every table's and materialized view's row count, in one query (a count per table
/// through `query_to_xml`, since SQL cannot name a table from a value otherwise).
const COUNTS_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname), \
  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
  ORDER BY 1";

/// The databases a check goes through.
const DATABASES_SQL: &str =
    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";

/// Restore-tests physical snapshot `snap` (`id`).
///
/// # Errors
/// The test could not be done: no user to run the server as, the store not answering.
/// Damage, missing WAL, failed checks are in the outcome.
pub fn restore_test(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    o: &RecoverOptions<'_>,
    notify: Notify<'_>,
) -> Result<Outcome> {
    let part = snap
        .part(PART)
        .ok_or_else(|| FormatError::Invalid("not a physical snapshot (no base.tar)".into()))?;
    let info = BaseBackup::of(part)?;
    let mut out = Outcome {
        scratch: "a throwaway server in a temporary directory".into(),
        ..Outcome::default()
    };
    let arch = Archive::load(repo, &info.wal_source, info.segment_size)?;
    let choice = o
        .target
        .timeline
        .as_deref()
        .map(super::timeline::TimelineChoice::parse)
        .transpose()?
        .unwrap_or_default();
    let end = match arch.resolve(&info, choice, &info.wal_source) {
        Ok(r) => r.timeline,
        Err(e) => {
            out.problems
                .push(problem(id, Some("wal"), e.to_string(), None));
            return Ok(out);
        }
    };
    let w = arch.window_to(&info, end)?;
    if !w.missing_for_consistency.is_empty() {
        out.problems.push(problem(
            id,
            Some("wal"),
            format!(
                "WAL segment(s) {} that the base backup needs to become consistent are missing from the archive of {:?}",
                w.missing_for_consistency.join(", "),
                info.wal_source
            ),
            None,
        ));
        return Ok(out);
    }
    if let Some(g) = &w.gap {
        out.problems.push(problem(
            id,
            Some("wal"),
            format!(
                "WAL segment {g} is missing from the archive of {:?}: recovery stops at {} though later segments exist",
                info.wal_source, w.last
            ),
            None,
        ));
    }
    let to_end = !o.target.has_target();
    let tmp = super::throwaway::scratch()?;
    out.scratch = format!("a throwaway server in {} (removed)", tmp.path().display());
    let r =
        super::throwaway::with_recovered_in(tmp, repo, snap, o, notify, |rec| check_server(rec));
    let ((checked, tables), served) = match r {
        Ok(x) => x,
        Err(e) if e.storage_kind().is_some() => return Err(e),
        Err(e) => {
            out.problems
                .push(problem(id, None, format!("recovery failed: {e}"), None));
            return Ok(out);
        }
    };
    out.tables = tables;
    for (name, why) in &served.failures {
        out.problems.push(problem(
            id,
            Some("wal"),
            format!("WAL file {name} could not be read from the archive: {why}"),
            None,
        ));
    }
    let reached = served
        .segments
        .iter()
        .filter(|n| n.len() == 24)
        .max_by(|a, b| a[8..].cmp(&b[8..]).then(a.cmp(b)))
        .cloned();
    if to_end && w.gap.is_none() && reached.as_ref().is_none_or(|r| r[8..] < w.last[8..]) {
        out.problems.push(problem(
            id,
            Some("wal"),
            format!(
                "recovery ended at WAL segment {}, before the archive's last, {}",
                reached.as_deref().unwrap_or("(none)"),
                w.last
            ),
            None,
        ));
    }
    out.notes.push(format!(
        "recovered from base backup {} replaying WAL {} to {}; {checked}",
        info.start_lsn,
        info.start_wal,
        reached.as_deref().unwrap_or("(none)")
    ));
    for t in &out.tables {
        if !t.ok {
            out.problems
                .push(problem(id, Some(&t.name), t.detail.clone(), None));
        }
    }
    Ok(out)
}

/// `pg_amcheck` on every database, then the row counts; returns a note saying what was
/// checked, and a result per table (a database whose check failed has its tables failed).
fn check_server(rec: &Recovered<'_>) -> Result<(String, Vec<TableResult>)> {
    let root = rec.source("postgres")?;
    let dbs: Vec<String> = root
        .query_lines(DATABASES_SQL)?
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let (host, port) = rec.host_port();
    let amcheck =
        dbvault_core::secrets::scrub(&mut std::process::Command::new(rec.program("pg_amcheck")))
            .args([
                "--all",
                "--install-missing",
                "--no-password",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(&host)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| FormatError::io("pg_amcheck", e))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&amcheck.stdout),
        String::from_utf8_lossy(&amcheck.stderr)
    );
    let mut tables = Vec::new();
    if !amcheck.status.success() {
        let lines: Vec<&str> = report.lines().take(6).collect();
        tables.push(TableResult {
            name: "pg_amcheck".into(),
            ok: false,
            rows_recorded: None,
            rows_restored: None,
            detail: format!("pg_amcheck found problems: {}", lines.join(" | ")),
        });
    }
    for db in &dbs {
        let lines = rec.source(db)?.query_lines(COUNTS_SQL)?;
        for line in lines.iter().filter(|l| !l.is_empty()) {
            let (name, n) = line.split_once('|').unwrap_or((line.as_str(), ""));
            tables.push(TableResult {
                name: format!("{db}/{name}"),
                ok: true,
                rows_recorded: None,
                rows_restored: n.trim().parse().ok(),
                detail: String::new(),
            });
        }
    }
    Ok((
        format!(
            "pg_amcheck checked {} database(s): {}",
            dbs.len(),
            if amcheck.status.success() {
                "no corruption"
            } else {
                "PROBLEMS"
            }
        ),
        tables,
    ))
}
