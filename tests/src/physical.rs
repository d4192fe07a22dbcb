//! For point-in-time recovery tests: a repository the `postgres` user owns (the server's
//! `archive_command` and `restore_command` run as that user, and so does every dbvault
//! command here, as a DBA's would), and servers started on restored data directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{as_postgres, pg_bin};
use crate::{bin, hex_tag, PASSWORD};

/// A directory owned by `postgres` with a repository location, a passphrase file and a
/// cache; removed when dropped.
pub struct Archive {
    /// The directory.
    pub dir: PathBuf,
    /// `DBVAULT_REPO`: a path in `dir`, or an `s3://` URL.
    pub repo: String,
    /// Environment every command gets (S3 credentials and endpoint, when on S3).
    pub env: Vec<(String, String)>,
}

fn chown(p: &Path) {
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status();
}

/// Switches to a new segment and waits (90 s at most) until the server archived every
/// segment before it: `sql` asks the server, `log` gives its log when it does not.
pub fn archive_now(sql: &dyn Fn(&str) -> String, log: &dyn Fn() -> String) {
    let seg = sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    sql("SELECT pg_switch_wal()");
    let t0 = Instant::now();
    loop {
        let last = sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if last.trim() >= seg.trim() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "segment {seg} not archived after 90 s (last {last}):\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Archive {
    /// The file records of the archived WAL (segments, history and backup-history files)
    /// of a local repository, sorted by path.
    pub fn wal_records(&self) -> Vec<PathBuf> {
        let files = Path::new(&self.repo).join("files");
        let mut v = Vec::new();
        for ns in std::fs::read_dir(&files).expect("files").flatten() {
            let n = ns.file_name().to_string_lossy().into_owned();
            if n.ends_with(".cluster") || n == "pgwal-clusters" {
                continue;
            }
            for f in std::fs::read_dir(ns.path()).expect("ns").flatten() {
                v.push(f.path());
            }
        }
        v.sort();
        v
    }

    /// A local repository (not yet initialised).
    pub fn local() -> Archive {
        let dir = std::env::temp_dir().join(format!("dbvault-pitr-{}", hex_tag()));
        let repo = dir.join("repo").display().to_string();
        Archive::at(dir, repo, Vec::new())
    }

    /// A repository at `url` on S3, reached with `env`.
    pub fn s3(url: &str, env: Vec<(String, String)>) -> Archive {
        let dir = std::env::temp_dir().join(format!("dbvault-pitr-{}", hex_tag()));
        Archive::at(dir, url.to_string(), env)
    }

    fn at(dir: PathBuf, repo: String, env: Vec<(String, String)>) -> Archive {
        std::fs::create_dir_all(dir.join("cache")).expect("dir");
        std::fs::write(dir.join("pw"), format!("{PASSWORD}\n")).expect("pw");
        chown(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            std::fs::set_permissions(dir.join("pw"), std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        Archive { dir, repo, env }
    }

    /// The environment assignments, as `env` takes them.
    fn assignments(&self) -> Vec<String> {
        let mut v = vec![
            format!("DBVAULT_REPO={}", self.repo),
            format!("DBVAULT_PASSWORD_FILE={}", self.dir.join("pw").display()),
            format!("DBVAULT_CACHE_DIR={}", self.dir.join("cache").display()),
        ];
        v.extend(self.env.iter().map(|(k, val)| format!("{k}={val}")));
        v
    }

    /// A dbvault command run as `postgres`.
    pub fn dbvault(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        c.args(self.assignments());
        c.arg(bin()).args(args);
        c.env_remove("DBVAULT_PASSWORD");
        c
    }

    /// `archive_command` for `postgresql.conf`, pushing as source `name`.
    pub fn archive_command(&self, name: &str) -> String {
        format!(
            "archive_command = 'env {} {} wal-push --name {name} %p'",
            self.assignments().join(" "),
            bin().display()
        )
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server started on a restored data directory, stopped when dropped.
pub struct Restored {
    /// The data directory.
    pub data: PathBuf,
    /// Socket directory.
    pub sock: PathBuf,
    /// Port.
    pub port: u16,
}

impl Restored {
    /// Starts `postgres` on `data` (with `opts` added to its command line and `env` in its
    /// environment, for `restore_command` on S3), waiting until it accepts connections.
    pub fn start(data: &Path, opts: &str, env: &[(String, String)]) -> Restored {
        Restored::launch(data, opts, env, true)
    }

    /// Starts `postgres` on `data` as [`Restored::start`] does, without waiting for it to
    /// accept connections (a server that may stop during recovery).
    pub fn spawn(data: &Path, opts: &str, env: &[(String, String)]) -> Restored {
        Restored::launch(data, opts, env, false)
    }

    fn launch(data: &Path, opts: &str, env: &[(String, String)], wait: bool) -> Restored {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let sock = data.parent().expect("parent").to_path_buf();
        let o = format!(
            "-p {port} -k {} -c listen_addresses='' -c fsync=off {opts}",
            sock.display()
        );
        let log = data.with_extension("log");
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(pg_bin("pg_ctl"))
            .args(["-D"])
            .arg(data)
            .args(["-o", &o, "-l"])
            .arg(&log);
        if wait {
            c.args(["-w", "-t", "120", "start"]);
        } else {
            c.args(["-W", "start"]);
        }
        let out = c.output().expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Restored {
            data: data.to_path_buf(),
            sock,
            port,
        }
    }

    /// Waits up to `limit` for the server to exit; true when it did.
    pub fn wait_stopped(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        // pg_ctl writes the pid file's name before the server does: give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        while t0.elapsed() < limit {
            if !self.data.join("postmaster.pid").exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Runs SQL; returns stdout (trimmed), or the error text with `Err`.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.sock)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits until recovery has ended (the server promoted).
    pub fn wait_promoted(&self) {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(120) {
            if self
                .try_sql("postgres", "SELECT pg_is_in_recovery()")
                .as_deref()
                == Ok("f")
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!(
            "the restored server is still recovering after 120 s:\n{}",
            self.log()
        );
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let d = self.data.display().to_string();
        let _ = as_postgres("pg_ctl", &["-D", &d, "-m", "immediate", "stop"]);
    }
}

/// A cluster archiving into `archive` as source `name`.
pub fn production(archive: &Archive, name: &str) -> crate::PgCluster {
    let settings = format!(
        "archive_mode = on\n{}\nwal_level = replica\n",
        archive.archive_command(name)
    );
    crate::PgCluster::with_tcp(Some((&settings, "local replication all trust")))
}

/// A `--to` naming a data directory.
pub fn pgdata(dir: &Path) -> String {
    format!("pgdata:{}", dir.display())
}
