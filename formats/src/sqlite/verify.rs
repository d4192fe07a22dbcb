//! restore-test of an SQLite snapshot: the database written to a temporary file, `PRAGMA
//! integrity_check` and `foreign_key_check`, every table's row count against the one
//! recorded.

use dbvault_core::{Id, Repository, Snapshot};

use super::snapshot::{database_part, DatabasePart};
use super::{inspect, write_new_file};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::read::write_part;
use crate::verify::{problem, Outcome, TableResult};

/// Restore-tests an SQLite snapshot.
///
/// # Errors
/// No database part, a temporary directory that cannot be made, or a snapshot that cannot
/// be read (the store does not answer). Damage is in the outcome.
pub fn restore_test(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    notify: Notify<'_>,
) -> Result<Outcome> {
    let part = database_part(snap)?;
    let dir = tempfile::tempdir().map_err(|e| FormatError::io("a temporary directory", e))?;
    let path = dir.path().join("restore-test.db");
    let mut out = Outcome {
        scratch: format!("temporary file {}", path.display()),
        ..Outcome::default()
    };
    // Checked below, against what the backup recorded.
    let written = write_new_file(&path, false, false, None, |f| {
        write_part(repo, part, f, notify)
    });
    if let Err(e) = written {
        if e.storage_kind().is_some() {
            return Err(e);
        }
        out.problems.push(problem(
            id,
            Some(&part.name),
            e.to_string(),
            e.damaged_pack(),
        ));
        return Ok(out);
    }
    let recorded = DatabasePart::of(part)?;
    let info = inspect(&path)?;
    // As for foreign keys: complaints the source had at backup are noted; different ones
    // (or any, for a snapshot that recorded none) are damage.
    match &recorded.integrity_problems {
        Some(want) if *want == info.integrity => {
            if !want.is_empty() {
                out.notes.push(format!(
                    "the database's own integrity_check complaints, as at backup: {}",
                    super::health::integrity_summary(want)
                ));
            }
        }
        _ if !info.integrity.is_empty() => out.problems.push(problem(
            id,
            Some(&part.name),
            format!(
                "integrity_check: {}",
                super::health::integrity_summary(&info.integrity)
            ),
            None,
        )),
        Some(want) => out.problems.push(problem(
            id,
            Some(&part.name),
            format!(
                "integrity_check passes now but failed at backup ({})",
                super::health::integrity_summary(want)
            ),
            None,
        )),
        None => {}
    }
    // The database's own foreign-key violations are its history, not restore damage: one
    // summary, and a failure only when the copy differs from what the backup recorded.
    let found = super::health::counts(&info.foreign_keys);
    match &recorded.foreign_key_violations {
        Some(want) if *want != found => out.problems.push(problem(
            id,
            Some(&part.name),
            format!(
                "foreign-key violations differ from those recorded at backup ({} then, {} now): {}",
                want.values().sum::<u64>(),
                found.values().sum::<u64>(),
                super::health::summary(&info.foreign_keys)
            ),
            None,
        )),
        _ if !found.is_empty() => out.notes.push(format!(
            "the database's own {} (as at backup; SQLite does not enforce foreign keys unless asked)",
            super::health::summary(&info.foreign_keys)
        )),
        _ => {}
    }
    for (name, rows) in &info.tables {
        let want = recorded.tables.get(name).copied();
        let ok = want.is_none_or(|w| w == *rows);
        let detail = if ok {
            String::new()
        } else {
            format!("{rows} rows, {} recorded at backup time", want.unwrap_or(0))
        };
        if !ok {
            out.problems
                .push(problem(id, Some(name), detail.clone(), None));
        }
        out.tables.push(TableResult {
            name: name.clone(),
            ok,
            rows_recorded: want,
            rows_restored: Some(*rows),
            detail,
        });
    }
    Ok(out)
}
