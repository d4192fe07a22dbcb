//! `dbvault ls SNAPSHOT` and `dbvault diff A B`

use anyhow::Result;
use dbvault_formats::listing;

use crate::args::{Cli, DiffArgs, LsArgs};
use crate::output::{self, bytes};
use crate::repo_access;

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

pub fn run(cli: &Cli, a: &LsArgs) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let filter = dbvault_core::SnapshotFilter {
        name: a.name.clone(),
        host: a.host.clone(),
        tags: a.tags.clone(),
    };
    let (id, snap) = repo.find_snapshot_in(&a.snapshot, &filter)?;
    super::note_latest(&a.snapshot, &id, &snap);
    if a.entries {
        return archive_entries(cli, &repo, &id, &snap);
    }
    let entries = listing::entries(&snap);
    if cli.json {
        output::json(&serde_json::json!({
            "id": id.to_hex(),
            "time": output::time(&snap.time),
            "name": snap.name,
            "notes": snap.source.notes,
            "entries": entries,
        }));
        return Ok(());
    }
    crate::outln!(
        "snapshot {} of {} at {}",
        id.short(),
        snap.name,
        output::time(&snap.time)
    );
    for n in &snap.source.notes {
        crate::outln!("note: {n}");
    }
    crate::outln!(
        "{:<40} {:<16} {:>12} {:>12}",
        "name",
        "kind",
        "rows",
        "bytes"
    );
    for e in entries {
        crate::outln!(
            "{:<40} {:<16} {:>12} {:>12}",
            output::name(&e.name),
            e.kind,
            opt(e.rows),
            e.bytes.map_or_else(|| "-".into(), bytes)
        );
    }
    Ok(())
}

/// `ls --entries`: a PostgreSQL snapshot's archive entries, as a list file.
fn archive_entries(
    cli: &Cli,
    repo: &dbvault_core::Repository,
    id: &dbvault_core::Id,
    snap: &dbvault_core::Snapshot,
) -> Result<()> {
    if dbvault_formats::kind::SnapshotFormat::of(snap)?
        != dbvault_formats::kind::SnapshotFormat::PgDump
    {
        anyhow::bail!(
            "--entries lists a PostgreSQL logical snapshot's archive entries; snapshot {} is not one (plain `ls` lists its parts)",
            id.short()
        );
    }
    let entries =
        dbvault_formats::postgres::entries::list(repo, snap, &crate::output::print_notice)?;
    if cli.json {
        output::json(&serde_json::json!({
            "id": id.to_hex(),
            "name": snap.name,
            "time": output::time(&snap.time),
            "entries": entries,
        }));
        return Ok(());
    }
    let header = format!(
        "snapshot {} of {} at {} ({} entries; ids are {})",
        id.short(),
        snap.name,
        output::time(&snap.time),
        entries.len(),
        if dbvault_formats::postgres::entries::has_dump_ids(snap) {
            "the archive's dump ids, as pg_restore --list gives them"
        } else {
            "positions in the dump"
        }
    );
    let mut out = Vec::new();
    dbvault_formats::postgres::entries::write_list(&entries, &header, &mut out)?;
    crate::outln!("{}", String::from_utf8_lossy(&out).trim_end());
    Ok(())
}

pub fn diff(cli: &Cli, a: &DiffArgs) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let filter = dbvault_core::SnapshotFilter {
        name: a.name.clone(),
        host: a.host.clone(),
        tags: a.tags.clone(),
    };
    let (ida, sa) = repo.find_snapshot_in(&a.a, &filter)?;
    let (idb, sb) = repo.find_snapshot_in(&a.b, &filter)?;
    super::note_latest(&a.a, &ida, &sa);
    super::note_latest(&a.b, &idb, &sb);
    let changes = listing::diff(&repo, &sa, &sb)?;
    if cli.json {
        output::json(&serde_json::json!({
            "a": ida.to_hex(),
            "b": idb.to_hex(),
            "changes": changes,
        }));
        return Ok(());
    }
    crate::outln!(
        "{} ({}) -> {} ({})",
        ida.short(),
        output::time(&sa.time),
        idb.short(),
        output::time(&sb.time)
    );
    crate::outln!(
        "{:<8} {:<40} {:>12} {:>12} {:>10} {:>12}",
        "",
        "name",
        "rows before",
        "rows after",
        "rows +/-",
        "bytes changed"
    );
    let mut same = 0;
    for c in &changes {
        if c.status == "same" && !a.all {
            same += 1;
            continue;
        }
        let delta = match (c.rows_before, c.rows_after) {
            (Some(x), Some(y)) => format!("{:+}", y as i64 - x as i64),
            _ => "-".into(),
        };
        crate::outln!(
            "{:<8} {:<40} {:>12} {:>12} {:>10} {:>12}",
            c.status,
            output::name(&c.name),
            opt(c.rows_before),
            opt(c.rows_after),
            delta,
            c.bytes_changed.map_or_else(|| "-".into(), bytes)
        );
    }
    if same > 0 {
        crate::outln!("({same} unchanged; --all lists them)");
    }
    Ok(())
}
