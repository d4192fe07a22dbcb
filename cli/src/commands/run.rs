//! `dbvault run [JOB]`: the nightly job of the configuration file. Every source is tried
//! even when an earlier one failed; then retention per source, prune and check on their
//! schedules; one summary; metrics; exit 1 if anything failed.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use dbvault_core::check::ReadData;
use dbvault_core::lock::LockKind;
use dbvault_core::report::ReportKind;
use dbvault_core::retention::{self, Span};
use dbvault_core::Repository;
use dbvault_formats::check::check;
use serde::Serialize;

use crate::args::{Cli, RunArgs};
use crate::config::{self, Config, Source};
use crate::repo_access;

/// One source's outcome.
#[derive(Serialize)]
struct SourceResult {
    name: String,
    repository: String,
    ok: bool,
    snapshot_id: Option<String>,
    bytes_in: u64,
    bytes_added: u64,
    seconds: f64,
    forgotten: usize,
    /// Newest snapshot time (unix seconds), for the metrics.
    last_success: Option<i64>,
    error: Option<String>,
    /// Physical sources: the WAL archive.
    wal: Option<super::wal_health::WalHealth>,
}

/// One maintenance step's outcome.
#[derive(Serialize)]
struct Step {
    repository: String,
    step: String,
    ok: bool,
    detail: String,
}

