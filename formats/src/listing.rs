//! A snapshot's contents as a DBA reads them (`ls`, `diff`): each table with its rows and
//! bytes, and for pg_dump snapshots the sections, whatever format wrote it.

use std::collections::BTreeMap;

use dbvault_core::{Part, Repository, Snapshot};
use serde::Serialize;

use crate::error::Result;
use crate::sqlite::snapshot::{DatabasePart, PART_KIND};

/// One line of `ls`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Entry {
    /// Table (schema-qualified for PostgreSQL) or part name.
    pub name: String,
    /// `table-data`, `pre-data`, `post-data`, …, `sqlite-db`, `table` (a table inside an
    /// SQLite database), `raw`.
    pub kind: String,
    /// Rows, where known.
    pub rows: Option<u64>,
    /// Plaintext bytes, where the entry is a part of its own.
    pub bytes: Option<u64>,
}

fn part_entry(p: &Part) -> Entry {
    Entry {
        name: p.name.clone(),
        kind: p.kind.clone(),
        rows: p.rows,
        bytes: Some(p.size),
    }
}

/// Every entry of a snapshot, in the snapshot's order (an SQLite database's tables after it).
pub fn entries(snap: &Snapshot) -> Vec<Entry> {
    let mut out = Vec::new();
    for p in &snap.parts {
        out.push(part_entry(p));
        if p.kind == PART_KIND {
            // A record that does not read lists no tables (`check` names the part).
            for (t, rows) in DatabasePart::of(p).map(|d| d.tables).unwrap_or_default() {
                out.push(Entry {
                    name: t,
                    kind: "table".into(),
                    rows: Some(rows),
                    bytes: None,
                });
            }
        }
    }
    out
}

/// One line of `diff`.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// As in [`Entry`].
    pub name: String,
    /// As in [`Entry`].
    pub kind: String,
    /// `added`, `removed`, `changed` or `same`.
    pub status: &'static str,
    /// Rows in the older snapshot.
    pub rows_before: Option<u64>,
    /// Rows in the newer snapshot.
    pub rows_after: Option<u64>,
    /// Bytes in the older snapshot.
    pub bytes_before: Option<u64>,
    /// Bytes in the newer snapshot.
    pub bytes_after: Option<u64>,
    /// Bytes of the newer part in chunks the older one lacks (parts only).
    pub bytes_changed: Option<u64>,
}

/// Whether two parts record the same [`crate::postgres::dump::SCHEMA_BLAKE3`].
fn same_schema(a: Option<&dbvault_core::Part>, b: &dbvault_core::Part) -> bool {
    let key = crate::postgres::dump::SCHEMA_BLAKE3;
    match (a.and_then(|a| a.meta.get(key)), b.meta.get(key)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// What changed from `a` to `b`, entry by entry, sorted by name.
///
/// # Errors
/// A chunk list or the index cannot be read.
pub fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Change>> {
    let key = |e: &Entry| (e.name.clone(), e.kind.clone());
    // How a dump was given (its archive's blocks, its compression) is not its contents.
    let contents = |e: &Entry| {
        e.kind != crate::compressed::KIND
            && e.kind != crate::postgres::archive::TOC_KIND
            && e.kind != crate::postgres::archive::BLOCK_KIND
    };
    let before: BTreeMap<_, _> = entries(a)
        .into_iter()
        .filter(contents)
        .map(|e| (key(&e), e))
        .collect();
    let after: BTreeMap<_, _> = entries(b)
        .into_iter()
        .filter(contents)
        .map(|e| (key(&e), e))
        .collect();
    let mut names: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for k in names {
        let (x, y) = (before.get(&k), after.get(&k));
        let changed = match y.and_then(|y| y.bytes.map(|_| y)) {
            Some(_) => {
                let pa = a.parts.iter().find(|p| p.name == k.0 && p.kind == k.1);
                match b.parts.iter().find(|p| p.name == k.0 && p.kind == k.1) {
                    // Pre- and post-data of pg_dump scripts: the same schema, whatever
                    // per-run `\restrict` key each dump carries.
                    Some(pb) if same_schema(pa, pb) => Some(0),
                    Some(pb) => Some(dbvault_core::diff::bytes_changed(repo, pa, pb)?),
                    None => None,
                }
            }
            None => None,
        };
        let status = match (x, y) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(x), Some(y))
                if x.rows == y.rows && x.bytes == y.bytes && changed.unwrap_or(0) == 0 =>
            {
                "same"
            }
            _ => "changed",
        };
        out.push(Change {
            name: k.0,
            kind: k.1,
            status,
            rows_before: x.and_then(|e| e.rows),
            rows_after: y.and_then(|e| e.rows),
            bytes_before: x.and_then(|e| e.bytes),
            bytes_after: y.and_then(|e| e.bytes),
            bytes_changed: changed,
        });
    }
    Ok(out)
}
