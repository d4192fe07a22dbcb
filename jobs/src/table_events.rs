//! "When was the DROP?": the transactions that changed one table of a physical source,
//! found in its WAL archive, each with the command that restores the table as it was just
//! before.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::postgres::physical::catalog::Catalog;
use dbvault_formats::postgres::physical::changes::{TableEvent, Tracker};
use dbvault_formats::postgres::physical::waldump::{self, parse_lsn, Fact};
use dbvault_formats::postgres::physical::{self, archive::Archive, BaseBackup};
use serde::Serialize;

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct EventsRequest {
    /// The physical source (its WAL archive's name).
    pub source: String,
    /// The table (`schema.table`, or a bare name).
    pub table: String,
    /// Its database (needed when several have such a table).
    pub database: Option<String>,
    /// Only events at or after this time (the scan starts at the newest base backup
    /// before it).
    pub since: Option<DateTime<FixedOffset>>,
    /// Only events before this time (the scan stops there).
    pub until: Option<DateTime<FixedOffset>>,
}

/// One event and how to undo it.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// What happened.
    #[serde(flatten)]
    pub event: TableEvent,
    /// The base backup to restore from (the newest consistent before the event).
    pub base: Option<Id>,
    /// The command that restores the table as it was just before the event.
    pub restore: Option<String>,
}

/// What [`table_events`] found.
#[derive(Clone, Debug, Serialize)]
pub struct TableEvents {
    /// The table, schema-qualified.
    pub table: String,
    /// Its database.
    pub database: String,
    /// Newest first.
    pub events: Vec<Found>,
    /// WAL segments read.
    pub segments: usize,
    /// The first and last segment read.
    pub from_segment: String,
    /// The last segment read.
    pub to_segment: String,
    /// How long the search took.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The base backups of `source` with their records, oldest first.
fn bases(repo: &Repository, source: &str) -> Result<Vec<(Id, Snapshot, BaseBackup)>> {
    let (snaps, _) = repo.readable_snapshots()?;
    let mut out = Vec::new();
    for (id, s) in snaps {
        if SnapshotFormat::of(&s).ok() != Some(SnapshotFormat::PgPhysical) {
            continue;
        }
        let Some(part) = s.part(physical::PART) else {
            continue;
        };
        let b = BaseBackup::of(part)?;
        if b.wal_source == source {
            out.push((id, s, b));
        }
    }
    out.sort_by_key(|(_, s, _)| s.time);
    Ok(out)
}

/// Finds the committed transactions that dropped, truncated, rewrote, or deleted or
/// updated rows of `req.table`, from the WAL archive of `req.source`, starting at the
/// newest base backup (with a recorded catalog) before `req.since`.
///
/// # Errors
/// No base backup with a catalog, no such table, pg_waldump of the cluster's version not
/// installed, a segment missing or unreadable.
pub fn table_events(repo: &Repository, req: &EventsRequest) -> Result<TableEvents> {
    let t0 = Instant::now();
    let all = bases(repo, &req.source)?;
    if all.is_empty() {
        bail!("no base backups of {:?}: `dbvault events` reads a physical source's WAL (a logical source's table history is `dbvault history`)", req.source);
    }
    let mut catalogs = Vec::new();
    let mut start = None;
    for (i, (_, s, _)) in all.iter().enumerate() {
        if let Some(c) = Catalog::of(repo, s)? {
            let before = req.since.is_none_or(|t| s.time <= t);
            if before || start.is_none() {
                start = Some((i, catalogs.len()));
            }
            catalogs.push(c);
        }
    }
    let Some((bi, ci)) = start else {
        bail!("the base backups of {:?} recorded no catalog (taken by an older dbvault): take a new base backup, then search the WAL written after it", req.source);
    };
    let (_, base_snap, base) = &all[bi];
    let catalog = &catalogs[ci];
    // The table: in the named database, else in the only database that has it.
    let candidates: Vec<_> = catalog
        .databases
        .iter()
        .filter(|d| req.database.as_deref().is_none_or(|n| d.name == n))
        .filter_map(|d| d.table(&req.table).map(|r| (d, r)))
        .collect();
    let (db, rel) = match candidates.as_slice() {
        [one] => *one,
        [] => bail!(
            "no table {:?}{} in the catalog of base backup {} ({}){}",
            req.table,
            req.database
                .as_deref()
                .map(|d| format!(" in database {d}"))
                .unwrap_or_default(),
            all[bi].0.short(),
            crate::time_text(&base_snap.time),
            if catalog.unread.is_empty() {
                String::new()
            } else {
                format!(
                    "; databases it could not read: {}",
                    catalog.unread.join("; ")
                )
            }
        ),
        many => bail!(
            "a table {:?} is in several databases ({}): choose one with --database",
            req.table,
            many.iter()
                .map(|(d, _)| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let arch = Archive::load(repo, &req.source, base.segment_size)?;
    let mut segments = arch.replay_path(base)?;
    // From where the catalog was read, when the archive has that segment.
    if let Some(lsn) = parse_lsn(&catalog.lsn) {
        segments = arch.extend_back(base, lsn / base.segment_size.max(1), segments);
    }
    if segments.is_empty() {
        bail!(
            "the archive of {:?} has no WAL after base backup {}",
            req.source,
            all[bi].0.short()
        );
    }
    let pg_waldump = dbvault_formats::postgres::tools::versioned("pg_waldump", &base.server_version)
        .with_context(|| format!("pg_waldump of PostgreSQL {} is needed to read this cluster's WAL: install postgresql-{} (Debian) or put its bin directory on PATH", base.server_version, base.server_version))?;
    let span = waldump::Span {
        repo,
        source: &req.source,
        segments: segments.clone(),
        segment_size: base.segment_size,
        pg_waldump,
    };
    let mut tracker = Tracker::new(db, rel.oid, rel.filenode, rel.toast_filenode, &catalogs);
    let until = req.until.map(|t| t.with_timezone(&Utc));
    let mut stopped = false;
    waldump::scan(&span, &mut |f: Fact| {
        if let (Fact::End(e), Some(u)) = (&f, until) {
            if e.time > u {
                stopped = true;
            }
        }
        if !stopped {
            tracker.fact(f);
        }
        !stopped
    })?;
    let since = req.since.map(|t| t.with_timezone(&Utc));
    let mut events: Vec<Found> = tracker
        .events
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.time >= s))
        .map(|event| {
            // The newest base backup consistent before the event.
            let base = all
                .iter()
                .rev()
                .find(|(_, _, b)| parse_lsn(&b.stop_lsn).is_some_and(|s| s <= event.lsn_value))
                .map(|(id, _, _)| *id);
            let restore = base.map(|id| {
                format!(
                    "dbvault restore {} --table {} --database {} --before-xid {} --to -",
                    id.short(),
                    shell_word(&rel.qualified()),
                    shell_word(&db.name),
                    event.xid
                )
            });
            Found {
                event,
                base,
                restore,
            }
        })
        .collect();
    events.reverse();
    Ok(TableEvents {
        table: rel.qualified(),
        database: db.name.clone(),
        events,
        segments: segments.len(),
        from_segment: segments.first().cloned().unwrap_or_default(),
        to_segment: segments.last().cloned().unwrap_or_default(),
        elapsed: t0.elapsed(),
    })
}

/// A word the shell passes as it is.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
