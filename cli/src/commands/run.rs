//! `dbvault run [JOB]`: the nightly job of the configuration file (the work is
//! `dbvault_jobs::run::run_night`); one summary; exit 1 if anything failed.

use std::process::ExitCode;

use anyhow::{bail, Result};
use dbvault_jobs::config;
use dbvault_jobs::run::run_night;

use crate::args::{Cli, RunArgs};

pub fn run(cli: &Cli, a: &RunArgs) -> Result<ExitCode> {
    let path = config::locate(cli.config.as_deref())?;
    let cfg = config::load(&path)?;
    if let Some(j) = &a.job {
        if !cfg.source.iter().any(|s| &s.name == j) {
            bail!("{}: no source named {j:?}", path.display());
        }
    }
    if a.dry_run {
        return dry_run(cli, &cfg, &path, a);
    }
    let night = run_night(
        &crate::repo_access::access(cli)?,
        &crate::output::events(cli),
        &cfg,
        a.job.as_deref(),
    )?;
    let ok = night.ok;
    if cli.json {
        crate::output::json(&serde_json::json!({
            "ok": ok,
            "config": path.display().to_string(),
            "seconds": night.seconds,
            "sources": night.sources,
            "maintenance": night.maintenance,
        }));
    } else {
        crate::outln!("dbvault run ({})", path.display());
        for r in &night.sources {
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
        for s in &night.maintenance {
            crate::outln!(
                "  {:<7} {} on {}: {}",
                if s.ok { "ok" } else { "FAILED" },
                s.step,
                s.repository,
                s.detail
            );
        }
        let bad = night.sources.iter().filter(|r| !r.ok).count();
        crate::outln!(
            "{} of {} sources backed up in {:.1} s{}",
            night.sources.len() - bad,
            night.sources.len(),
            night.seconds,
            if ok { "" } else { "; FAILURES above" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `run --dry-run`: the plan, changing nothing.
fn dry_run(
    cli: &Cli,
    cfg: &config::Config,
    path: &std::path::Path,
    a: &RunArgs,
) -> Result<ExitCode> {
    let plan =
        dbvault_jobs::plan::plan_night(&crate::repo_access::access(cli)?, cfg, a.job.as_deref())?;
    let code = if plan.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if cli.json {
        crate::output::json(&serde_json::to_value(&plan)?);
        return Ok(code);
    }
    crate::outln!(
        "dbvault run --dry-run ({}): nothing is changed",
        path.display()
    );
    for r in &plan.repositories {
        crate::outln!("repository {}:", r.name);
        if let Some(e) = &r.error {
            crate::outln!("  cannot be opened: {e}");
            continue;
        }
        for s in &r.sources {
            crate::outln!("  {}: back up {}", s.name, s.backup);
            crate::outln!(
                "    retention {}: after tonight's snapshot, keep {} older, forget {}",
                s.retention,
                s.keep,
                s.forget.len()
            );
            for (id, t) in &s.forget {
                crate::outln!("      would forget {id} ({t})");
            }
        }
        if r.sources.is_empty() && r.steps.is_empty() {
            crate::outln!("  no source of its own (it receives copies)");
        }
        for st in &r.steps {
            crate::outln!(
                "  {}: {} ({})",
                st.step,
                if st.runs { "runs" } else { "skipped" },
                st.detail
            );
        }
    }
    if !plan.ok {
        crate::outln!("tonight's run would fail where it says above");
    }
    Ok(code)
}
