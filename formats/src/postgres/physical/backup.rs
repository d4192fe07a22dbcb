//! `backup postgres://… --physical`: a base backup of the whole cluster through the
//! replication protocol (pg_basebackup's tar stream, non-exclusive, `-X none`: the WAL it
//! needs comes from the archive that `wal-push` fills). The stream is cut so that an
//! unchanged 8 KiB page costs nothing in the next base backup ([`super::tar`]): every base
//! backup is complete in its manifest and stores only what changed, with no incremental
//! chains. The snapshot is recorded only once every WAL segment from the backup's start to
//! its end is in the repository, so a recorded base backup can always become consistent.

use std::cell::RefCell;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dbvault_core::backup::Backup;
use dbvault_core::input::{Chunking, PartInput};
use dbvault_core::{Repository, SourceInfo};

use super::tar::TarChunks;
use super::{parse_lsn, BaseBackup, FORMAT, PART, PART_KIND};
use crate::error::{FormatError, Result};
use crate::postgres::conn::PgSource;
use crate::postgres::wal;

/// What a physical backup needs besides the connection.
#[derive(Clone, Debug)]
pub struct PhysicalOptions {
    /// The WAL source name (`wal-push --name`).
    pub wal_source: String,
    /// How long to wait for the archive to hold the backup's WAL.
    pub wal_wait: Duration,
    /// On the database host: read this data directory itself ([`super::local`]) instead
    /// of receiving pg_basebackup's stream.
    pub pgdata: Option<std::path::PathBuf>,
}

fn pg_err(context: &str, message: impl Into<String>) -> FormatError {
    FormatError::Postgres {
        context: context.into(),
        message: message.into(),
        sqlstate: None,
    }
}

/// Takes a base backup of `src`'s cluster into `b`; returns what the snapshot records.
/// `repo` is the repository `b` writes to (its WAL archive is checked).
///
/// # Errors
/// pg_basebackup's or the server's error (named); a truncated or malformed stream; the
/// archive not holding the backup's WAL within `opts.wal_wait` (naming the segment
/// missing); a WAL archive of another cluster under that name; storage errors.
pub fn backup(
    b: &Backup<'_>,
    repo: &Repository,
    src: &PgSource,
    opts: &PhysicalOptions,
) -> Result<(SourceInfo, BaseBackup)> {
    let seg_size: u64 = src
        .query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")?
        .trim()
        .parse()
        .map_err(|_| pg_err("wal_segment_size", "not a number"))?;
    // Which file holds which table, read before the backup begins: `events` follows a
    // table through the WAL from here (super::changes). Without it the base backup is
    // still whole: only `events` cannot start from it.
    let catalog = super::catalog::Catalog::read(src).ok();
    let info = match &opts.pgdata {
        Some(dir) => {
            let (pipe, producer) = super::local::start(src, dir)?;
            let producer = RefCell::new(Some(producer));
            let stop = || -> Result<Option<String>> {
                let h = producer
                    .borrow_mut()
                    .take()
                    .ok_or_else(|| pg_err("pg_backup_stop", "asked twice"))?;
                let s = h
                    .join()
                    .map_err(|_| pg_err("pg_backup_stop", "the copying thread panicked"))??;
                Ok(Some(s.stop_lsn))
            };
            let r = ingest(b, pipe, seg_size, &opts.wal_source, &stop);
            if let Some(h) = producer.borrow_mut().take() {
                // The stream failed before its end: the producer still ends the backup.
                let _ = h.join();
            }
            r?
        }
        None => replicated(b, src, seg_size, opts)?,
    };
    match wal::bound_cluster(repo, &opts.wal_source)? {
        Some(c) if c.to_string() != info.system_identifier => {
            return Err(FormatError::Invalid(format!(
                "the cluster's system identifier is {}, but the WAL archived as {:?} is of cluster {c}: give --name the source its archive_command uses",
                info.system_identifier, opts.wal_source
            )))
        }
        _ => {}
    }
    wait_for_wal(repo, src, &info, opts)?;
    if let Some(c) = &catalog {
        let json =
            serde_json::to_vec(c).map_err(|e| FormatError::Invalid(format!("the catalog: {e}")))?;
        b.add_part(
            PartInput {
                chunking: Chunking::ContentDefined,
                name: super::catalog::PART.into(),
                kind: super::catalog::PART_KIND.into(),
                rows: None,
                meta: Default::default(),
            },
            json.as_slice(),
        )?;
    }
    let source = SourceInfo {
        kind: "postgres".into(),
        identity: src.describe(),
        format: FORMAT.into(),
        server_version: Some(info.server_version.clone()),
        notes: Vec::new(),
    };
    Ok((source, info))
}

