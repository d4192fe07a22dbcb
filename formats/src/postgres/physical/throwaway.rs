//! A throwaway server recovered from a base backup: the base backup restored into a private
//! temporary directory, WAL handed over by a [`relay`](super::relay), the server started on
//! its own socket (as the `postgres` user when this process is root, since the server
//! refuses root), waited for until recovery has ended, used, then stopped and removed
//! whatever happened. restore-test of physical snapshots and table-as-of-a-time restores
//! are built on it.
//!
//! The server's settings are the cluster's, except those appended to
//! `postgresql.auto.conf` (read last, so they win): it listens on no TCP port, trusts only
//! local connections through its private socket directory, does not archive (it must never
//! push its new timeline into the archive it recovers from), and skips `fsync` (nothing of
//! it is kept).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dbvault_core::{Repository, Snapshot};

use super::archive::Archive;
use super::relay::{self, Relay, RelayOptions, Served};
use super::restore::{restore_pgdata, ArchiveMode, PgdataOptions, RecoveryTarget};
use super::timeline::TimelineChoice;
use super::{BaseBackup, PART};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::postgres::PgSource;

/// The port named in the socket's file name (the server listens on no TCP port, and its
/// socket directory is private, so any number does).
const PORT: u16 = 5432;
/// The superuser the throwaway server is entered as: initdb's default, the `postgres` user.
const SUPERUSER: &str = "postgres";

/// How to recover.
pub struct RecoverOptions<'a> {
    /// Where recovery stops (none: the end of the archive). The server promotes there.
    pub target: RecoveryTarget,
    /// The `restore_command` that asks the relay listening on the given socket (the
    /// front end's `wal-fetch --relay SOCKET %f %p`).
    pub restore_command: &'a dyn Fn(&Path) -> String,
}

/// A server that has finished recovering, for the duration of [`with_recovered`]'s closure.
pub struct Recovered<'a> {
    /// The temporary directory holding everything.
    pub dir: &'a Path,
    /// What the base backup recorded.
    pub info: &'a BaseBackup,
    relay: &'a Relay,
    bin: Option<PathBuf>,
}

impl Recovered<'_> {
    /// A connection to database `db` of the throwaway server.
    ///
    /// # Errors
    /// Never in practice (the URL is built here).
    pub fn source(&self, db: &str) -> Result<PgSource> {
        let sock = self.dir.join("sock");
        PgSource::parse(&format!(
            "postgresql:///{}?host={}&port={PORT}&user={SUPERUSER}",
            crate::postgres::url::percent_encode(db),
            crate::postgres::url::percent_encode(&sock.display().to_string())
        ))
    }

    /// What the relay has handed over.
    #[must_use]
    pub fn served(&self) -> Served {
        self.relay.served()
    }

    /// A program of the server's own version (`pg_amcheck`, `psql`).
    #[must_use]
    pub fn program(&self, name: &str) -> std::ffi::OsString {
        match &self.bin {
            Some(b) => b.join(name).into_os_string(),
            None => crate::postgres::tools::program(name),
        }
    }

    /// The socket directory and port, for programs given `-h` and `-p`.
    #[must_use]
    pub fn host_port(&self) -> (PathBuf, u16) {
        (self.dir.join("sock"), PORT)
    }
}

/// The user a server is run as: none when this process is not root (it runs the server
/// itself); `postgres` when it is.
fn server_user() -> Result<Option<(String, u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if euid != 0 {
        return Ok(None);
    }
    let name = std::env::var("DBVAULT_SERVER_USER").unwrap_or_else(|_| "postgres".into());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((name.clone(), f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            FormatError::Invalid(format!(
                "a throwaway PostgreSQL server cannot run as root, and there is no user {name:?} to run it as (install PostgreSQL, or set DBVAULT_SERVER_USER)"
            ))
        })
}

/// The directory of the server programs of major version `version`.
fn bin_dir(version: &str) -> Option<PathBuf> {
    let debian = Path::new("/usr/lib/postgresql").join(version).join("bin");
    if debian.join("postgres").is_file() {
        return Some(debian);
    }
    let out = dbvault_core::secrets::scrub(&mut Command::new(crate::postgres::tools::program(
        "pg_config",
    )))
    .arg("--bindir")
    .output()
    .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("postgres").is_file().then_some(dir)
}

