//! Forgetting snapshots: by retention rules (per source, a base backup's WAL with it), or
//! by id.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use dbvault_core::retention::{self, Policy, Span, Verdict};
use dbvault_core::{Id, Repository};

/// What [`forget`] is asked.
#[derive(Clone, Debug, Default)]
pub struct ForgetRequest {
    /// Only snapshots of this source (else every one).
    pub name: Option<String>,
    /// Only snapshots with all these tags: the rules are applied among them alone, and
    /// the others are neither kept nor forgotten.
    pub tags: Vec<String>,
    /// Only snapshots taken on this host.
    pub host: Option<String>,
    /// The rules (at least one above zero).
    pub policy: Policy,
    /// Keep WAL archived within this span even when no kept base backup needs it.
    pub keep_wal_within: Option<Span>,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
}

impl ForgetRequest {
    fn selects(&self, s: &dbvault_core::Snapshot) -> bool {
        dbvault_core::SnapshotFilter {
            name: self.name.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
        .matches(s)
    }
}

/// What [`forget`] decided (and, unless a dry run, did).
#[derive(Clone, Debug, Default)]
pub struct Forgotten {
    /// Per source, each snapshot with the rules that keep it (none: forgotten).
    pub groups: BTreeMap<String, Vec<Verdict>>,
    /// Per physical source, the WAL files no kept base backup needs (removed).
    pub wal: Vec<(String, usize)>,
    /// Snapshots that could not be read: neither kept nor forgotten.
    pub damaged: Vec<String>,
}

impl Forgotten {
    /// The snapshots forgotten.
    #[must_use]
    pub fn forgotten(&self) -> Vec<Id> {
        self.groups
            .values()
            .flatten()
            .filter(|v| v.reasons.is_empty())
            .map(|v| v.id)
            .collect()
    }
}

/// Applies `req.policy` to each source's snapshots and forgets what it does not keep,
/// then the WAL that no kept base backup needs.
///
/// # Errors
/// Rules that are all zero, reading or writing the repository (an append-only host cannot
/// forget).
pub fn forget(repo: &Repository, req: &ForgetRequest) -> Result<Forgotten> {
    if req.policy.is_empty() {
        bail!("every rule is zero: that would forget all but the latest snapshot of each source; give at least one rule above zero");
    }
    let (snaps, damaged) = repo.readable_snapshots()?;
    let list: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| req.selects(s))
        .map(|(id, s)| (*id, s.name.clone(), s.time))
        .collect();
    let mut out = Forgotten {
        groups: retention::apply_grouped(&list, &req.policy, &chrono::Local),
        damaged: damaged.iter().map(ToString::to_string).collect(),
        ..Forgotten::default()
    };
    let doomed = out.forgotten();
    if !req.dry_run {
        repo.forget_snapshots(&doomed)?;
    }
    // WAL that no kept base backup needs goes with the base backups (before a prune, so
    // its data is reclaimed with theirs); with a source named, only its own.
    let kept: Vec<_> = snaps
        .into_iter()
        .filter(|(id, s)| !doomed.contains(id) && req.name.as_deref().is_none_or(|n| s.name == n))
        .collect();
    out.wal = crate::physical::forget_wal(repo, &kept, req.keep_wal_within, req.dry_run)?;
    Ok(out)
}

/// The snapshots `selectors` name by id or unique id prefix, readable or not (a damaged
/// manifest is matched by its file name, never read).
///
/// # Errors
/// A selector that matches no snapshot, or several.
pub fn ids_named(repo: &Repository, selectors: &[String]) -> Result<Vec<Id>> {
    let all = repo.snapshot_ids()?;
    let mut ids = Vec::new();
    for sel in selectors {
        let s = sel.to_ascii_lowercase();
        let m: Vec<_> = all
            .iter()
            .filter(|id| !s.is_empty() && id.to_hex().starts_with(&s))
            .collect();
        match m.as_slice() {
            [one] => ids.push(**one),
            [] => bail!("no snapshot matches {sel:?}"),
            _ => bail!(
                "snapshot id prefix {sel:?} is ambiguous: it matches {} snapshots ({}): give more of the id",
                m.len(),
                m.iter()
                    .take(10)
                    .map(|id| id.to_hex()[..(s.len() + 4).clamp(8, 64)].to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(ids)
}
