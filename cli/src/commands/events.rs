//! `dbvault events --name SOURCE --table NAME`: the transactions that changed a table,
//! from a physical source's WAL (`dbvault_jobs::table_events`); `dbvault history --name
//! SOURCE --table NAME`: a table across a logical source's snapshots
//! (`dbvault_jobs::history`).

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::physical::changes::Change;
use dbvault_jobs::history::history;
use dbvault_jobs::table_events::{table_events, EventsRequest};

use crate::args::{Cli, EventsArgs, HistoryArgs};
use crate::{output, repo_access};

pub fn events(cli: &Cli, a: &EventsArgs) -> Result<()> {
    let time = |t: &Option<String>| t.as_deref().map(output::parse_time).transpose();
    let req = EventsRequest {
        source: a.name.clone(),
        table: a.table.clone(),
        database: a.database.clone(),
        since: time(&a.since)?,
        until: time(&a.until)?,
        min_rows: a.min_rows,
    };
    let repo = repo_access::open_locked(cli, LockKind::Shared, "events")?;
    let found = table_events(&repo, &req)?;
    repo.unlock();
    if cli.json {
        output::json(&serde_json::to_value(&found)?);
        return Ok(());
    }
    eprintln!(
        "dbvault: {} of database {}: {} WAL segment(s) read ({} to {}) in {:.1} s",
        found.table,
        found.database,
        found.segments,
        found.from_segment,
        found.to_segment,
        found.elapsed.as_secs_f64()
    );
    if found.events.is_empty() {
        crate::outln!(
            "no transaction dropped, truncated, rewrote, deleted or updated rows of {} in that WAL",
            found.table
        );
    }
    for f in &found.events {
        let e = &f.event;
        let what = match e.change {
            Change::Drop => "DROP TABLE".to_string(),
            Change::Truncate => "TRUNCATE".to_string(),
            Change::Rewrite => "rewritten (ALTER TABLE … TYPE, VACUUM FULL or CLUSTER)".to_string(),
            Change::Rows => match (e.deleted, e.updated) {
                (d, 0) => format!("DELETE {d} rows"),
                (0, u) => format!("UPDATE {u} rows"),
                (d, u) => format!("DELETE {d} rows, UPDATE {u} rows"),
            },
        };
        crate::outln!(
            "{}  xid {}  LSN {}  {what}",
            e.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f %:z"),
            e.xid,
            e.lsn
        );
        if !e.other_tables.is_empty() {
            crate::outln!("    same transaction: {}", e.other_tables.join(", "));
        }
        match &f.restore {
            Some(c) => crate::outln!("    before it: {c}"),
            None => crate::outln!("    no base backup is consistent before it: it cannot be undone from this repository"),
        }
    }
    Ok(())
}

pub fn table_history(cli: &Cli, a: &HistoryArgs) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let h = history(&repo, &a.name, &a.table)?;
    if cli.json {
        output::json(&serde_json::to_value(&h)?);
        return Ok(());
    }
    crate::outln!("{} in the snapshots of {}:", h.table, a.name);
    crate::outln!(
        "  {:<10} {:<26} {:>12} {:>12}",
        "snapshot",
        "time",
        "rows",
        "bytes"
    );
    for p in &h.points {
        crate::outln!(
            "  {:<10} {:<26} {:>12} {:>12}",
            p.id.short(),
            output::time(&p.time),
            p.rows.map_or_else(|| "(absent)".into(), |r| r.to_string()),
            p.bytes.map_or_else(|| "-".into(), output::bytes)
        );
    }
    if h.falls.is_empty() {
        crate::outln!(
            "{}: its rows never fell by a tenth or more between two snapshots",
            h.table
        );
    }
    for f in &h.falls {
        crate::outln!(
            "{}: {} → {} rows{} between the snapshots of {} ({}) and {} ({})",
            h.table,
            f.from_rows,
            f.to_rows,
            if f.gone { " (the table is gone)" } else { "" },
            output::time(&f.before_time),
            f.before.short(),
            output::time(&f.after_time),
            f.after.short()
        );
    }
    Ok(())
}
