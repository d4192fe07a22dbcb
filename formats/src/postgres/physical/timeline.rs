//! Which timeline a recovery follows, and the branches that make the choice matter.
//!
//! Two servers can archive into one source: a restored copy started with archiving on,
//! or a split brain. Each promotion writes `N.history` naming its parent and the switch
//! point; when the parent's own segments go on past that point in the archive, the parent
//! kept running after the fork, and the archive holds two diverging histories. PostgreSQL's
//! default, `recovery_target_timeline = 'latest'`, would follow the newer timeline, which
//! is the copy's whenever the copy promoted last: a restore of production would then
//! silently come back with the copy's data and without production's. So dbvault never
//! lets `latest` choose across such a fork: the restore is refused, naming both branches,
//! until the user picks one with `--target-timeline` (or removes the stray branch).

use super::archive::Archive;
use super::{format_lsn, BaseBackup};
use crate::error::{FormatError, Result};
use crate::postgres::wal::{self, WalFile};

/// A timeline that forked from a parent which the archive shows kept going past the fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The forked timeline.
    pub timeline: u32,
    /// Its parent.
    pub parent: u32,
    /// The switch point (LSN) in the parent's history.
    pub switch_lsn: u64,
    /// The parent's newest archived segment, past the switch point.
    pub parent_last: String,
}

impl Fork {
    /// One line for `check`, `snapshots` and `wal-push`.
    pub fn describe(&self, source: &str) -> String {
        format!(
            "timeline {} forked from timeline {} at {}, but timeline {} was archived past that point (to {}): two servers archive into source {source:?} (a restored copy started with archiving on, or a split brain); a restore must choose with --target-timeline {} or {}, and `dbvault wal-remove-timeline {} --name {source}` removes the stray branch",
            self.timeline,
            self.parent,
            format_lsn(self.switch_lsn),
            self.parent,
            self.parent_last,
            self.parent,
            self.timeline,
            self.timeline,
        )
    }
}

/// `--target-timeline`: PostgreSQL's `recovery_target_timeline`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline descending from the base backup's, unless a fork makes that
    /// ambiguous (see the module docs).
    #[default]
    Latest,
    /// The base backup's own timeline.
    Current,
    /// This timeline (it must descend from the base backup's).
    Id(u32),
}

impl TimelineChoice {
    /// Parses `current`, `latest` or a number (decimal, or hex as in WAL file names with
    /// `0x`).
    ///
    /// # Errors
    /// [`FormatError::Invalid`] for anything else.
    pub fn parse(s: &str) -> Result<TimelineChoice> {
        let s = s.trim();
        match s {
            "latest" => return Ok(TimelineChoice::Latest),
            "current" => return Ok(TimelineChoice::Current),
            _ => {}
        }
        let n = match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        };
        n.filter(|n| *n > 0).map(TimelineChoice::Id).ok_or_else(|| {
            FormatError::Invalid(format!(
                "--target-timeline {s:?}: use current, latest or a timeline number"
            ))
        })
    }
}

/// Where a recovery from a base backup ends up, and the setting that makes PostgreSQL
/// follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// `recovery_target_timeline`'s value, `None` for PostgreSQL's default (`latest`,
    /// which is then unambiguous).
    pub setting: Option<String>,
}

