//! What a restore-test finds, whatever the database: a verdict per table and the problems,
//! each naming snapshot, part and pack where they apply.

use dbvault_core::check::Problem;
use dbvault_core::restore::restore_part;
use dbvault_core::{Id, Repository, Snapshot};
use serde::Serialize;

use crate::error::Result;

/// One table's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct TableResult {
    /// Table (or `large objects`), prefixed `DB/` in a whole-server snapshot.
    pub name: String,
    /// Whether it came back as backed up.
    pub ok: bool,
    /// Rows recorded at backup time.
    pub rows_recorded: Option<u64>,
    /// Rows in the restored copy.
    pub rows_restored: Option<u64>,
    /// Why not, or a remark.
    pub detail: String,
}

/// What a restore-test found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Where the scratch copy was, in words.
    pub scratch: String,
    /// Per table.
    pub tables: Vec<TableResult>,
    /// Everything wrong.
    pub problems: Vec<Problem>,
    /// Remarks that are not failures (e.g. a database's own foreign-key violations).
    pub notes: Vec<String>,
}

/// A restore-test problem.
pub fn problem(id: &Id, part: Option<&str>, detail: String, pack: Option<Id>) -> Problem {
    Problem {
        kind: "restore-test".into(),
        snapshot: Some(id.to_hex()),
        part: part.map(str::to_string),
        pack: pack.map(|p| p.to_hex()),
        detail,
    }
}

/// Reads every part through its hash check: which ones are damaged, and how.
///
/// # Errors
/// A part that cannot be read for another reason (the store does not answer): then the
/// restore-test could not be done, which is not damage.
pub fn damaged_parts(
    repo: &Repository,
    snap: &Snapshot,
) -> Result<Vec<(String, dbvault_core::Error)>> {
    let mut out = Vec::new();
    for p in &snap.parts {
        match restore_part(repo, p, &mut std::io::sink()) {
            Ok(_) => {}
            Err(e) if e.is_damage() => out.push((p.name.clone(), e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Records the damaged parts of a snapshot whose restore failed: a failed table each.
pub(crate) fn add_damage(out: &mut Outcome, id: &Id, damaged: Vec<(String, dbvault_core::Error)>) {
    for (part, why) in damaged {
        out.tables.push(TableResult {
            name: part.clone(),
            ok: false,
            rows_recorded: None,
            rows_restored: None,
            detail: why.to_string(),
        });
        out.problems.push(problem(
            id,
            Some(&part),
            why.to_string(),
            why.damaged_pack(),
        ));
    }
}
