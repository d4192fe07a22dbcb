//! `dbvault repair index|snapshots`: a repository back in one piece after a damaged file.

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_core::repair::{repair_index, repair_snapshots, SnapshotRepairOptions};

use crate::args::{Cli, RepairCommand};
use crate::repo_access;

pub fn run(cli: &Cli, command: &RepairCommand) -> Result<()> {
    match command {
        RepairCommand::Index { dry_run } => index(cli, *dry_run),
        RepairCommand::Snapshots { dry_run, read_data } => snapshots(
            cli,
            SnapshotRepairOptions {
                dry_run: *dry_run,
                read_data: *read_data,
            },
        ),
    }
}

fn index(cli: &Cli, dry_run: bool) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Exclusive, "repair index")?;
    let r = repair_index(&repo, dry_run)?;
    if cli.json {
        crate::output::json(&serde_json::to_value(&r)?);
        return Ok(());
    }
    let verb = if dry_run { "would be " } else { "" };
    for d in &r.damaged {
        crate::outln!("damaged index file: {d} ({verb}removed)");
    }
    if dry_run {
        crate::outln!(
            "would re-index {} pack(s) holding {} blob(s) from their trailers",
            r.reindexed,
            r.blobs
        );
    } else {
        crate::outln!(
            "re-indexed {} pack(s) holding {} blob(s) from their trailers ({} new index file(s))",
            r.reindexed,
            r.blobs,
            r.written
        );
    }
    for u in &r.unreadable {
        crate::outln!(
            "lost: {u} (its blobs are gone; `dbvault repair snapshots` removes what needed them)"
        );
    }
    if r.damaged.is_empty() && r.reindexed == 0 {
        crate::outln!("the index is whole: nothing to repair");
    }
    Ok(())
}

fn snapshots(cli: &Cli, opts: SnapshotRepairOptions) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Exclusive, "repair snapshots")?;
    let quiet = cli.json;
    let progress = move |m: &str| {
        if !quiet {
            eprintln!("dbvault: repair snapshots: {m}");
        }
    };
    let r = repair_snapshots(
        &repo,
        opts,
        &dbvault_formats::postgres::meta::can_lose,
        &progress,
    )?;
    if cli.json {
        crate::output::json(&serde_json::to_value(&r)?);
        return Ok(());
    }
    let verb = if opts.dry_run { "would be " } else { "" };
    if r.reindexed > 0 {
        crate::outln!(
            "{} pack(s) no index named {verb}indexed from their trailers first (nothing they hold is lost)",
            r.reindexed
        );
    }
    for s in &r.removed {
        let what = s
            .what
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        crate::outln!(
            "lost: snapshot {}{what} {verb}removed: {}",
            &s.id[..8],
            s.why
        );
        if !s.intact.is_empty() {
            crate::outln!(
                "  removed with it, though intact there: {}",
                s.intact.join(", ")
            );
        }
    }
    for s in &r.rewritten {
        crate::outln!(
            "lost: from snapshot {} ({}): {}; the rest {verb}kept{}",
            &s.old[..8],
            s.what,
            s.parts_lost.join("; "),
            if s.new.is_empty() {
                " under a new snapshot id (the old id goes)".to_string()
            } else {
                format!(" as snapshot {} (the old id is gone)", &s.new[..8])
            }
        );
    }
    for p in &r.packs {
        crate::outln!(
            "damaged pack {}: {} blob(s) {verb}copied to a new pack, {} lost; the pack {verb}removed",
            &p.pack[..8],
            p.kept,
            p.lost
        );
    }
    for d in &r.debris {
        crate::outln!(
            "unreadable pack {} that no index names: {verb}removed",
            &d[..8]
        );
    }
    for f in &r.files_damaged {
        crate::outln!(
            "not repaired: WAL file {f} lacks data (push it again from the server's pg_wal if it is still there)"
        );
    }
    if r.nothing() {
        crate::outln!("no snapshot or pack needs repair");
    }
    Ok(())
}
