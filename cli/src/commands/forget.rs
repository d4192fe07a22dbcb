//! `dbvault forget`: remove snapshots by retention rules, then optionally prune.

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::retention::Verdict;
use dbvault_jobs::forget::{forget, ids_named, ForgetRequest, Forgotten};

use crate::args::{Cli, ForgetArgs};
use crate::commands::{policy, prune};
use crate::output;
use crate::repo_access;

pub fn run(cli: &Cli, a: &ForgetArgs) -> Result<()> {
    let prune_after = a.prune && !a.dry_run;
    let kind = if prune_after {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let repo = repo_access::open_locked(cli, kind, "forget")?;
    if !a.dry_run {
        repo.ensure_delete_rights("forget")?;
    }
    if !a.snapshots.is_empty() {
        return by_id(cli, &repo, a);
    }
    let rules = match policy::from_args(&a.keep)? {
        Some(p) => p,
        None => match repo.policy()? {
            Some(p) => p,
            None => bail!(
                "no retention rules: give --keep-daily/--keep-weekly/… or store a policy with `dbvault policy`"
            ),
        },
    };
    let keep_wal_within = a
        .keep_wal_within
        .as_deref()
        .map(dbvault_core::retention::Span::parse)
        .transpose()?;
    let req = ForgetRequest {
        name: a.name.clone(),
        tags: a.tags.clone(),
        host: a.host.clone(),
        policy: rules,
        keep_wal_within,
        dry_run: a.dry_run,
    };
    let Forgotten {
        groups,
        wal,
        damaged,
    } = forget(&repo, &req)?;
    for e in &damaged {
        eprintln!("dbvault: warning: {e} (neither kept nor forgotten)");
    }
    if groups.is_empty() {
        let filter = dbvault_core::SnapshotFilter {
            name: a.name.clone(),
            host: a.host.clone(),
            tags: a.tags.clone(),
        };
        if a.name.is_some() && filter.is_empty() {
            bail!(
                "no snapshots of source {:?}",
                a.name.as_deref().unwrap_or("")
            );
        }
        if !filter.is_empty() {
            bail!("no snapshots match {}", filter.describe());
        }
    }
    let pruned = if prune_after {
        Some(dbvault_jobs::maintain::prune_and_record(
            &crate::output::events(cli),
            &repo,
            false,
            50,
        )?)
    } else {
        None
    };
    if cli.json {
        let item = |name: &str, v: &Verdict, keep: bool| {
            let mut o = serde_json::json!({
                "id": v.id.to_hex(),
                "time": output::time(&v.time),
                "name": name,
            });
            if keep {
                o["reasons"] = serde_json::json!(v.reasons);
            }
            o
        };
        let mut keep = Vec::new();
        let mut forget = Vec::new();
        for (name, vs) in &groups {
            for v in vs {
                if v.reasons.is_empty() {
                    forget.push(item(name, v, false));
                } else {
                    keep.push(item(name, v, true));
                }
            }
        }
        output::json(&serde_json::json!({
            "dry_run": a.dry_run,
            "policy": rules.describe(),
            "keep": keep,
            "forget": forget,
            "wal": wal.iter().map(|(s, n)| serde_json::json!({"source": s, "files": n})).collect::<Vec<_>>(),
            "prune": pruned,
        }));
        return Ok(());
    }
    for (name, vs) in &groups {
        let k = vs.iter().filter(|v| !v.reasons.is_empty()).count();
        crate::outln!(
            "{name}: keep {k}, {} {} ({})",
            if a.dry_run { "would forget" } else { "forget" },
            vs.len() - k,
            rules.describe()
        );
        for v in vs {
            let local = v.time.with_timezone(&chrono::Local);
            crate::outln!(
                "  {:<6}  {}  {}  {}",
                if v.reasons.is_empty() {
                    "forget"
                } else {
                    "keep"
                },
                v.id.short(),
                local.format("%Y-%m-%d %H:%M:%S %:z"),
                v.reasons.join(", ")
            );
        }
    }
    for (source, files) in &wal {
        crate::outln!(
            "{source}: WAL: {} {files} file(s) no kept base backup needs",
            if a.dry_run { "would forget" } else { "forgot" }
        );
    }
    if let Some(r) = &pruned {
        prune::print(r);
    } else if a.prune {
        crate::outln!("(a dry run does not prune)");
    }
    Ok(())
}

/// `forget ID…`: those snapshots, readable or not (a damaged manifest is matched by its
/// file name, never read).
fn by_id(cli: &Cli, repo: &dbvault_core::Repository, a: &ForgetArgs) -> Result<()> {
    let ids = ids_named(repo, &a.snapshots)?;
    let described: Vec<String> = ids
        .iter()
        .map(|id| match repo.load_snapshot(id) {
            Ok(s) => format!("{} ({}, {})", id.short(), s.name, output::time(&s.time)),
            Err(e) => format!("{} (damaged: {e})", id.short()),
        })
        .collect();
    if !a.dry_run {
        repo.forget_snapshots(&ids)?;
    }
    if cli.json {
        output::json(&serde_json::json!({
            "forgotten": ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "dry_run": a.dry_run,
        }));
    } else {
        for d in &described {
            crate::outln!("{} {d}", if a.dry_run { "would forget" } else { "forgot" });
        }
        if !a.dry_run {
            crate::outln!("(their data is freed by the next prune)");
        }
    }
    Ok(())
}
