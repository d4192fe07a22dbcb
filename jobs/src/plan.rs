//! `run --dry-run`: what tonight's run would do, read from the configuration and the
//! repositories, changing nothing: each source's backup, the snapshots its retention would
//! forget, the offsite copy, and whether prune and check are due.

use anyhow::Result;
use dbvault_core::report::ReportKind;
use serde::Serialize;

use crate::access::Access;
use crate::config::{Config, Source};
use crate::run::{due, open_configured, policy_for};

/// One source's part of the night.
#[derive(Clone, Debug, Serialize)]
pub struct SourcePlan {
    /// Its name.
    pub name: String,
    /// What would be backed up (the database or file, never a password).
    pub backup: String,
    /// Its retention rules, or why none apply.
    pub retention: String,
    /// Snapshots its retention would forget once tonight's is made: id and time.
    pub forget: Vec<(String, String)>,
    /// Older snapshots it would keep (tonight's is kept besides).
    pub keep: usize,
}

/// A maintenance step's schedule.
#[derive(Clone, Debug, Serialize)]
pub struct StepPlan {
    /// `prune`, `check`, `copy to NAME`.
    pub step: String,
    /// Whether it would run tonight.
    pub runs: bool,
    /// Why, or what it would do.
    pub detail: String,
}

/// One repository's part of the night.
#[derive(Clone, Debug, Serialize)]
pub struct RepoPlan {
    /// The repository's name in the file.
    pub name: String,
    /// Why it could not be read (then nothing else is known of it).
    pub error: Option<String>,
    /// Its sources.
    pub sources: Vec<SourcePlan>,
    /// Copy, prune and check.
    pub steps: Vec<StepPlan>,
}

/// What `run` would do tonight.
#[derive(Clone, Debug, Serialize)]
pub struct NightPlan {
    /// Everything could be read (else `run` would fail somewhere: the plan says where).
    pub ok: bool,
    /// Per repository.
    pub repositories: Vec<RepoPlan>,
}

fn what(s: &Source) -> String {
    let mut w = match s.target() {
        Ok((Some(t), _, whole)) => {
            let shown = dbvault_formats::postgres::PgSource::parse(&t)
                .map_or_else(|_| t.clone(), |p| p.describe());
            format!("{}{shown}", if whole { "every database of " } else { "" })
        }
        Ok((None, Some(c), _)) => format!("the output of `{c}`"),
        _ => "nothing: the source is malformed".into(),
    };
    if s.physical {
        w = format!("a base backup of the cluster at {w}");
    }
    if !s.selection.is_whole() {
        w.push_str(" (selective)");
    }
    w
}

/// The plan of `cfg`'s night (only source `job`, when given, which skips maintenance).
///
/// # Errors
/// None beyond what the plan reports; kept for what cannot be reported.
pub fn plan_night(access: &Access, cfg: &Config, job: Option<&str>) -> Result<NightPlan> {
    let mut out = Vec::new();
    let mut ok = true;
    for (rname, rc) in &cfg.repository {
        let sources = cfg.sources_in(rname, job);
        if sources.is_empty() && job.is_some() {
            continue;
        }
        let mut plan = RepoPlan {
            name: rname.clone(),
            error: None,
            sources: Vec::new(),
            steps: Vec::new(),
        };
        let repo = match open_configured(access, rname, rc) {
            Ok(r) => r,
            Err(e) => {
                ok = false;
                plan.error = Some(crate::one_line(&e));
                out.push(plan);
                continue;
            }
        };
        let append_only = access.is_append_only(Some(rc));
        for s in &sources {
            let mut sp = SourcePlan {
                name: s.name.clone(),
                backup: what(s),
                retention: String::new(),
                forget: Vec::new(),
                keep: 0,
            };
            match policy_for(&repo, cfg, s) {
                _ if append_only => sp.retention = "left to the admin host (append-only)".into(),
                Ok(None) => sp.retention = "none: every snapshot is kept".into(),
                Ok(Some(p)) if p.is_empty() => sp.retention = "none: every snapshot is kept".into(),
                Ok(Some(p)) => {
                    sp.retention = p.describe();
                    // As `run` applies it: after tonight's snapshot, which counts too.
                    match repo.readable_snapshots() {
                        Ok((snaps, _)) => {
                            let tonight = dbvault_core::Id::hash_of(b"tonight's snapshot");
                            let mut list: Vec<_> = snaps
                                .iter()
                                .filter(|(_, x)| x.name == s.name)
                                .map(|(id, x)| (*id, x.name.clone(), x.time))
                                .collect();
                            list.push((
                                tonight,
                                s.name.clone(),
                                chrono::Local::now().fixed_offset(),
                            ));
                            let groups =
                                dbvault_core::retention::apply_grouped(&list, &p, &chrono::Local);
                            for v in groups.values().flatten().filter(|v| v.id != tonight) {
                                if v.reasons.is_empty() {
                                    sp.forget.push((v.id.short(), crate::time_text(&v.time)));
                                } else {
                                    sp.keep += 1;
                                }
                            }
                        }
                        Err(e) => {
                            sp.retention = format!(
                                "{}: cannot be applied: {}",
                                p.describe(),
                                crate::one_line(&e.into())
                            );
                            ok = false;
                        }
                    }
                }
                Err(e) => {
                    sp.retention = format!("cannot be read: {}", crate::one_line(&e));
                    ok = false;
                }
            }
            plan.sources.push(sp);
        }
        if let Some(target) = &rc.copy_to {
            let step = format!("copy to {}", target.get_ref());
            let detail = (|| -> Result<String> {
                let trc = cfg
                    .repository
                    .get(target.get_ref())
                    .ok_or_else(|| anyhow::anyhow!("no repository named {:?}", target.get_ref()))?;
                let to = open_configured(access, target.get_ref(), trc)?;
                let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
                let (which, _) = crate::maintain::to_catch_up(&repo, &to, &names)?;
                Ok(format!(
                    "{} snapshot(s) it lacks (tonight's new ones among them, when they are made)",
                    which.len()
                ))
            })();
            plan.steps.push(match detail {
                Ok(d) => StepPlan {
                    step,
                    runs: true,
                    detail: d,
                },
                Err(e) => {
                    ok = false;
                    StepPlan {
                        step,
                        runs: false,
                        detail: crate::one_line(&e),
                    }
                }
            });
        }
        if job.is_none() {
            for (step, kind, sch) in [
                (
                    "prune",
                    ReportKind::Prune,
                    cfg.prune.as_ref().filter(|_| !append_only),
                ),
                ("check", ReportKind::Check, cfg.check.as_ref()),
            ] {
                let Some(sch) = sch else { continue };
                let every = sch.every.as_deref();
                let (runs, detail) = match due(&repo, &kind, every) {
                    Ok(true) => (
                        true,
                        every.map_or_else(|| "every run".into(), |e| format!("due, every {e}")),
                    ),
                    Ok(false) => (false, format!("not due, every {}", every.unwrap_or("run"))),
                    Err(e) => {
                        ok = false;
                        (false, crate::one_line(&e))
                    }
                };
                plan.steps.push(StepPlan {
                    step: step.into(),
                    runs,
                    detail,
                });
            }
        }
        repo.unlock();
        out.push(plan);
    }
    Ok(NightPlan {
        ok,
        repositories: out,
    })
}
