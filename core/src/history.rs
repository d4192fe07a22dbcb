//! Noticing snapshots that vanished without `forget`: a store rolled back, or the newest
//! snapshot deleted so that `restore latest` would quietly give older data.
//!
//! Two records, neither of which someone with only write access to the store can forge:
//! - each client remembers, in its own state directory (`seen.json`, mode 0600), the newest
//!   snapshot it has seen of each source;
//! - each snapshot names its predecessor of the same source (the newest this client knew).
//!
//! `forget` stores an encrypted report listing what it removes *before* removing it, so a
//! snapshot that is gone and in no such report was deleted behind dbvault's back. Deleting
//! those reports too only makes the alarm louder, never quieter.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::snapshot::Predecessor;
use crate::{Error, Id, Repository, Result, Snapshot};

/// A snapshot that should be there and is not.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Missing {
    /// Source name.
    pub name: String,
    /// The missing snapshot.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<FixedOffset>,
    /// The snapshot that names it as predecessor, when that is how it was noticed (else this
    /// client had seen it as the newest of its source).
    pub successor: Option<Id>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshot {} of {} from {} is gone from the repository and no `forget` removed it",
            self.id.short(),
            self.name,
            self.time.format("%Y-%m-%d %H:%M:%S %:z")
        )?;
        match self.successor {
            Some(s) => write!(f, " (snapshot {} names it as its predecessor)", s.short()),
            None => write!(
                f,
                " (this client saw it as the newest of {}): deleted from the store or the store \
                 was rolled back",
                self.name
            ),
        }
    }
}

/// Snapshots as read, with what is missing.
pub struct Audit {
    /// Readable snapshots, oldest first.
    pub snapshots: Vec<(Id, Snapshot)>,
    /// Snapshots that are listed but cannot be read.
    pub damaged: Vec<Error>,
    /// Snapshots that vanished without `forget`.
    pub missing: Vec<Missing>,
    /// The newest snapshot this client saw of a source, listed but unreadable.
    pub damaged_newest: Vec<Missing>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seen {
    #[serde(default)]
    newest: BTreeMap<String, Predecessor>,
    /// When the newest retention policy this client has seen was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<DateTime<chrono::Utc>>,
}

impl Repository {
    fn seen_path(&self) -> Option<PathBuf> {
        self.client_state().map(|d| d.join("seen.json"))
    }

