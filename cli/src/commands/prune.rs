//! `dbvault prune`: delete data no snapshot needs.

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_core::prune::PruneReport;

use crate::args::{Cli, PruneArgs};
use crate::output::bytes;
use crate::repo_access;

pub fn run(cli: &Cli, a: &PruneArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Exclusive, "prune")?;
    let report = dbvault_jobs::maintain::prune_and_record(
        &crate::output::events(cli),
        &repo,
        a.dry_run,
        a.repack_unused,
    )?;
    if cli.json {
        crate::output::json(&serde_json::to_value(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

/// Human summary of a prune.
pub fn print(r: &PruneReport) {
    crate::outln!(
        "{} snapshots need {} of {} blobs",
        r.snapshots,
        r.blobs_used,
        r.blobs_indexed
    );
    if r.nothing_to_do() {
        crate::outln!(
            "nothing to prune: {} packs, {} ({} unused in packs below the repack threshold)",
            r.packs_before,
            bytes(r.bytes_before),
            bytes(r.bytes_unused_kept)
        );
        return;
    }
    let (would, verb) = if r.dry_run {
        ("would ", "would free")
    } else {
        ("", "freed")
    };
    crate::outln!(
        "packs: {} before; {would}delete {} ({} left by interrupted runs), {would}repack {}{}",
        r.packs_before,
        r.packs_deleted,
        r.packs_unindexed,
        r.packs_repacked,
        if r.dry_run {
            String::new()
        } else {
            format!(" into {} new", r.packs_written)
        }
    );
    if !r.dry_run {
        crate::outln!(
            "index: {} files replaced by {}",
            r.index_files_removed,
            r.index_files_written
        );
    }
    crate::outln!(
        "{verb} {} ({} before, {} after); {} unused left in packs below the repack threshold; {:.1} s",
        bytes(r.bytes_freed),
        bytes(r.bytes_before),
        bytes(r.bytes_after),
        bytes(r.bytes_unused_kept),
        r.seconds
    );
}
