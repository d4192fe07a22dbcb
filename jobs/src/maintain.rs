//! Keeping a repository: retention per source, prune with its report, the nightly offsite
//! copy, and check problems in one line.

use anyhow::Result;
use dbvault_core::check::Problem;
use dbvault_core::copy::{copy_snapshots, Copied, CopyReport};
use dbvault_core::prune::{prune, PruneOptions, PruneReport};
use dbvault_core::retention;
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::postgres::physical::copy::{copy_wal, WalCopied};

use dbvault_formats::kind::SnapshotFormat;

use crate::events::Events;

/// Forgets the snapshots of source `name` that `policy` does not keep (an empty policy
/// forgets nothing), and their WAL; returns how many snapshots.
///
/// # Errors
/// Reading the snapshots or writing the forget records failed.
pub fn forget_by_policy(
    repo: &Repository,
    name: &str,
    policy: &retention::Policy,
) -> Result<usize> {
    if policy.is_empty() {
        return Ok(0);
    }
    let req = crate::forget::ForgetRequest {
        name: Some(name.to_string()),
        policy: *policy,
        ..Default::default()
    };
    Ok(crate::forget::forget(repo, &req)?.forgotten().len())
}

/// Prunes an exclusively locked repository, telling `ev` each step; unless a dry run,
/// stores its report (`run` schedules prunes by the last one).
///
/// # Errors
/// As [`prune`].
pub fn prune_and_record(
    ev: &dyn Events,
    repo: &Repository,
    dry_run: bool,
    repack: u8,
) -> Result<PruneReport> {
    let progress = |m: &str| ev.note(&format!("prune: {m}"));
    let r = prune(
        repo,
        PruneOptions {
            dry_run,
            repack_unused_percent: repack,
        },
        &progress,
    )?;
    if !dry_run {
        // `run` schedules prunes by the last one's report.
        let stored = repo.save_report(&dbvault_core::report::Report::now(
            dbvault_core::report::ReportKind::Prune,
            true,
            None,
            r.seconds,
            serde_json::to_value(&r)?,
        ));
        if let Err(e) = stored {
            ev.warn(&format!("the prune report could not be stored: {e}"));
        }
    }
    Ok(r)
}

/// One line naming where a problem is.
pub fn describe_problem(p: &Problem) -> String {
    let mut at = Vec::new();
    if let Some(s) = &p.snapshot {
        at.push(format!("snapshot {}", &s[..s.len().min(8)]));
    }
    if let Some(t) = &p.part {
        at.push(format!("part {t}"));
    }
    if let Some(k) = &p.pack {
        at.push(format!("pack {}", &k[..k.len().min(8)]));
    }
    if at.is_empty() {
        format!("{}: {}", p.kind, p.detail)
    } else {
        format!("{}: {}", at.join(", "), p.detail)
    }
}

/// Snapshots copied now and snapshots the target held already.
pub fn copy_counts(r: &CopyReport) -> (usize, usize) {
    let new = r
        .snapshots
        .iter()
        .filter(|c| matches!(c, Copied::New { .. }))
        .count();
    (new, r.snapshots.len() - new)
}

/// The nightly copy: for each source name, the snapshots newer than the newest copy the
/// target holds (only the newest when it holds none), so a missed night is caught up and
/// a snapshot the target's retention forgot is never brought back; before them, the WAL
/// of physical sources that the target lacks (from its oldest base backup on).
///
/// # Errors
/// Reading either repository, or writing the target.
pub fn catch_up(
    from: &Repository,
    to: &Repository,
    names: &[String],
) -> Result<(CopyReport, Vec<WalCopied>)> {
    let (which, for_wal) = to_catch_up(from, to, names)?;
    let wal = copy_wal(from, to, &for_wal)?;
    Ok((copy_snapshots(from, &which, to, &mut |_| {})?, wal))
}

/// Snapshots with their ids.
pub type Snapshots = Vec<(Id, Snapshot)>;

/// What [`catch_up`] copies: the snapshots, and those whose WAL goes along.
///
/// # Errors
/// Reading either repository.
pub fn to_catch_up(
    from: &Repository,
    to: &Repository,
    names: &[String],
) -> Result<(Snapshots, Snapshots)> {
    let (all, _) = from.readable_snapshots()?;
    let (held, _) = to.readable_snapshots()?;
    let mut which = Vec::new();
    for name in names {
        let mine: Vec<&(Id, Snapshot)> = all.iter().filter(|(_, s)| &s.name == name).collect();
        let newest_copy = held
            .iter()
            .filter(|(_, s)| &s.name == name)
            .map(|(_, s)| s.time)
            .max();
        match newest_copy {
            Some(t) => which.extend(mine.into_iter().filter(|(_, s)| s.time > t).cloned()),
            None => which.extend(mine.last().map(|x| (*x).clone())),
        }
    }
    // The newest base backup of each physical source goes in too (copied already, most
    // nights): its archive is carried forward even on a night without a new base backup.
    let mut for_wal = which.clone();
    for name in names {
        if let Some(newest) = all.iter().rfind(|(_, s)| {
            &s.name == name && SnapshotFormat::of(s).is_ok_and(|f| f == SnapshotFormat::PgPhysical)
        }) {
            for_wal.push(newest.clone());
        }
    }
    Ok((which, for_wal))
}

/// Snapshots with their ids, and the manifests that could not be read.
pub type Chosen = (Vec<(Id, Snapshot)>, Vec<String>);

/// The snapshots `copy` takes: those `selectors` name (ids, prefixes, `latest`), else
/// every one of source `name`, else every one; and the manifests that could not be read
/// (not copied).
///
/// # Errors
/// A selector that names nothing, no snapshots of `name`, reading the repository.
pub fn chosen_for_copy(
    from: &Repository,
    selectors: &[String],
    name: Option<&str>,
) -> Result<Chosen> {
    if !selectors.is_empty() {
        let which = selectors
            .iter()
            .map(|s| Ok(from.find_snapshot(s, name)?))
            .collect::<Result<_>>()?;
        return Ok((which, Vec::new()));
    }
    let (all, damaged) = from.readable_snapshots()?;
    let all: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| name.is_none_or(|n| s.name == n))
        .collect();
    if let (true, Some(n)) = (all.is_empty(), name) {
        anyhow::bail!("no snapshots of source {n:?}");
    }
    Ok((all, damaged.iter().map(ToString::to_string).collect()))
}

/// Copies `which` from `from` into `to`: first the WAL of the physical sources among them
/// (a base backup in the target is only worth its WAL), then the snapshots, telling
/// `each` about every one as it is done.
///
/// # Errors
/// Reading either repository, or writing the target.
pub fn copy(
    from: &Repository,
    to: &Repository,
    which: &[(Id, Snapshot)],
    each: &mut dyn FnMut(&Copied),
) -> Result<(Vec<WalCopied>, CopyReport)> {
    if from.config().id == to.config().id {
        anyhow::bail!("--to-repo is the repository being copied from");
    }
    let wal = copy_wal(from, to, which)?;
    Ok((wal, copy_snapshots(from, which, to, each)?))
}