impl Archive {
    /// The timeline itself and every timeline whose history holds it.
    pub fn descendants(&self, tli: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .history
            .iter()
            .filter(|(_, h)| h.iter().any(|(p, _)| *p == tli))
            .map(|(t, _)| *t)
            .collect();
        v.push(tli);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Timelines that forked from a parent archived past the fork (see the module docs).
    pub fn forks(&self) -> Vec<Fork> {
        let per_log = self.per_log();
        self.history
            .iter()
            .filter_map(|(t, h)| {
                // The history's last line is the direct parent and its switch point.
                let (parent, sw) = *h.last()?;
                let sw_seg = sw / self.segment_size.max(1);
                let last = *self
                    .segments
                    .get(&parent)?
                    .range(sw_seg + 1..)
                    .next_back()?;
                Some(Fork {
                    timeline: *t,
                    parent,
                    switch_lsn: sw,
                    parent_last: wal::segment_name(parent, last, per_log),
                })
            })
            .collect()
    }

    /// The timeline a recovery from `b` follows for `choice`.
    ///
    /// # Errors
    /// [`FormatError::Invalid`]: a timeline that does not descend from the base backup's;
    /// `latest` across a fork (naming both branches).
    pub fn resolve(
        &self,
        b: &BaseBackup,
        choice: TimelineChoice,
        source: &str,
    ) -> Result<Resolved> {
        let family = self.descendants(b.timeline);
        match choice {
            TimelineChoice::Current => Ok(Resolved {
                timeline: b.timeline,
                setting: Some("current".into()),
            }),
            TimelineChoice::Id(n) if family.contains(&n) => Ok(Resolved {
                timeline: n,
                setting: Some(n.to_string()),
            }),
            TimelineChoice::Id(n) => Err(FormatError::Invalid(format!(
                "timeline {n} does not descend from timeline {} of the base backup (the archive of {source:?} has {}): give one of those, or restore another base backup",
                b.timeline,
                family
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            TimelineChoice::Latest => {
                let forks: Vec<Fork> = self
                    .forks()
                    .into_iter()
                    .filter(|f| f.timeline != b.timeline && family.contains(&f.timeline))
                    .collect();
                if let Some(f) = forks.first() {
                    return Err(FormatError::Invalid(format!(
                        "the archive holds two branches after this base backup, so `latest` is ambiguous: {}",
                        f.describe(source)
                    )));
                }
                Ok(Resolved {
                    timeline: family.iter().copied().max().unwrap_or(b.timeline),
                    setting: None,
                })
            }
        }
    }

    /// The files of timeline `tli` and of every timeline descending from it: their
    /// history files, segments, partial segments and backup history files.
    pub fn branch_files(&self, tli: u32) -> Vec<String> {
        let per_log = self.per_log();
        let branch = self.descendants(tli);
        let on_branch = |name: &str| {
            u32::from_str_radix(name.get(..8).unwrap_or(""), 16).is_ok_and(|t| branch.contains(&t))
        };
        self.names
            .iter()
            .filter(|n| match wal::parse_name(n, per_log) {
                Some(WalFile::History(t)) => branch.contains(&t),
                Some(WalFile::Segment { timeline, .. }) => branch.contains(&timeline),
                Some(WalFile::Other) => on_branch(n),
                None => false,
            })
            .cloned()
            .collect()
    }
}

/// Removes (unless `dry_run`) timeline `tli` of `source` and every timeline descending
/// from it: history files, segments, partial segments, backup history files. Returns the
/// names. `snaps` are the repository's snapshots: a branch a base backup was taken on is
/// refused (forget those first).
///
/// # Errors
/// [`FormatError::Invalid`]: timeline 1 (the cluster's first, forked from nothing), a
/// timeline the archive has no history file of, base backups on the branch;
/// [`dbvault_core::Error::DeleteRefused`] on an append-only handle; storage errors.
pub fn remove_branch(
    repo: &dbvault_core::Repository,
    source: &str,
    tli: u32,
    snaps: &[(dbvault_core::Id, dbvault_core::Snapshot)],
    dry_run: bool,
) -> Result<Vec<String>> {
    let bases = super::health::by_source(snaps)
        .remove(source)
        .unwrap_or_default();
    let seg = match bases.first() {
        Some((_, b, _)) => b.segment_size,
        None => wal::segment_size(repo, source)?.unwrap_or(16 << 20),
    };
    let arch = Archive::load(repo, source, seg)?;
    if !arch.history.contains_key(&tli) {
        let known: Vec<String> = arch.history.keys().map(u32::to_string).collect();
        return Err(FormatError::Invalid(format!(
            "the archive of {source:?} has no history file of timeline {tli}, so it forks nothing (timelines with one: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    }
    let branch = arch.descendants(tli);
    let on_branch: Vec<String> = bases
        .iter()
        .filter(|(_, b, _)| branch.contains(&b.timeline))
        .map(|(id, b, _)| format!("{} (timeline {})", id.short(), b.timeline))
        .collect();
    if !on_branch.is_empty() {
        return Err(FormatError::Invalid(format!(
            "base backup(s) {} were taken on this branch: it is not stray (forget them first if it is)",
            on_branch.join(", ")
        )));
    }
    let files = arch.branch_files(tli);
    if !dry_run && !files.is_empty() {
        repo.remove_files(&wal::namespace(repo, source), &files)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::postgres::physical::archive::tests::{archive, SEG};

    fn base(tli: u32, start: u64) -> BaseBackup {
        BaseBackup {
            timeline: tli,
            start_wal: wal::segment_name(tli, start, 256),
            stop_wal: wal::segment_name(tli, start, 256),
            segment_size: SEG,
            ..Default::default()
        }
    }

    #[test]
    fn a_failover_is_followed_and_a_copy_archiving_beside_production_is_refused() {
        // A failover: timeline 1 ends in segment 5, timeline 2 goes on. No fork.
        let failover = archive(
            &[(1, 3), (1, 4), (1, 5), (2, 5), (2, 6)],
            &[(2, vec![(1, 5 * SEG + 100)])],
        );
        assert!(failover.forks().is_empty());
        let r = failover
            .resolve(&base(1, 3), TimelineChoice::Latest, "main")
            .expect("latest");
        assert_eq!((r.timeline, r.setting), (2, None));

        // A restored copy promoted at segment 5 while production went on to segment 8.
        let forked = archive(
            &[
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
                (1, 8),
                (2, 5),
                (2, 6),
            ],
            &[(2, vec![(1, 5 * SEG + 100)])],
        );
        let f = forked.forks();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].timeline, f[0].parent), (2, 1));
        assert_eq!(f[0].parent_last, "000000010000000000000008");
        let e = forked
            .resolve(&base(1, 3), TimelineChoice::Latest, "main")
            .expect_err("ambiguous")
            .to_string();
        assert!(
            e.contains("two branches") && e.contains("--target-timeline 1 or 2"),
            "{e}"
        );
        let cur = forked
            .resolve(&base(1, 3), TimelineChoice::Current, "main")
            .expect("current");
        assert_eq!((cur.timeline, cur.setting.as_deref()), (1, Some("current")));
        let two = forked
            .resolve(&base(1, 3), TimelineChoice::Id(2), "main")
            .expect("2");
        assert_eq!(two.setting.as_deref(), Some("2"));
        assert!(forked
            .resolve(&base(1, 3), TimelineChoice::Id(3), "main")
            .is_err());
        // The stray branch's files, and only those.
        assert_eq!(
            forked.branch_files(2),
            vec![
                "00000002.history",
                "000000020000000000000005",
                "000000020000000000000006"
            ]
        );
    }

    #[test]
    fn choices_parse() {
        assert_eq!(
            TimelineChoice::parse("latest").ok(),
            Some(TimelineChoice::Latest)
        );
        assert_eq!(
            TimelineChoice::parse("current").ok(),
            Some(TimelineChoice::Current)
        );
        assert_eq!(TimelineChoice::parse("3").ok(), Some(TimelineChoice::Id(3)));
        assert_eq!(
            TimelineChoice::parse("0x1A").ok(),
            Some(TimelineChoice::Id(26))
        );
        assert!(TimelineChoice::parse("0").is_err());
        assert!(TimelineChoice::parse("newest").is_err());
    }
}