/// Through the replication protocol: pg_basebackup's tar stream on its stdout.
fn replicated(
    b: &Backup<'_>,
    src: &PgSource,
    seg_size: u64,
    opts: &PhysicalOptions,
) -> Result<BaseBackup> {
    let mut child = src
        .tool("pg_basebackup")?
        .args([
            "-D",
            "-",
            "-F",
            "t",
            "-X",
            "none",
            "--checkpoint=fast",
            "--label=dbvault",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FormatError::io("pg_basebackup (apt-get install postgresql-client)", e))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| FormatError::io("pg_basebackup", std::io::Error::other("no stdout")))?;
    let mut err_pipe = child.stderr.take();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err_pipe.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    // The server holds the end of the stream back until the backup's WAL is archived;
    // with archiving stalled it would wait forever, so silence longer than `wal_wait`
    // ends it.
    let child = std::sync::Mutex::new(child);
    let last = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let killed = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let r = std::thread::scope(|scope| {
        scope.spawn(|| {
            use std::sync::atomic::Ordering::SeqCst;
            while !done.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let idle = (t0.elapsed().as_millis() as u64).saturating_sub(last.load(SeqCst));
                if idle > opts.wal_wait.as_millis() as u64 {
                    killed.store(true, SeqCst);
                    if let Ok(mut c) = child.lock() {
                        let _ = c.kill();
                    }
                    return;
                }
            }
        });
        let watched = Watched {
            inner: out,
            last: &last,
            t0,
        };
        let r = ingest(b, watched, seg_size, &opts.wal_source, &|| Ok(None));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    if killed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(FormatError::Invalid(format!(
            "the server sent nothing for {} s: it waits for the backup's WAL to be archived, and archiving is stalled (pg_stat_archiver says what fails; is archive_command = 'dbvault wal-push --name {} %p' set, with this repository?)",
            opts.wal_wait.as_secs(),
            opts.wal_source
        )));
    }
    let mut child = child.into_inner().unwrap_or_else(|p| p.into_inner());
    let status = child
        .wait()
        .map_err(|e| FormatError::io("pg_basebackup", e))?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let first = stderr
            .lines()
            .find(|l| l.contains("error") || l.contains("FATAL"))
            .or_else(|| stderr.lines().next())
            .unwrap_or("failed");
        return Err(pg_err("pg_basebackup", first));
    }
    r
}

/// A reader that notes when it last gave bytes (milliseconds since `t0`).
struct Watched<'a, R> {
    inner: R,
    last: &'a std::sync::atomic::AtomicU64,
    t0: Instant,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.last.store(
            self.t0.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(n)
    }
}

/// Stores a base backup's tar stream as the snapshot's part; returns what it says of
/// itself. `stop` gives the stop LSN once the stream has ended, when the stream's own
/// `backup_manifest` does not.
fn ingest(
    b: &Backup<'_>,
    reader: impl Read,
    seg_size: u64,
    wal_source: &str,
    stop: &dyn Fn() -> Result<Option<String>>,
) -> Result<BaseBackup> {
    let tc = RefCell::new(TarChunks::new(std::io::BufReader::with_capacity(
        1 << 20,
        reader,
    )));
    // What the stream says of itself, known once it has been read (for the part's meta).
    let described: RefCell<Option<Result<BaseBackup>>> = RefCell::new(None);
    let stored = b.add_chunks_then(
        PART,
        |take| loop {
            let next = tc.borrow_mut().next_chunk();
            match next.map_err(dbvault_core::Error::Source)? {
                Some(c) => take(c)?,
                None => return Ok(()),
            }
        },
        || {
            let r = stop().and_then(|s| describe(&tc.borrow(), seg_size, wal_source, s));
            let meta = r.as_ref().map(BaseBackup::to_meta).unwrap_or_default();
            *described.borrow_mut() = Some(r);
            PartInput {
                chunking: Chunking::ContentDefined,
                name: PART.into(),
                kind: PART_KIND.into(),
                rows: None,
                meta,
            }
        },
    );
    stored?;
    if !tc.borrow().ended {
        return Err(pg_err("base backup", "the tar stream ended early"));
    }
    described
        .into_inner()
        .unwrap_or_else(|| Err(pg_err("base backup", "the stream was not described")))
}