/// Gives everything under `p` to `owner`.
fn give_all(p: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p)? {
            give_all(&e?.path(), owner)?;
        }
    }
    Ok(())
}

/// A value in `postgresql.conf` quoting.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// The settings that make the restored cluster a private throwaway server.
fn overrides(dir: &Path, target_given: bool) -> String {
    let path = |p: &str| quote(&dir.join(p).display().to_string());
    let mut s = format!(
        "\n# dbvault throwaway server: private, not archiving, not kept.\n\
         port = {PORT}\nlisten_addresses = ''\nunix_socket_directories = {}\n\
         unix_socket_group = ''\nunix_socket_permissions = 0700\n\
         hba_file = {}\nident_file = {}\n\
         archive_mode = off\nhot_standby = off\nfsync = off\nsynchronous_commit = off\n\
         shared_buffers = '128MB'\nhuge_pages = try\n\
         shared_preload_libraries = ''\nsession_preload_libraries = ''\nlocal_preload_libraries = ''\n\
         logging_collector = off\nlog_destination = 'stderr'\nssl = off\n\
         external_pid_file = ''\nprimary_conninfo = ''\nprimary_slot_name = ''\n\
         recovery_end_command = ''\narchive_cleanup_command = ''\n\
         cluster_name = 'dbvault-throwaway'\n",
        path("sock"),
        path("hba.conf"),
        path("ident.conf"),
    );
    if target_given {
        s.push_str("recovery_target_action = 'promote'\n");
    }
    s
}