    // An unreadable state file is treated as empty: it must never block a restore.
    fn load_seen(&self) -> Seen {
        self.seen_path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_seen(&self, seen: &Seen) {
        let Some(path) = self.seen_path() else {
            return;
        };
        let Ok(json) = serde_json::to_vec_pretty(seen) else {
            return;
        };
        if let Err(e) = write_private(&path, &json) {
            tracing::warn!(
                "cannot record the snapshots seen in {}: {e}",
                path.display()
            );
        }
    }

    /// Ids that `forget` recorded as removed.
    ///
    /// # Errors
    /// The reports cannot be listed.
    pub fn forgotten(&self) -> Result<HashSet<Id>> {
        let mut out = HashSet::new();
        for r in self.reports()? {
            if r.kind != crate::report::ReportKind::Forget {
                continue;
            }
            if let Some(ids) = r.body["forgotten"].as_array() {
                out.extend(ids.iter().filter_map(|v| Id::from_hex(v.as_str()?).ok()));
            }
        }
        Ok(out)
    }

    /// Records, before removing them, that `forget` removes `ids`.
    pub(crate) fn record_forget(&self, ids: &[Id]) -> Result<()> {
        let list: Vec<String> = ids.iter().map(Id::to_hex).collect();
        let body = serde_json::json!({ "forgotten": list });
        self.save_report(&Report::now(
            crate::report::ReportKind::Forget,
            true,
            None,
            0.0,
            body,
        ))?;
        Ok(())
    }

    /// Reads every snapshot and compares with what this client saw before and what each
    /// snapshot says came before it; remembers the newest of each source for next time.
    /// `chain` also follows the predecessors (reads the reports: `check` and `snapshots`).
    ///
    /// # Errors
    /// The snapshots (or, with `chain`, the reports) cannot be listed.
    pub fn audit(&self, chain: bool) -> Result<Audit> {
        // One listing for both: one request less on S3, and the two cannot disagree.
        let (ids, snapshots, damaged) = self.listed_snapshots()?;
        let present: HashSet<Id> = ids.into_iter().collect();
        let readable: HashSet<Id> = snapshots.iter().map(|(id, _)| *id).collect();
        let mut seen = self.load_seen();
        // The newest snapshot this client saw of each source, where `pick` says.
        let remembered = |seen: &Seen, pick: &dyn Fn(&Id) -> bool| -> Vec<Missing> {
            seen.newest
                .iter()
                .filter(|(_, p)| pick(&p.id))
                .map(|(name, p)| Missing {
                    name: name.clone(),
                    id: p.id,
                    time: p.time,
                    successor: None,
                })
                .collect()
        };
        let damaged_newest =
            remembered(&seen, &|id| present.contains(id) && !readable.contains(id));
        let mut candidates = remembered(&seen, &|id| !present.contains(id));
        if chain {
            for (id, s) in &snapshots {
                if let Some(p) = s.parent.as_ref().filter(|p| !present.contains(&p.id)) {
                    if !candidates.iter().any(|m| m.id == p.id) {
                        candidates.push(Missing {
                            name: s.name.clone(),
                            id: p.id,
                            time: p.time,
                            successor: Some(*id),
                        });
                    }
                }
            }
        }
        let forgotten = if candidates.is_empty() {
            HashSet::new()
        } else {
            self.forgotten()?
        };
        let missing: Vec<Missing> = candidates
            .into_iter()
            .filter(|m| !forgotten.contains(&m.id))
            .collect();
        // Remember the newest of each source; a missing newest stays remembered (the alarm
        // repeats) until a newer snapshot of that source supersedes it.
        let before = serde_json::to_vec(&seen).unwrap_or_default();
        for (id, s) in &snapshots {
            let newer = seen.newest.get(&s.name).is_none_or(|p| {
                s.time > p.time || (forgotten.contains(&p.id) && !present.contains(&p.id))
            });
            if newer {
                seen.newest.insert(
                    s.name.clone(),
                    Predecessor {
                        id: *id,
                        time: s.time,
                    },
                );
            }
        }
        seen.newest
            .retain(|_, p| present.contains(&p.id) || !forgotten.contains(&p.id));
        if serde_json::to_vec(&seen).unwrap_or_default() != before {
            self.save_seen(&seen);
        }
        Ok(Audit {
            snapshots,
            damaged,
            missing,
            damaged_newest,
        })
    }

    /// The predecessor a new snapshot of `name` names: the newest of that source among the
    /// readable snapshots and this client's memory (even if that one has vanished, so the
    /// loss stays on record in the repository).
    ///
    /// # Errors
    /// The snapshots cannot be listed.
    pub fn predecessor(&self, name: &str) -> Result<Option<Predecessor>> {
        let (snaps, _) = self.readable_snapshots()?;
        let stored = snaps
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(id, s)| Predecessor {
                id: *id,
                time: s.time,
            })
            .next_back();
        let remembered = self.load_seen().newest.get(name).cloned();
        Ok(match (stored, remembered) {
            (Some(s), Some(r)) if r.time > s.time => Some(r),
            (Some(s), _) => Some(s),
            (None, r) => r,
        })
    }

    /// Remembers a snapshot this client just wrote as the newest of its source.
    pub(crate) fn remember(&self, id: Id, snap: &Snapshot) {
        if self.client_state().is_none() {
            return;
        }
        let mut seen = self.load_seen();
        let newer = seen
            .newest
            .get(&snap.name)
            .is_none_or(|p| snap.time >= p.time);
        if newer {
            seen.newest.insert(
                snap.name.clone(),
                Predecessor {
                    id,
                    time: snap.time,
                },
            );
            self.save_seen(&seen);
        }
    }
}

impl Repository {
    /// The stored retention policy, refusing one older than a policy this client has seen
    /// (deleting the newer `policy/` objects must not bring an old policy back silently).
    ///
    /// # Errors
    /// [`Error::PolicyRolledBack`]; a damaged policy; backend errors.
    pub fn policy(&self) -> Result<Option<crate::retention::Policy>> {
        let stored = crate::retention::load_stored_policy(self.backend().as_ref(), self.keys())?;
        let mut seen = self.load_seen();
        if let Some(remembered) = seen.policy {
            if stored.as_ref().is_none_or(|(_, t)| *t < remembered) {
                return Err(Error::PolicyRolledBack {
                    seen: remembered.to_rfc3339(),
                    found: stored.map(|(_, t)| t.to_rfc3339()),
                });
            }
        }
        if let Some((p, t)) = stored {
            if seen.policy != Some(t) {
                seen.policy = Some(t);
                self.save_seen(&seen);
            }
            return Ok(Some(p));
        }
        Ok(None)
    }

    /// Stores `policy` as the repository's retention policy, and remembers it.
    ///
    /// # Errors
    /// Backend errors (deleting the older policies needs deletion rights).
    pub fn set_policy(&self, policy: &crate::retention::Policy) -> Result<()> {
        let t = crate::retention::save_policy(self.backend().as_ref(), self.keys(), policy)?;
        let mut seen = self.load_seen();
        seen.policy = Some(t);
        self.save_seen(&seen);
        Ok(())
    }
}

/// tmp (0600) → fsync → rename: a crash leaves the old state or the new one.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".seen.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