/// What the stream says of itself: `backup_label`, `backup_manifest`, `pg_control`.
fn describe<R: Read>(
    tc: &TarChunks<R>,
    seg_size: u64,
    wal_source: &str,
    stop: Option<String>,
) -> Result<BaseBackup> {
    let text = |n: &str| {
        tc.kept
            .get(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| pg_err("pg_basebackup", format!("the stream has no {n}")))
    };
    let label = text("backup_label")?;
    let field = |k: &str| {
        label
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| pg_err("backup_label", format!("no {k}")))
    };
    let start = field("START WAL LOCATION:")?;
    let start_lsn = start.split_whitespace().next().unwrap_or("").to_string();
    let timeline: u32 = field("START TIMELINE:")?
        .parse()
        .map_err(|_| pg_err("backup_label", "bad START TIMELINE"))?;
    let stop_lsn = match stop {
        Some(s) => s,
        None => {
            let manifest: serde_json::Value = serde_json::from_str(&text("backup_manifest")?)
                .map_err(|e| pg_err("backup_manifest", e.to_string()))?;
            let ranges = manifest["WAL-Ranges"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ranges
                .last()
                .and_then(|r| r["End-LSN"].as_str())
                .ok_or_else(|| pg_err("backup_manifest", "no WAL-Ranges"))?
                .to_string()
        }
    };
    let control = tc
        .kept
        .get("global/pg_control")
        .filter(|c| c.len() >= 8)
        .ok_or_else(|| pg_err("pg_basebackup", "the stream has no global/pg_control"))?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&control[..8]);
    let per_log = crate::postgres::wal::segments_per_log(seg_size);
    let seg = |lsn: u64| wal::segment_name(timeline, lsn / seg_size, per_log);
    let (a, z) = (parse_lsn(&start_lsn)?, parse_lsn(&stop_lsn)?);
    Ok(BaseBackup {
        system_identifier: u64::from_le_bytes(id).to_string(),
        timeline,
        start_lsn,
        stop_lsn,
        start_wal: seg(a),
        stop_wal: seg(z.saturating_sub(1).max(a)),
        segment_size: seg_size,
        server_version: text("PG_VERSION")?.trim().to_string(),
        wal_source: wal_source.to_string(),
    })
}

/// Waits until the archive holds every segment from the backup's start to its end.
fn wait_for_wal(
    repo: &Repository,
    src: &PgSource,
    info: &BaseBackup,
    opts: &PhysicalOptions,
) -> Result<()> {
    let ns = wal::namespace(repo, &opts.wal_source);
    let needed = super::segments(info)?;
    let started = Instant::now();
    let mut switched = false;
    let mut looked_elsewhere = Instant::now();
    loop {
        let have = repo.file_names(&ns)?;
        let missing: Vec<&String> = needed
            .iter()
            .filter(|s| have.binary_search(s).is_err())
            .collect();
        let Some(first) = missing.first() else {
            return Ok(());
        };
        if started.elapsed() > opts.wal_wait {
            return Err(FormatError::Invalid(format!(
                "the base backup needs WAL segment {first} (and {} more), which is not in the archive after {} s: is archive_command = 'dbvault wal-push --name {} %p' set on this server, with this repository? (pg_stat_archiver says what fails)",
                missing.len() - 1,
                opts.wal_wait.as_secs(),
                opts.wal_source
            )));
        }
        if !switched && started.elapsed() > Duration::from_secs(2) {
            // pg_backup_stop switched already; a quiet server may need another nudge.
            let _ = src.query("SELECT pg_switch_wal()");
            switched = true;
        }
        if switched && looked_elsewhere.elapsed() > Duration::from_secs(2) {
            looked_elsewhere = Instant::now();
            if let Some(other) = archived_elsewhere(repo, info, &opts.wal_source, first)? {
                return Err(FormatError::Invalid(format!(
                    "this cluster's WAL (segment {first}) is archived under source name {other:?}, not {:?}: give the base backup --name {other}, or set archive_command = 'dbvault wal-push --name {} %p' on the server",
                    opts.wal_source, opts.wal_source
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Another source name whose archive holds segment `first` of this cluster (WAL pushed
/// with another `--name` than the base backup's).
fn archived_elsewhere(
    repo: &Repository,
    info: &BaseBackup,
    own: &str,
    first: &str,
) -> Result<Option<String>> {
    let Ok(sysid) = info.system_identifier.parse::<u64>() else {
        return Ok(None);
    };
    for other in wal::sources_of_cluster(repo, sysid)? {
        if other != own && repo.file(&wal::namespace(repo, &other), first).is_ok() {
            return Ok(Some(other));
        }
    }
    Ok(None)
}
