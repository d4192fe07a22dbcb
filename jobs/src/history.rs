//! A table across a logical source's snapshots: its rows and size as each snapshot
//! recorded them, and where they fell. Reads only snapshot manifests, no data.

use anyhow::{bail, Result};
use chrono::{DateTime, FixedOffset};
use dbvault_core::{Id, Repository};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::listing;
use serde::Serialize;

/// The table in one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<FixedOffset>,
    /// Rows recorded (`None`: the table was not in the snapshot).
    pub rows: Option<u64>,
    /// Bytes of its data as stored before compression.
    pub bytes: Option<u64>,
}

/// Where the rows fell between two snapshots.
#[derive(Clone, Debug, Serialize)]
pub struct Fall {
    /// The snapshot before.
    pub before: Id,
    /// Its time.
    pub before_time: DateTime<FixedOffset>,
    /// Rows then.
    pub from_rows: u64,
    /// The snapshot after.
    pub after: Id,
    /// Its time.
    pub after_time: DateTime<FixedOffset>,
    /// Rows then (0 also when the table is gone).
    pub to_rows: u64,
    /// The table is not in the later snapshot at all.
    pub gone: bool,
}

/// The history of one table.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// The table's name as the snapshots record it (`schema.table` for PostgreSQL).
    pub table: String,
    /// Oldest first.
    pub points: Vec<Point>,
    /// Each fall to zero, a disappearance, or a loss of at least a tenth of the rows.
    pub falls: Vec<Fall>,
}

/// The history of table `table` (a bare name matches `public.NAME` or any schema) in the
/// logical snapshots of `source`.
///
/// # Errors
/// No logical snapshots of `source`, or no snapshot with that table.
pub fn history(repo: &Repository, source: &str, table: &str) -> Result<History> {
    let (snaps, _) = repo.readable_snapshots()?;
    let mine: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| s.name == source)
        .filter(|(_, s)| {
            matches!(
                SnapshotFormat::of(s),
                Ok(SnapshotFormat::PgDump | SnapshotFormat::Sqlite)
            )
        })
        .collect();
    if mine.is_empty() {
        let mut logical: Vec<&str> = snaps
            .iter()
            .filter(|(_, s)| {
                matches!(
                    SnapshotFormat::of(s),
                    Ok(SnapshotFormat::PgDump | SnapshotFormat::Sqlite)
                )
            })
            .map(|(_, s)| s.name.as_str())
            .collect();
        logical.sort_unstable();
        logical.dedup();
        bail!(
            "no logical snapshots of source {source:?} ({}); a physical source's table history is `dbvault events`",
            if logical.is_empty() {
                "this repository has none".to_string()
            } else {
                format!("the logical sources here: {}", logical.join(", "))
            }
        );
    }
    let want = |n: &str| {
        n == table
            || n.rsplit_once('.').is_some_and(|(_, t)| t == table)
                && (n.starts_with("public.") || !table.contains('.'))
    };
    let mut name = None;
    let mut points = Vec::new();
    for (id, s) in &mine {
        let entries = listing::entries(s);
        let hit = entries
            .iter()
            .filter(|e| matches!(e.kind.as_str(), "table-data" | "table"))
            .find(|e| want(&e.name));
        if let Some(e) = hit {
            name.get_or_insert_with(|| e.name.clone());
        }
        points.push(Point {
            id: *id,
            time: s.time,
            rows: hit.map(|e| e.rows.unwrap_or(0)),
            bytes: hit.and_then(|e| e.bytes),
        });
    }
    let Some(table) = name else {
        bail!(
            "no snapshot of {source:?} holds a table {table:?} (`dbvault ls latest --name {source}` lists its tables)"
        );
    };
    let mut falls = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let Some(from) = a.rows else { continue };
        let to = b.rows.unwrap_or(0);
        let fell = (b.rows.is_none() || to == 0 || to * 10 <= from * 9) && from > to;
        if fell || (b.rows.is_none() && a.rows.is_some()) {
            falls.push(Fall {
                before: a.id,
                before_time: a.time,
                from_rows: from,
                after: b.id,
                after_time: b.time,
                to_rows: to,
                gone: b.rows.is_none(),
            });
        }
    }
    Ok(History {
        table,
        points,
        falls,
    })
}
