//! A restore-test of any snapshot kind: restored into a scratch copy (a scratch PostgreSQL
//! database, a temporary SQLite file, a throwaway server for a base backup), checked by
//! the database's own means, dropped; the outcome stored in the repository as a typed
//! [`RestoreTestRecord`] (what `snapshots` and `status` read back as "passed").

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset};
use dbvault_core::check::Problem;
use dbvault_core::report::{Report, ReportKind};
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::notice::Notify;
use dbvault_formats::postgres::{self, physical, PgSource};
use dbvault_formats::sqlite;
use dbvault_formats::verify::TableResult;
use serde::Serialize;

use crate::events::Events;

/// How to test.
pub struct TestRequest<'a> {
    /// The PostgreSQL server a logical snapshot is restored into (default: the local one).
    pub scratch: Option<&'a PgSource>,
    /// A base backup: recover to this time (default: the end of the archive).
    pub target_time: Option<DateTime<FixedOffset>>,
    /// A base backup: the `restore_command` its throwaway server runs, given the relay's
    /// socket (the front end's own program, which fetches WAL from this process).
    pub relay_command: &'a dyn Fn(&Path) -> String,
}

/// What a restore-test found, as stored in the repository (the report's body).
#[derive(Clone, Debug, Serialize)]
pub struct RestoreTestRecord {
    /// Every table came back as backed up, and nothing else was wrong.
    pub ok: bool,
    /// The snapshot tested.
    pub snapshot: String,
    /// Its source name.
    pub name: String,
    /// Its time.
    pub snapshot_time: String,
    /// Where the scratch copy was, in words.
    pub scratch: String,
    /// Wall time, to the millisecond.
    pub seconds: f64,
    /// Per table.
    pub tables: Vec<TableResult>,
    /// Everything wrong.
    pub problems: Vec<Problem>,
    /// Remarks that are not failures.
    pub notes: Vec<String>,
}

/// A restore-test's record, and whether it was stored.
pub struct Tested {
    /// What it found.
    pub record: RestoreTestRecord,
    /// The record is in the repository (if not, `Events::warn` said why).
    pub stored: bool,
}

/// Restore-tests `snap` (`id`) and stores the record.
///
/// # Errors
/// A raw stream (nothing to test), options that do not apply, or a test that could not
/// be done (the scratch server unreachable): not a verdict. A verdict of damage is a
/// record with `ok: false`.
pub fn restore_test(
    ev: &dyn Events,
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    req: &TestRequest<'_>,
    notify: Notify<'_>,
) -> Result<Tested> {
    let format = SnapshotFormat::of(snap)?;
    if req.target_time.is_some() && format != SnapshotFormat::PgPhysical {
        bail!("--target-time is for physical snapshots (a logical one holds one moment)");
    }
    let started = Instant::now();
    let could_not = "the restore-test could not be done";
    let out = match format {
        SnapshotFormat::PgDump => {
            let local;
            let scratch = match req.scratch {
                Some(s) => s,
                None => {
                    local = PgSource::parse("postgresql:///postgres")?;
                    &local
                }
            };
            postgres::verify::restore_test(repo, id, snap, scratch, notify).context(could_not)?
        }
        SnapshotFormat::Sqlite => sqlite::verify::restore_test(repo, id, snap, notify)?,
        SnapshotFormat::PgPhysical => {
            if req.scratch.is_some() {
                bail!("--scratch is for logical snapshots: a physical one is recovered on a throwaway server of its own");
            }
            let o = physical::throwaway::RecoverOptions {
                target: physical::restore::RecoveryTarget {
                    time: req.target_time.as_ref().map(physical::reach::recovery_time),
                    ..Default::default()
                },
                restore_command: req.relay_command,
            };
            physical::verify::restore_test(repo, id, snap, &o, notify).context(could_not)?
        }
        SnapshotFormat::Raw => bail!(
            "snapshot {} is a raw stream ({}): restore-test needs a PostgreSQL or SQLite snapshot",
            id.short(),
            snap.source.kind
        ),
    };
    let ok = out.problems.is_empty();
    let seconds = started.elapsed().as_secs_f64();
    let record = RestoreTestRecord {
        ok,
        snapshot: id.to_hex(),
        name: snap.name.clone(),
        snapshot_time: crate::time_text(&snap.time),
        scratch: out.scratch,
        seconds: (seconds * 1000.0).round() / 1000.0,
        tables: out.tables,
        problems: out.problems,
        notes: out.notes,
    };
    let stored = repo
        .save_report(&Report::now(
            ReportKind::RestoreTest,
            ok,
            Some(*id),
            seconds,
            serde_json::to_value(&record)?,
        ))
        .map_err(|e| ev.warn(&format!("the report could not be stored: {e}")))
        .is_ok();
    Ok(Tested { record, stored })
}
