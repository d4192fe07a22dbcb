//! "When was the DROP?": the transactions that changed one table of a physical source,
//! found in its WAL archive, each with the command that restores the table as it was just
//! before.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::postgres::physical::catalog::Catalog;
use dbvault_formats::postgres::physical::changes::{Change, TableEvent, Tracker};
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
    /// Leave out row changes of fewer rows (a busy table's single-row updates).
    pub min_rows: Option<u64>,
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
    /// What the search could not cover, said once.
    pub notes: Vec<String>,
    /// The last commit the archive holds (a change after it is not archived yet).
    pub last_commit: Option<DateTime<Utc>>,
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

/// The WAL source names of every base backup in the repository.
fn bases_of_any(repo: &Repository) -> Result<Vec<String>> {
    let (snaps, _) = repo.readable_snapshots()?;
    Ok(snaps
        .iter()
        .filter(|(_, s)| SnapshotFormat::of(s).ok() == Some(SnapshotFormat::PgPhysical))
        .filter_map(|(_, s)| BaseBackup::of(s.part(physical::PART)?).ok())
        .map(|b| b.wal_source)
        .collect())
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
    if let (Some(s), Some(u)) = (req.since, req.until) {
        if s > u {
            bail!("--since is after --until: nothing can be between them");
        }
    }
    let all = bases(repo, &req.source)?;
    if all.is_empty() {
        let mut known: Vec<String> = bases_of_any(repo)?;
        known.sort();
        known.dedup();
        bail!(
            "no base backups of {:?}: `events` reads a physical source's WAL ({}); a logical source's table history is `dbvault history`",
            req.source,
            if known.is_empty() {
                "this repository has no base backups".to_string()
            } else {
                format!("the physical sources here: {}", known.join(", "))
            }
        );
    }
    // The base backups that recorded a catalog, oldest first.
    let mut with_catalog = Vec::new();
    for (i, (_, s, _)) in all.iter().enumerate() {
        if let Some(c) = Catalog::of(repo, s)? {
            with_catalog.push((i, c));
        }
    }
    if with_catalog.is_empty() {
        bail!("the base backups of {:?} recorded no catalog (taken by an older dbvault): take a new base backup, then search the WAL written after it", req.source);
    }
    // From the newest base backup before --since; without it (or none that old), the
    // oldest: the whole archive.
    let first = req
        .since
        .and_then(|t| with_catalog.iter().rposition(|(i, _)| all[*i].1.time <= t))
        .unwrap_or(0);
    let mut notes = Vec::new();
    // The table, in the named database or the only one that has it; a table created after
    // that base backup is found in a later one's catalog, and searched from there.
    let mut found = None;
    for (pos, (_, c)) in with_catalog.iter().enumerate().skip(first) {
        let candidates: Vec<_> = c
            .databases
            .iter()
            .filter(|d| req.database.as_deref().is_none_or(|n| d.name == n))
            .filter_map(|d| d.table(&req.table).map(|r| (d.name.clone(), r.clone())))
            .collect();
        match candidates.len() {
            0 => continue,
            1 => {
                found = Some((pos, candidates.into_iter().next().expect("one")));
                break;
            }
            _ => bail!(
                "a table {:?} is in several databases ({}): choose one with --database",
                req.table,
                candidates
                    .iter()
                    .map(|(d, _)| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let (from_base, _) = &with_catalog[first];
    let Some((pos, (db_name, rel))) = found else {
        let unread: Vec<&String> = with_catalog.iter().flat_map(|(_, c)| &c.unread).collect();
        bail!(
            "no table {:?}{} in the catalog of any base backup of {:?} from {} ({}) on: a table created and dropped between two base backups cannot be followed{}",
            req.table,
            req.database
                .as_deref()
                .map(|d| format!(" in database {d}"))
                .unwrap_or_default(),
            req.source,
            all[*from_base].0.short(),
            crate::time_text(&all[*from_base].1.time),
            if unread.is_empty() {
                String::new()
            } else {
                format!(
                    "; databases a base backup could not read: {}",
                    unread.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
                )
            }
        );
    };
    let bi = with_catalog[pos].0;
    if pos != first {
        notes.push(format!(
            "{} is in the catalogs from base backup {} ({}) on: its changes before that are not searched",
            rel.qualified(),
            all[bi].0.short(),
            crate::time_text(&all[bi].1.time)
        ));
    }
    let catalogs: Vec<Catalog> = with_catalog.into_iter().map(|(_, c)| c).collect();
    let catalog = &catalogs[pos];
    let db = catalog.database(&db_name).context("the table's database")?;
    let rel = &rel;
    let (_, _, base) = &all[bi];
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
    let mut last_commit = None;
    waldump::scan(&span, &mut |f: Fact| {
        if let Fact::End(e) = &f {
            if until.is_some_and(|u| e.time > u) {
                stopped = true;
            } else {
                last_commit = Some(e.time);
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
        .filter(|e| {
            e.change != Change::Rows || req.min_rows.is_none_or(|m| e.deleted + e.updated >= m)
        })
        .map(|event| {
            // The newest base backup consistent before the event.
            let base = all
                .iter()
                .rev()
                .find(|(_, _, b)| parse_lsn(&b.stop_lsn).is_some_and(|s| s <= event.lsn_value))
                .map(|(id, _, _)| *id);
            let restore = base.map(|id| {
                // Beside the live table under a name of its own: the script can be run
                // into the live database as it is.
                format!(
                    "dbvault restore {} --table {} --database {} --before-xid {} --rename-table {} --to -",
                    id.short(),
                    shell_word(&rel.qualified()),
                    shell_word(&db.name),
                    event.xid,
                    shell_word(&format!("{}_before_{}", rel.name, event.xid))
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
        notes,
        last_commit,
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
