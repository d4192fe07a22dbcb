//! An SQLite database's own checks, summarised: `PRAGMA integrity_check` and
//! `PRAGMA foreign_key_check`. Foreign keys are off by default in SQLite, so real
//! application databases often hold violating rows; they are counted per (table, parent)
//! pair with a few examples, recorded at backup, and a restore-test compares the restored
//! copy's counts with the recorded ones instead of failing on the database's own history.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::not_sqlite;
use crate::error::Result;

/// Examples kept per (table, parent) pair.
const EXAMPLES: usize = 3;

/// Foreign-key violations of one (table, parent) pair.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FkViolations {
    /// Violating rows.
    pub count: u64,
    /// A few of them, e.g. `rowid 17`.
    pub examples: Vec<String>,
}

/// `foreign_key_check` grouped by `"table -> parent"`.
///
/// # Errors
/// SQLite errors (not violations: those are the answer).
pub fn foreign_key_violations(
    c: &Connection,
    path: &Path,
) -> Result<BTreeMap<String, FkViolations>> {
    let err = |e| not_sqlite(path, e);
    let mut st = c.prepare("PRAGMA foreign_key_check").map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    let mut out: BTreeMap<String, FkViolations> = BTreeMap::new();
    while let Some(r) = rows.next().map_err(err)? {
        let table: String = r.get(0).map_err(err)?;
        let rowid: Option<i64> = r.get(1).map_err(err)?;
        let parent: String = r.get(2).map_err(err)?;
        let v = out.entry(format!("{table} -> {parent}")).or_default();
        v.count += 1;
        if v.examples.len() < EXAMPLES {
            v.examples.push(match rowid {
                Some(id) => format!("rowid {id}"),
                // WITHOUT ROWID tables have no row id to show.
                None => "a row of a WITHOUT ROWID table".into(),
            });
        }
    }
    Ok(out)
}

/// `integrity_check`'s complaints (empty when it says `ok`).
///
/// # Errors
/// SQLite errors.
pub fn integrity_problems(c: &Connection, path: &Path) -> Result<Vec<String>> {
    let err = |e| not_sqlite(path, e);
    let mut st = c.prepare("PRAGMA integrity_check").map_err(err)?;
    let rows: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}

/// One line for integrity_check's complaints: their number and the first few.
pub fn integrity_summary(problems: &[String]) -> String {
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = problems.len().saturating_sub(shown.len());
    format!(
        "{} problem(s): {}{}",
        problems.len(),
        shown.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

/// One line for a set of violations: `3 foreign-key violations: 2 in a -> b (rowid 1, rowid
/// 4), 1 in c -> d (rowid 9)`.
pub fn summary(v: &BTreeMap<String, FkViolations>) -> String {
    let total: u64 = v.values().map(|x| x.count).sum();
    let pairs: Vec<String> = v
        .iter()
        .take(5)
        .map(|(pair, x)| format!("{} in {pair} ({})", x.count, x.examples.join(", ")))
        .collect();
    let more = if v.len() > 5 {
        format!(", and {} more table pairs", v.len() - 5)
    } else {
        String::new()
    };
    format!("{total} foreign-key violations: {}{more}", pairs.join(", "))
}

/// Counts per pair, as recorded in a snapshot.
pub fn counts(v: &BTreeMap<String, FkViolations>) -> BTreeMap<String, u64> {
    v.iter().map(|(k, x)| (k.clone(), x.count)).collect()
}