/// The server process; stopped (immediately: nothing of it is kept) when dropped.
struct Server {
    child: Child,
    data: PathBuf,
    pg_ctl: PathBuf,
    user: Option<String>,
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            dbvault_core::secrets::scrub(&mut c);
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => {
            let mut c = Command::new(program);
            dbvault_core::secrets::scrub(&mut c);
            c
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_user(self.user.as_deref(), &self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of the server's log.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Restores `snap` into a temporary directory, recovers it to `o.target` on a throwaway
/// server, and runs `f` on it; then stops the server and removes the directory, whatever
/// happened. Returns `f`'s result and what the relay handed over.
///
/// # Errors
/// Not a physical snapshot; no user to run the server as; restoring the base backup
/// (damage, storage); the server stopping before recovery ended (its log's last lines);
/// `f`'s error.
pub fn with_recovered<T>(
    repo: &Repository,
    snap: &Snapshot,
    o: &RecoverOptions<'_>,
    notify: Notify<'_>,
    f: impl FnOnce(&Recovered<'_>) -> Result<T>,
) -> Result<(T, Served)> {
    with_recovered_in(scratch()?, repo, snap, o, notify, f)
}

/// A new directory for a throwaway recovery (`$TMPDIR/dbvault-recover-*`), removed when
/// dropped.
///
/// # Errors
/// It cannot be made.
pub fn scratch() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dbvault-recover-")
        .tempdir()
        .map_err(|e| FormatError::io("a temporary directory", e))
}

/// As [`with_recovered`], in `tmp` (from [`scratch`]: a caller that must name the
/// directory whatever happens, a restore-test's report, makes it first).
///
/// # Errors
/// As [`with_recovered`].
pub fn with_recovered_in<T>(
    tmp: tempfile::TempDir,
    repo: &Repository,
    snap: &Snapshot,
    o: &RecoverOptions<'_>,
    notify: Notify<'_>,
    f: impl FnOnce(&Recovered<'_>) -> Result<T>,
) -> Result<(T, Served)> {
    let part = snap
        .part(PART)
        .ok_or_else(|| FormatError::Invalid("not a physical snapshot (no base.tar)".into()))?;
    let info = BaseBackup::of(part)?;
    let user = server_user()?;
    let owner = user.as_ref().map(|(_, u, g)| (*u, *g));
    let dir = tmp.path().to_path_buf();
    let io = |e| FormatError::io(dir.display().to_string(), e);
    for d in ["sock", "spool"] {
        std::fs::create_dir(dir.join(d)).map_err(io)?;
    }
    std::fs::write(dir.join("hba.conf"), "local all all trust\n").map_err(io)?;
    std::fs::write(dir.join("ident.conf"), "").map_err(io)?;
    let bin = bin_dir(&info.server_version);
    let program = |n: &str| bin.as_ref().map_or_else(|| PathBuf::from(n), |b| b.join(n));
    let r = std::thread::scope(|scope| -> Result<(T, Served)> {
        let relay = relay::start(
            scope,
            repo,
            &dir.join("relay.sock"),
            RelayOptions {
                source: info.wal_source.clone(),
                root: dir.clone(),
                spool: dir.join("spool"),
                owner,
                segment_size: info.segment_size,
            },
        )?;
        let data = dir.join("data");
        let mut target = o.target.clone();
        target.action = None;
        let given = target.has_target();
        // `latest` is never left to PostgreSQL across a fork of the archive.
        let choice = target
            .timeline
            .as_deref()
            .map(TimelineChoice::parse)
            .transpose()?
            .unwrap_or_default();
        target.timeline = Archive::load(repo, &info.wal_source, info.segment_size)?
            .resolve(&info, choice, &info.wal_source)?
            .setting;
        restore_pgdata(
            repo,
            snap,
            &PgdataOptions {
                dir: &data,
                force: false,
                restore_command: (o.restore_command)(&relay.socket),
                target,
                archive: ArchiveMode::Off,
            },
            notify,
        )?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .map_err(io)?;
        conf.write_all(overrides(&dir, given).as_bytes())
            .map_err(io)?;
        drop(conf);
        if !data.join("postgresql.conf").exists() {
            // Debian keeps it in /etc; the server needs one, even empty.
            std::fs::write(data.join("postgresql.conf"), "").map_err(io)?;
        }
        let log = dir.join("server.log");
        let logf = std::fs::File::create(&log).map_err(io)?;
        if let Some(o) = owner {
            give_all(&dir, o).map_err(io)?;
        }
        let child = as_user(user.as_ref().map(|u| u.0.as_str()), &program("postgres"))
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io)?)
            .stderr(logf)
            .spawn()
            .map_err(|e| FormatError::io("postgres (the throwaway server)", e))?;
        let mut server = Server {
            child,
            data: data.clone(),
            pg_ctl: program("pg_ctl"),
            user: user.as_ref().map(|u| u.0.clone()),
        };
        let rec = Recovered {
            dir: &dir,
            info: &info,
            relay: &relay,
            bin: bin.clone(),
        };
        notify(crate::notice::Notice::Done(format!(
            "dbvault: recovering base backup {} on a throwaway server in {}",
            info.start_lsn,
            dir.display()
        )));
        wait_recovered(&mut server, &rec, &log)?;
        let out = f(&rec)?;
        drop(server);
        Ok((out, relay.served()))
    });
    // The server's files belong to its user; this process made the directory and may
    // remove it (root, or the same user).
    drop(tmp);
    r
}

/// Waits until the server accepts connections out of recovery.
fn wait_recovered(server: &mut Server, rec: &Recovered<'_>, log: &Path) -> Result<()> {
    let db = rec.source("postgres")?;
    loop {
        if let Some(status) = server
            .child
            .try_wait()
            .map_err(|e| FormatError::io("postgres", e))?
        {
            let failed: Vec<String> = rec
                .served()
                .failures
                .iter()
                .map(|(n, e)| format!("WAL file {n} could not be handed over: {e}"))
                .collect();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("recovery ended before configured recovery target was reached") {
                let last = text
                    .lines()
                    .filter_map(|l| {
                        l.split("last completed transaction was at log time ")
                            .nth(1)
                    })
                    .last()
                    .map_or_else(String::new, |t| {
                        format!(" (its last transaction is from {})", t.trim())
                    });
                return Err(FormatError::Invalid(format!(
                    "the archive ends before the recovery target{last}: the WAL that reaches it is not archived yet. On the server, run SELECT pg_switch_wal() (or wait for archive_timeout) and try again; without a target, recovery replays everything archived"
                )));
            }
            return Err(FormatError::Invalid(format!(
                "the throwaway server stopped during recovery ({status}){}; its log ends:\n{}",
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", failed.join("; "))
                },
                log_tail(log)
            )));
        }
        if db
            .query("SELECT pg_is_in_recovery()")
            .is_ok_and(|r| r.trim() == "f")
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