pub fn run(cli: &Cli, a: &RunArgs) -> Result<ExitCode> {
    let path = config::locate(cli.config.as_deref())?;
    let cfg = config::load(&path)?;
    if let Some(j) = &a.job {
        if !cfg.source.iter().any(|s| &s.name == j) {
            bail!("{}: no source named {j:?}", path.display());
        }
    }
    let started = Instant::now();
    let mut results = Vec::new();
    let mut steps = Vec::new();
    for (rname, rc) in &cfg.repository {
        let sources: Vec<&Source> = cfg
            .source
            .iter()
            .filter(|s| cfg.repo_of(s).is_ok_and(|r| r == rname))
            .filter(|s| a.job.as_ref().is_none_or(|j| &s.name == j))
            .collect();
        if sources.is_empty() && a.job.is_some() {
            continue;
        }
        let repo = match open_configured(cli, rname, rc) {
            Ok(r) => r,
            Err(e) => {
                for s in &sources {
                    results.push(failed(s, rname, format!("repository {rname}: {e:#}")));
                }
                steps.push(step(rname, "open", Err(format!("{e:#}"))));
                continue;
            }
        };
        for s in &sources {
            results.push(back_up(cli, &repo, &cfg, s, rname));
        }
        if let Some(target) = &rc.copy_to {
            let r = copy_offsite(cli, &repo, &cfg, &sources, target.get_ref());
            steps.push(step(rname, &format!("copy to {}", target.get_ref()), r));
        }
        if a.job.is_none() {
            if rc.append_only || cli.append_only {
                steps.push(step(
                    rname,
                    "retention",
                    Ok("append-only host: forget and prune are left to the admin host".into()),
                ));
            }
            maintain(
                cli,
                &repo,
                &cfg,
                rname,
                rc.append_only || cli.append_only,
                &mut steps,
            );
        }
    }
    if let Some(m) = &cfg.metrics {
        if let Err(e) = write_metrics(&m.textfile, &results) {
            steps.push(step("-", "metrics", Err(format!("{e:#}"))));
        }
    }
    let ok = results.iter().all(|r| r.ok) && steps.iter().all(|s| s.ok);
    if cli.json {
        crate::output::json(&serde_json::json!({
            "ok": ok,
            "config": path.display().to_string(),
            "seconds": started.elapsed().as_secs_f64(),
            "sources": results,
            "maintenance": steps,
        }));
    } else {
        crate::outln!("dbvault run ({})", path.display());
        for r in &results {
            match &r.error {
                None => crate::outln!(
                    "  ok      {:<20} snapshot {} {} read, {} added, {:.1} s{}",
                    r.name,
                    r.snapshot_id.as_deref().map_or("", |s| &s[..8]),
                    crate::output::bytes(r.bytes_in),
                    crate::output::bytes(r.bytes_added),
                    r.seconds,
                    if r.forgotten > 0 {
                        format!(", {} old snapshot(s) forgotten", r.forgotten)
                    } else {
                        String::new()
                    }
                ),
                Some(e) => crate::outln!("  FAILED  {:<20} {e}", r.name),
            }
            if let Some(w) = &r.wal {
                crate::outln!("          {:<20} {}", "", w.describe());
            }
        }
        for s in &steps {
            crate::outln!(
                "  {:<7} {} on {}: {}",
                if s.ok { "ok" } else { "FAILED" },
                s.step,
                s.repository,
                s.detail
            );
        }
        let bad = results.iter().filter(|r| !r.ok).count();
        crate::outln!(
            "{} of {} sources backed up in {:.1} s{}",
            results.len() - bad,
            results.len(),
            started.elapsed().as_secs_f64(),
            if ok { "" } else { "; FAILURES above" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Opens and locks (shared) a configured repository.
fn open_configured(cli: &Cli, rname: &str, rc: &config::RepoConfig) -> Result<Repository> {
    let repo = repo_access::open_configured(cli, rname, rc)?;
    repo_access::lock(cli, &repo, LockKind::Shared, "run")?;
    Ok(repo)
}

/// The offsite copy of `sources`' new snapshots, then their retention in the target.
fn copy_offsite(
    cli: &Cli,
    repo: &Repository,
    cfg: &Config,
    sources: &[&Source],
    target: &str,
) -> std::result::Result<String, String> {
    let r = (|| -> Result<String> {
        let trc = cfg
            .repository
            .get(target)
            .ok_or_else(|| anyhow::anyhow!("no repository named {target:?}"))?;
        let to = open_configured(cli, target, trc)?;
        let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        let (report, wal) = super::copy::catch_up(repo, &to, &names)?;
        let wal_files: usize = wal.iter().map(|w| w.files).sum();
        let append_only = cli.append_only || trc.append_only;
        let mut forgotten = 0;
        for s in sources {
            forgotten += forget_source(&to, cfg, s, append_only)?;
        }
        let (new, _) = super::copy::counts(&report);
        Ok(format!(
            "{new} snapshot(s){} copied, {} added{}",
            if wal.is_empty() {
                String::new()
            } else {
                format!(" and {wal_files} WAL file(s)")
            },
            crate::output::bytes(
                report.bytes_added() + wal.iter().map(|w| w.bytes_added).sum::<u64>()
            ),
            if forgotten > 0 {
                format!(", {forgotten} old copies forgotten")
            } else {
                String::new()
            }
        ))
    })();
    r.map_err(|e| format!("{e:#}"))
}

fn failed(s: &Source, repo: &str, error: String) -> SourceResult {
    SourceResult {
        name: s.name.clone(),
        repository: repo.to_string(),
        ok: false,
        snapshot_id: None,
        bytes_in: 0,
        bytes_added: 0,
        seconds: 0.0,
        forgotten: 0,
        last_success: None,
        error: Some(error),
        wal: None,
    }
}

fn step(repo: &str, what: &str, r: std::result::Result<String, String>) -> Step {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(e) => (false, e),
    };
    Step {
        repository: repo.to_string(),
        step: what.to_string(),
        ok,
        detail,
    }
}

/// What `backup` is given for a configured source.
pub(super) fn job_of(s: &Source) -> Result<super::backup::Job> {
    let (source, command, all_databases) = s.target()?;
    Ok(super::backup::Job {
        source,
        command,
        all_databases,
        name: Some(s.name.clone()),
        tags: s.tags.clone(),
        jobs: None,
        enable_row_security: s.enable_row_security,
        selection: s.selection(),
        physical: s.physical_wait()?,
        pgdata: s.pgdata.clone(),
        allow_empty: false,
    })
}

/// Backs one source up, then applies its retention.
fn back_up(cli: &Cli, repo: &Repository, cfg: &Config, s: &Source, rname: &str) -> SourceResult {
    let t0 = Instant::now();
    let outcome = (|| -> Result<(String, u64, u64)> {
        let job = job_of(s)?;
        let sum = super::backup::backup_into(cli, repo, &job, None, None)?;
        Ok((
            sum.id.to_hex(),
            sum.snapshot.bytes_in,
            sum.snapshot.bytes_added,
        ))
    })();
    let mut r = match outcome {
        Ok((id, bytes_in, bytes_added)) => SourceResult {
            name: s.name.clone(),
            repository: rname.to_string(),
            ok: true,
            snapshot_id: Some(id),
            bytes_in,
            bytes_added,
            seconds: t0.elapsed().as_secs_f64(),
            forgotten: 0,
            last_success: None,
            error: None,
            wal: None,
        },
        Err(e) => failed(s, rname, format!("{e:#}")),
    };
    // Retention runs even when tonight's backup failed: the latest snapshot is never
    // forgotten, so a failing source keeps its history.
    let append_only = cli.append_only || cfg.repository.get(rname).is_some_and(|rc| rc.append_only);
    match forget_source(repo, cfg, s, append_only) {
        Ok(n) => r.forgotten = n,
        Err(e) if r.ok => {
            r.ok = false;
            r.error = Some(format!("retention: {e:#}"));
        }
        Err(_) => {}
    }
    // The alarm: a base backup is worth little when the WAL after it is not archived.
    if s.physical {
        let w = super::wal_health::of(repo, s);
        if let Some(why) = &w.stalled {
            r.ok = false;
            let alarm = format!("WAL archiving stalled: {why}");
            r.error = Some(match r.error.take() {
                Some(e) => format!("{e}; {alarm}"),
                None => alarm,
            });
        }
        r.wal = Some(w);
    }
    r.last_success = repo
        .newest_of(&s.name)
        .ok()
        .flatten()
        .map(|(_, snap)| snap.time.timestamp());
    r
}

fn forget_source(repo: &Repository, cfg: &Config, s: &Source, append_only: bool) -> Result<usize> {
    if append_only {
        // Deleting is the admin host's job (docs/security.md: Append-only hosts).
        return Ok(0);
    }
    match policy_for(repo, cfg, s)? {
        Some(p) => super::forget::by_policy(repo, &s.name, &p),
        None => Ok(0),
    }
}

/// A source's retention: its own, else the file's, else the repository's stored policy. A
/// followed source keeps its last hour and hours, as its follower does.
pub(super) fn policy_for(
    repo: &Repository,
    cfg: &Config,
    s: &Source,
) -> Result<Option<retention::Policy>> {
    let policy = match cfg.policy_of(s)? {
        Some(p) => Some(p),
        None => repo.policy()?,
    };
    Ok(match policy {
        _ if s.follow.is_some() => Some(policy.unwrap_or_default().continuous()),
        p => p,
    })
}

/// True when no report of `kind` is younger than `every` (no `every`: always).
fn due(repo: &Repository, kind: &ReportKind, every: Option<&str>) -> Result<bool> {
    let Some(every) = every else { return Ok(true) };
    let secs = Span::parse(every)?.approx_seconds();
    let last = repo
        .reports()?
        .into_iter()
        .filter(|r| &r.kind == kind)
        .map(|r| r.time)
        .max();
    Ok(last
        .is_none_or(|t| chrono::Local::now().signed_duration_since(t).num_seconds() >= secs as i64))
}

/// Prune and check, when their schedules say so.
fn maintain(
    cli: &Cli,
    repo: &Repository,
    cfg: &Config,
    rname: &str,
    append_only: bool,
    steps: &mut Vec<Step>,
) {
    if let Some(p) = cfg.prune.as_ref().filter(|_| !append_only) {
        let r = (|| -> Result<Option<String>> {
            if !due(repo, &ReportKind::Prune, p.every.as_deref())? {
                return Ok(None);
            }
            repo.unlock();
            repo_access::lock(cli, repo, LockKind::Exclusive, "prune")?;
            let r = super::prune::run_on(cli, repo, false, 50)?;
            repo_access::lock(cli, repo, LockKind::Shared, "run")?;
            Ok(Some(format!(
                "{} packs deleted, {} repacked, {} freed",
                r.packs_deleted,
                r.packs_repacked,
                crate::output::bytes(r.bytes_freed)
            )))
        })();
        match r {
            Ok(None) => {}
            Ok(Some(d)) => steps.push(step(rname, "prune", Ok(d))),
            Err(e) => steps.push(step(rname, "prune", Err(format!("{e:#}")))),
        }
    }
    if let Some(c) = &cfg.check {
        let r = (|| -> Result<Option<(bool, String)>> {
            if !due(repo, &ReportKind::Check, c.every.as_deref())? {
                return Ok(None);
            }
            let read = match &c.read_data_subset {
                Some(s) => ReadData::parse_subset(s)?,
                None => ReadData::None,
            };
            let r = check(repo, read, &|_| {})?;
            repo.save_report(&dbvault_core::report::Report::now(
                ReportKind::Check,
                r.ok,
                None,
                r.seconds,
                serde_json::to_value(&r)?,
            ))?;
            let first = r.problems.first().map(super::check::describe);
            Ok(Some((
                r.ok,
                match first {
                    None => format!("no damage ({} packs read)", r.packs_read),
                    Some(p) => format!("{} problem(s), first: {p}", r.problems.len()),
                },
            )))
        })();
        match r {
            Ok(None) => {}
            Ok(Some((true, d))) => steps.push(step(rname, "check", Ok(d))),
            Ok(Some((false, d))) => steps.push(step(rname, "check", Err(d))),
            Err(e) => steps.push(step(rname, "check", Err(format!("{e:#}")))),
        }
    }
}

/// Prometheus textfile-collector metrics, written atomically.
fn write_metrics(path: &std::path::Path, results: &[SourceResult]) -> Result<()> {
    let mut out = String::new();
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut metric = |name: &str, help: &str, values: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (src, v) in values {
            out.push_str(&format!("{name}{{source=\"{}\"}} {v}\n", label(&src)));
        }
    };
    let per = |f: &dyn Fn(&SourceResult) -> Option<f64>| -> Vec<(String, f64)> {
        results
            .iter()
            .filter_map(|r| f(r).map(|v| (r.name.clone(), v)))
            .collect()
    };
    metric(
        "dbvault_backup_success",
        "1 if the last run backed this source up, else 0.",
        per(&|r| Some(if r.ok { 1.0 } else { 0.0 })),
    );
    metric(
        "dbvault_last_success_timestamp_seconds",
        "Time of the newest snapshot of this source.",
        per(&|r| r.last_success.map(|t| t as f64)),
    );
    metric(
        "dbvault_backup_duration_seconds",
        "Wall time of the last backup.",
        per(&|r| r.ok.then_some(r.seconds)),
    );
    metric(
        "dbvault_backup_bytes_in",
        "Bytes read by the last backup.",
        per(&|r| r.ok.then_some(r.bytes_in as f64)),
    );
    metric(
        "dbvault_backup_bytes_added",
        "Bytes the last backup added to the repository.",
        per(&|r| r.ok.then_some(r.bytes_added as f64)),
    );
    metric(
        "dbvault_dedup_ratio",
        "Bytes read over bytes added by the last backup.",
        per(&|r| (r.ok && r.bytes_added > 0).then(|| r.bytes_in as f64 / r.bytes_added as f64)),
    );
    let wal = |f: &dyn Fn(&super::wal_health::WalHealth) -> Option<f64>| -> Vec<(String, f64)> {
        results
            .iter()
            .filter_map(|r| r.wal.as_ref().and_then(f).map(|v| (r.name.clone(), v)))
            .collect()
    };
    metric(
        "dbvault_wal_archiving_ok",
        "Physical sources: 1 if WAL archiving is working, 0 if it has stalled.",
        wal(&|w| Some(if w.stalled.is_none() { 1.0 } else { 0.0 })),
    );
    metric(
        "dbvault_wal_last_archived_timestamp_seconds",
        "Physical sources: when the newest WAL segment in the repository was archived.",
        wal(&|w| w.newest_archived_at.map(|t| t as f64)),
    );
    metric(
        "dbvault_wal_archive_age_seconds",
        "Physical sources: age of the newest WAL segment in the repository.",
        wal(&|w| w.age_seconds.map(|t| t as f64)),
    );
    metric(
        "dbvault_wal_push_failures",
        "Physical sources: failed archive_command runs the server counts (pg_stat_archiver).",
        wal(&|w| w.server.as_ref().map(|s| s.failed_count as f64)),
    );
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, out.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}
