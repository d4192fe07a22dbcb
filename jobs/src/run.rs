//! The nightly job of a configuration file (`dbvault run`): every source is tried even
//! when an earlier one failed; then retention per source, the offsite copy, prune and check
//! on their schedules, and the metrics. The result is a [`NightReport`] the caller prints.

use std::time::Instant;

use anyhow::Result;
use dbvault_core::check::ReadData;
use dbvault_core::lock::LockKind;
use dbvault_core::report::ReportKind;
use dbvault_core::retention::{self, Span};
use dbvault_core::Repository;
use dbvault_formats::check::check;

use crate::access::Access;
use crate::config::{self, Config, Source};
use crate::events::Events;

pub use crate::night::{NightReport, SourceResult, Step};

/// Runs the night of `cfg`: every source (or only `job`, which then skips maintenance),
/// in each repository; the copy, retention, prune and check; the metrics file.
///
/// A failure of one source or step is in the report, never an early return.
///
/// # Errors
/// None today beyond the report's own; kept for what cannot be reported.
pub fn run_night(
    access: &Access,
    ev: &dyn Events,
    cfg: &Config,
    job: Option<&str>,
) -> Result<NightReport> {
    let started = Instant::now();
    let mut results = Vec::new();
    let mut steps = Vec::new();
    for (rname, rc) in &cfg.repository {
        let sources = cfg.sources_in(rname, job);
        if sources.is_empty() && job.is_some() {
            continue;
        }
        let repo = match open_configured(access, rname, rc) {
            Ok(r) => r,
            Err(e) => {
                for s in &sources {
                    results.push(failed(
                        s,
                        rname,
                        format!("repository {rname}: {}", crate::one_line(&e)),
                    ));
                }
                steps.push(step(rname, "open", Err(crate::one_line(&e))));
                continue;
            }
        };
        for s in &sources {
            results.push(back_up(access, ev, &repo, cfg, s, rname));
        }
        if let Some(target) = &rc.copy_to {
            let r = copy_offsite(access, &repo, cfg, &sources, target.get_ref());
            steps.push(step(rname, &format!("copy to {}", target.get_ref()), r));
        }
        if job.is_none() {
            if access.is_append_only(Some(rc)) {
                steps.push(step(
                    rname,
                    "retention",
                    Ok("append-only host: forget and prune are left to the admin host".into()),
                ));
            }
            maintain(
                access,
                ev,
                &repo,
                cfg,
                rname,
                access.is_append_only(Some(rc)),
                &mut steps,
            );
        }
    }
    if let Some(m) = &cfg.metrics {
        if let Err(e) = crate::metrics::write(&m.textfile, &results) {
            steps.push(step("-", "metrics", Err(crate::one_line(&e))));
        }
    }
    let ok = results.iter().all(|r| r.ok) && steps.iter().all(|s| s.ok);
    Ok(NightReport {
        ok,
        seconds: started.elapsed().as_secs_f64(),
        sources: results,
        maintenance: steps,
    })
}

/// Opens and locks (shared) a configured repository.
pub(crate) fn open_configured(
    access: &Access,
    rname: &str,
    rc: &config::RepoConfig,
) -> Result<Repository> {
    let repo = access.open_configured(rname, rc)?;
    access.lock(&repo, LockKind::Shared, "run")?;
    Ok(repo)
}

/// The offsite copy of `sources`' new snapshots, then their retention in the target.
fn copy_offsite(
    access: &Access,
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
        let to = open_configured(access, target, trc)?;
        let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        let (report, wal) = crate::maintain::catch_up(repo, &to, &names)?;
        let wal_files: usize = wal.iter().map(|w| w.files).sum();
        let append_only = access.is_append_only(Some(trc));
        let mut forgotten = 0;
        for s in sources {
            forgotten += forget_source(&to, cfg, s, append_only)?;
        }
        let (new, _) = crate::maintain::copy_counts(&report);
        Ok(format!(
            "{new} snapshot(s){} copied, {} added{}",
            if wal.is_empty() {
                String::new()
            } else {
                format!(" and {wal_files} WAL file(s)")
            },
            crate::bytes(report.bytes_added() + wal.iter().map(|w| w.bytes_added).sum::<u64>()),
            if forgotten > 0 {
                format!(", {forgotten} old copies forgotten")
            } else {
                String::new()
            }
        ))
    })();
    r.map_err(|e| crate::one_line(&e))
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
///
/// # Errors
/// The source names no database, or a malformed `wal_wait`.
pub fn job_of(s: &Source) -> Result<crate::job::Job> {
    let (source, command, all_databases) = s.target()?;
    Ok(crate::job::Job {
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
fn back_up(
    access: &Access,
    ev: &dyn Events,
    repo: &Repository,
    cfg: &Config,
    s: &Source,
    rname: &str,
) -> SourceResult {
    let t0 = Instant::now();
    let outcome = (|| -> Result<(String, u64, u64)> {
        let job = job_of(s)?;
        let sum = crate::backup::backup_into(ev, repo, &job, None, None)?;
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
        Err(e) => failed(s, rname, crate::one_line(&e)),
    };
    // Retention runs even when tonight's backup failed: the latest snapshot is never
    // forgotten, so a failing source keeps its history.
    let append_only = access.is_append_only(cfg.repository.get(rname));
    match forget_source(repo, cfg, s, append_only) {
        Ok(n) => r.forgotten = n,
        Err(e) if r.ok => {
            r.ok = false;
            r.error = Some(format!("retention: {}", crate::one_line(&e)));
        }
        Err(_) => {}
    }
    // The alarm: a base backup is worth little when the WAL after it is not archived.
    if s.physical {
        let w = crate::wal_health::of(repo, s);
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
        Some(p) => crate::maintain::forget_by_policy(repo, &s.name, &p),
        None => Ok(0),
    }
}

/// A source's retention: its own, else the file's, else the repository's stored policy. A
/// followed source keeps its last hour and hours, as its follower does.
///
/// # Errors
/// A malformed retention, or the stored policy cannot be read.
pub fn policy_for(
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
pub(crate) fn due(repo: &Repository, kind: &ReportKind, every: Option<&str>) -> Result<bool> {
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
    access: &Access,
    ev: &dyn Events,
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
            access.lock(repo, LockKind::Exclusive, "prune")?;
            let r = crate::maintain::prune_and_record(ev, repo, false, 50)?;
            access.lock(repo, LockKind::Shared, "run")?;
            Ok(Some(format!(
                "{} packs deleted, {} repacked, {} freed",
                r.packs_deleted,
                r.packs_repacked,
                crate::bytes(r.bytes_freed)
            )))
        })();
        match r {
            Ok(None) => {}
            Ok(Some(d)) => steps.push(step(rname, "prune", Ok(d))),
            Err(e) => steps.push(step(rname, "prune", Err(crate::one_line(&e)))),
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
            let first = r.problems.first().map(crate::maintain::describe_problem);
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
            Err(e) => steps.push(step(rname, "check", Err(crate::one_line(&e)))),
        }
    }
}
