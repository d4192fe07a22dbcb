//! `dbvault snapshots`

use std::collections::HashMap;

use anyhow::Result;
use dbvault_core::Id;

use crate::args::{Cli, SnapshotsArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &SnapshotsArgs) -> Result<()> {
    let repo = repo_access::open(cli)?;
    let audit = repo.audit(true)?;
    let (all, damaged) = (audit.snapshots, audit.damaged);
    for e in &damaged {
        eprintln!("dbvault: warning: {e} (listing the others; run `dbvault check`)");
    }
    let missing: Vec<_> = audit
        .missing
        .iter()
        .filter(|m| a.name.as_deref().is_none_or(|n| m.name == n))
        .collect();
    let listed = list(cli, a, &repo, all);
    for m in &missing {
        eprintln!("dbvault: MISSING: {m}");
    }
    listed?;
    if !missing.is_empty() {
        anyhow::bail!(
            "{} snapshot(s) vanished from the repository without `forget` (see MISSING above)",
            missing.len()
        );
    }
    Ok(())
}

fn list(
    cli: &Cli,
    a: &SnapshotsArgs,
    repo: &dbvault_core::Repository,
    all: Vec<(Id, dbvault_core::Snapshot)>,
) -> Result<()> {
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.name.as_deref().is_none_or(|n| s.name == n))
        .filter(|(_, s)| a.host.as_deref().is_none_or(|h| s.host == h))
        .filter(|(_, s)| a.tags.iter().all(|t| s.tags.contains(t)))
        .collect();
    // The latest restore-test of each snapshot, and when it last passed.
    let mut tested: HashMap<Id, (Option<String>, Option<String>, bool)> = HashMap::new();
    let (reports, unreadable) = repo.reports_and_unreadable()?;
    if let Some(e) = unreadable.first() {
        eprintln!(
            "dbvault: warning: {} check or restore-test report(s) cannot be read, so a test may show as never done: {e}",
            unreadable.len()
        );
    }
    for r in reports {
        let Some(sid) = r
            .snapshot
            .filter(|_| r.kind == dbvault_core::report::ReportKind::RestoreTest)
        else {
            continue;
        };
        let e = tested.entry(sid).or_insert((None, None, false));
        e.0 = Some(output::time(&r.time));
        e.2 = r.ok;
        if r.ok {
            e.1 = Some(output::time(&r.time));
        }
    }
    if cli.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "time": output::time(&s.time),
                    "name": s.name,
                    "host": s.host,
                    "tags": s.tags,
                    "source": s.source,
                    "bytes_in": s.bytes_in,
                    "bytes_added": s.bytes_added,
                    "parts": s.parts.iter().map(output::part_json).collect::<Vec<_>>(),
                    "restore_test": tested.get(id).map(|(last, passed, ok)| serde_json::json!({
                        "last": last,
                        "last_ok": ok,
                        "last_passed": passed,
                    })),
                })
            })
            .collect();
        output::json(&serde_json::Value::Array(v));
        return Ok(());
    }
    if snaps.is_empty() {
        crate::outln!("no snapshots");
        return Ok(());
    }
    // The name column as wide as the longest name.
    let w = snaps
        .iter()
        .map(|(_, s)| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    crate::outln!(
        "{:<10} {:<25} {:<w$} {:>10} {:>6}  {:<27} tags",
        "id",
        "time",
        "name",
        "size",
        "parts",
        "restore-test"
    );
    // A note (a selective or custom-format snapshot) once, naming its snapshots.
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    for (id, s) in &snaps {
        let rt = match tested.get(id) {
            None => "never".to_string(),
            Some((_, Some(p), true)) => format!("passed {}", &p[..p.len().min(19)]),
            Some((Some(l), _, false)) => format!("FAILED {}", &l[..l.len().min(19)]),
            Some(_) => "?".into(),
        };
        crate::outln!(
            "{:<10} {:<25} {:<w$} {:>10} {:>6}  {:<27} {}",
            id.short(),
            output::time(&s.time),
            s.name,
            output::bytes(s.bytes_in),
            s.parts.len(),
            rt,
            s.tags.join(",")
        );
        for n in &s.source.notes {
            match notes.iter_mut().find(|(t, _)| t == n) {
                Some((_, ids)) => ids.push(id.short()),
                None => notes.push((n.clone(), vec![id.short()])),
            }
        }
    }
    for (n, ids) in &notes {
        let which = if ids.len() == snaps.len() && ids.len() > 1 {
            "every snapshot".to_string()
        } else if ids.len() > 6 {
            format!("{} snapshots", ids.len())
        } else {
            ids.join(", ")
        };
        crate::outln!("note: {n} ({which})");
    }
    crate::outln!("{} snapshot(s)", snaps.len());
    // The window each source covers: what --target-time can reach.
    let mut window: std::collections::BTreeMap<&str, (usize, String, String)> = Default::default();
    for (_, s) in &snaps {
        let t = output::time(&s.time);
        let e = window.entry(&s.name).or_insert((0, t.clone(), t.clone()));
        e.0 += 1;
        e.2 = t;
    }
    if window.len() > 1 || window.values().any(|w| w.0 > 1) {
        for (name, (n, from, to)) in window {
            crate::outln!("  {name}: {n} snapshot(s) from {from} to {to}");
        }
    }
    for l in dbvault_formats::postgres::physical::reach::windows(repo, &snaps) {
        crate::outln!("  {l}");
    }
    Ok(())
}
