//! `dbvault repair index`: the index rebuilt from the packs' trailers.

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_core::repair::repair_index;

use crate::args::{Cli, RepairCommand};
use crate::repo_access;

pub fn run(cli: &Cli, command: &RepairCommand) -> Result<()> {
    let RepairCommand::Index { dry_run } = command;
    let repo = repo_access::open_locked(cli, LockKind::Exclusive, "repair index")?;
    let r = repair_index(&repo, *dry_run)?;
    if cli.json {
        crate::output::json(&serde_json::to_value(&r)?);
        return Ok(());
    }
    let verb = if *dry_run { "would " } else { "" };
    for d in &r.damaged {
        crate::outln!("damaged index file: {d} ({verb}removed)");
    }
    crate::outln!(
        "{verb}re-indexed {} pack(s) holding {} blob(s) from their trailers ({} new index file(s))",
        r.reindexed,
        r.blobs,
        if *dry_run { 0 } else { r.written }
    );
    for u in &r.unreadable {
        crate::outln!(
            "lost: {u} (its blobs are gone; `dbvault check` names the snapshots that needed them)"
        );
    }
    if r.damaged.is_empty() && r.reindexed == 0 {
        crate::outln!("the index is whole: nothing to repair");
    }
    Ok(())
}
