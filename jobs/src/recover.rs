//! Point-in-time recovery from a base backup: the whole cluster into a data directory that
//! recovers when started, or single tables as of a moment through a throwaway server.
//!
//! Both check first that the archive reaches the target (no server is started on a gap).
//! The recovering server fetches its WAL with a `restore_command` that runs the front end
//! again (`wal-fetch`): [`FetchCommand`] says how, so that any front end can be that
//! command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dbvault_core::{Id, Repository, Snapshot};
use dbvault_formats::kind::SnapshotFormat;
use dbvault_formats::notice::Notify;
use dbvault_formats::postgres::physical::{self, reach, restore, throwaway, timeline};
use dbvault_formats::postgres::{PgSource, RestoreOptions};

/// A word for the shell, quoted.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// How a recovering server runs the front end to fetch WAL from this repository: the
/// program, its repository, the passphrase from a file (never the passphrase itself: the
/// command line lands in the server's settings), the store's options.
#[derive(Clone, Debug, Default)]
pub struct FetchCommand {
    /// The program (`dbvault`), run as `PROGRAM --repo … wal-fetch --name SOURCE %f %p`.
    pub program: PathBuf,
    /// The repository URL or path.
    pub repo: Option<String>,
    /// The passphrase file.
    pub password_file: Option<PathBuf>,
    /// `--s3-endpoint` (else `AWS_ENDPOINT_URL` of this process).
    pub s3_endpoint: Option<String>,
    /// `--s3-region`.
    pub s3_region: Option<String>,
    /// `--s3-path-style`.
    pub s3_path_style: bool,
}

impl FetchCommand {
    /// The `restore_command` for the WAL archive of `source`.
    ///
    /// # Errors
    /// No repository or no passphrase file given.
    pub fn for_source(&self, source: &str) -> Result<String> {
        let Some(repo) = &self.repo else {
            bail!(
                "give --repo (or DBVAULT_REPO): the recovering server's restore_command names it"
            );
        };
        let Some(pw) = &self.password_file else {
            bail!("the recovering server reads the passphrase from a file: give --password-file (or DBVAULT_PASSWORD_FILE); a passphrase in the environment is not written into its settings");
        };
        let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let repo = if repo.contains("://") {
            repo.clone()
        } else {
            abs(Path::new(repo)).display().to_string()
        };
        let mut words = Vec::new();
        // The recovering server's environment is not this one: a cache directory given
        // here goes along (the prefetched segments live there).
        if let Some(d) = std::env::var_os("DBVAULT_CACHE_DIR").filter(|d| !d.is_empty()) {
            words.extend([
                "env".to_string(),
                sh_quote(&format!("DBVAULT_CACHE_DIR={}", Path::new(&d).display())),
            ]);
        }
        words.extend([
            sh_quote(&self.program.display().to_string()),
            "--repo".into(),
            sh_quote(&repo),
            "--password-file".into(),
            sh_quote(&abs(pw).display().to_string()),
        ]);
        if repo.starts_with("s3://") {
            let endpoint = self
                .s3_endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
            if let Some(e) = endpoint {
                words.extend(["--s3-endpoint".into(), sh_quote(&e)]);
            }
            if let Some(r) = &self.s3_region {
                words.extend(["--s3-region".into(), sh_quote(r)]);
            }
            if self.s3_path_style {
                words.push("--s3-path-style".into());
            }
        }
        words.extend([
            "wal-fetch".into(),
            "--name".into(),
            sh_quote(source),
            "%f".into(),
            "%p".into(),
        ]);
        Ok(words.join(" "))
    }

    /// The `restore_command` of a throwaway recovery: the program asking the relay that
    /// listens on `socket` (`wal-fetch --relay SOCKET %f %p`).
    #[must_use]
    pub fn relay(&self, socket: &Path) -> String {
        format!(
            "{} wal-fetch --relay {} %f %p",
            sh_quote(&self.program.display().to_string()),
            sh_quote(&socket.display().to_string())
        )
    }
}

/// Where recovery stops, as the user wrote it (`--target-time` in any form
/// `dbvault_core::when::parse_time` reads).
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `--target-time`.
    pub time: Option<String>,
    /// `--target-lsn`.
    pub lsn: Option<String>,
    /// `--target-xid`.
    pub xid: Option<String>,
    /// `--target-name` (a restore point).
    pub name: Option<String>,
    /// `--target-timeline` (`current`, `latest`, a number).
    pub timeline: Option<String>,
    /// `--target-action` (pgdata restores only).
    pub action: Option<String>,
    /// `Some(false)`: stop just before the transaction or LSN (`--before-xid`,
    /// `--before-lsn`), as `events` prints them.
    pub inclusive: Option<bool>,
}

impl Target {
    /// Whether recovery stops before the end of the archive.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.time.is_some() || self.lsn.is_some() || self.xid.is_some() || self.name.is_some()
    }

    /// `to 2026-…`, `to LSN …`, … for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let before = self.inclusive == Some(false);
        match (&self.time, &self.lsn, &self.xid, &self.name) {
            (Some(t), ..) => format!("to {t}"),
            (_, Some(l), ..) if before => format!("to just before LSN {l}"),
            (_, Some(l), ..) => format!("to LSN {l}"),
            (_, _, Some(x), _) if before => format!("to just before transaction {x}"),
            (_, _, Some(x), _) => format!("to transaction {x}"),
            (.., Some(n)) => format!("to restore point {n}"),
            _ => "to the end of the archive".into(),
        }
    }

    fn parsed_time(&self) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>> {
        Ok(self
            .time
            .as_deref()
            .map(dbvault_core::when::parse_time)
            .transpose()?)
    }

    fn goal(&self) -> Result<reach::Goal<'_>> {
        Ok(reach::Goal {
            time: self.parsed_time()?,
            lsn: self.lsn.as_deref(),
            timeline: self
                .timeline
                .as_deref()
                .map(timeline::TimelineChoice::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    fn recovery(
        &self,
        timeline: Option<String>,
        action: Option<String>,
    ) -> Result<restore::RecoveryTarget> {
        Ok(restore::RecoveryTarget {
            time: self.parsed_time()?.map(|t| reach::recovery_time(&t)),
            lsn: self.lsn.clone(),
            xid: self.xid.clone(),
            name: self.name.clone(),
            action,
            timeline,
            inclusive: self.inclusive,
        })
    }
}

/// The base backup `selector` names (`latest`: the newest `filter` lets through), or with
/// a target time and `latest` the newest one taken before it (of the filter's name).
///
/// # Errors
/// No such snapshot, or one that is not a base backup.
pub fn pick_base(
    repo: &Repository,
    selector: &str,
    filter: &dbvault_core::SnapshotFilter,
    target: &Target,
) -> Result<(Id, Snapshot)> {
    let (id, snap) = match (target.parsed_time()?, selector) {
        (Some(t), "latest") => repo.find_at(filter.name.as_deref(), t)?,
        _ => repo.find_snapshot_in(selector, filter)?,
    };
    if SnapshotFormat::of(&snap)? != SnapshotFormat::PgPhysical {
        bail!(
            "snapshot {} is a logical backup ({}): --to pgdata: takes a physical one (`backup --physical`)",
            id.short(),
            snap.source.format
        );
    }
    Ok((id, snap))
}

/// A cluster restore's options.
pub struct PgdataRequest<'a> {
    /// The data directory (created; must be empty unless `force`).
    pub dir: &'a Path,
    /// Empty the directory first.
    pub force: bool,
    /// Where recovery stops.
    pub target: Target,
    /// `off` or `preserve`.
    pub archive_mode: &'a str,
    /// How the server fetches its WAL.
    pub fetch: &'a FetchCommand,
}

/// What a cluster restore prepared.
#[derive(Clone, Debug)]
pub struct PgdataRestored {
    /// The base backup's first WAL segment.
    pub start_wal: String,
    /// The source whose WAL archive recovery reads.
    pub wal_source: String,
    /// The timeline recovery follows when it had to be named
    /// (`recovery_target_timeline`).
    pub timeline: Option<u32>,
    /// Whether the copy archives (`--archive-mode preserve`).
    pub archives: bool,
}

/// Restores base backup `snap` into `req.dir`, ready to recover to `req.target` when
/// started, having checked that the archive reaches it.
///
/// # Errors
/// A directory that is not empty, the archive not reaching the target (naming the missing
/// segment), damaged or unreadable data.
pub fn restore_pgdata(
    repo: &Repository,
    snap: &Snapshot,
    req: &PgdataRequest<'_>,
    notify: Notify<'_>,
) -> Result<PgdataRestored> {
    if req.dir.as_os_str().is_empty() {
        bail!("pgdata: needs a directory, e.g. --to pgdata:/var/lib/postgresql/15/restored");
    }
    let info = physical::BaseBackup::of(snap.part(physical::PART).context("no base.tar")?)?;
    let archive = restore::ArchiveMode::parse(req.archive_mode)?;
    let resolved = reach::reachable(repo, &info, &req.target.goal()?)?;
    let o = restore::PgdataOptions {
        dir: req.dir,
        force: req.force,
        restore_command: req.fetch.for_source(&info.wal_source)?,
        target: req
            .target
            .recovery(resolved.setting.clone(), req.target.action.clone())?,
        archive,
    };
    physical::restore::restore_pgdata(repo, snap, &o, notify)?;
    Ok(PgdataRestored {
        start_wal: info.start_wal,
        wal_source: info.wal_source,
        timeline: resolved.setting.is_some().then_some(resolved.timeline),
        archives: archive == restore::ArchiveMode::Preserve,
    })
}

/// Where single tables of a base backup go.
pub enum TablesTo<'a> {
    /// A live database.
    Database(&'a PgSource),
    /// A script on a stream.
    Script(&'a mut (dyn std::io::Write + Send)),
}

/// What a table restore from a base backup did.
#[derive(Clone, Debug)]
pub struct TablesRestored {
    /// The last WAL segment the throwaway server replayed (`None`: none was needed).
    pub last_segment: Option<String>,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// A table restore's options.
pub struct TablesRequest<'a> {
    /// Where recovery stops (no `action`: the throwaway server always ends its recovery).
    pub target: &'a Target,
    /// How the throwaway server fetches its WAL (through a relay: see [`FetchCommand::relay`]).
    pub fetch: &'a FetchCommand,
    /// The database of the cluster the tables are in.
    pub database: &'a str,
    /// The tables (`opts.tables`, at least one) and how to restore them.
    pub opts: &'a RestoreOptions,
}

/// Restores the tables `req` names as they were at its target, from base backup `snap`
/// and its WAL, through a throwaway server that is gone afterwards.
///
/// # Errors
/// A target action given, the archive not reaching the target, the throwaway server or
/// the restore failing.
pub fn restore_tables(
    repo: &Repository,
    snap: &Snapshot,
    req: &TablesRequest<'_>,
    to: TablesTo<'_>,
    notify: Notify<'_>,
) -> Result<TablesRestored> {
    let target = req.target;
    if target.action.is_some() {
        bail!("--target-action is for --to pgdata:DIR (a table restore's throwaway server always ends its recovery)");
    }
    let info = physical::BaseBackup::of(snap.part(physical::PART).context("no base.tar")?)?;
    reach::reachable(repo, &info, &target.goal()?)?;
    let relay = |socket: &Path| req.fetch.relay(socket);
    let o = throwaway::RecoverOptions {
        target: target.recovery(target.timeline.clone(), None)?,
        restore_command: &relay,
    };
    let to = match to {
        TablesTo::Database(db) => dbvault_formats::postgres::Target::Database(db),
        TablesTo::Script(out) => dbvault_formats::postgres::Target::Script(out),
    };
    let t0 = std::time::Instant::now();
    let served =
        physical::table::restore_tables_at(repo, snap, &o, req.database, req.opts, to, notify)?;
    Ok(TablesRestored {
        last_segment: served.segments.last().cloned(),
        elapsed: t0.elapsed(),
    })
}
