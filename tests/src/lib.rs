//! Harness for the end-to-end tests: runs the real `dbvault` binary against real
//! repositories (and, in later suites, real servers).
//!
//! The binary is `$DBVAULT_BIN`, else `target/release/dbvault` of this workspace: build it
//! first with `cargo build --release -p dbvault` (the README's test command does).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod cluster;
pub mod garage;
pub mod garage_cluster;
pub mod pgfixture;
pub mod physical;
pub mod proxy;

pub use cluster::PgCluster;

/// The passphrase every test repository uses; the harness checks it never appears in any
/// output.
pub const PASSWORD: &str = "correct horse battery staple 8c1f";

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("DBVAULT_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/dbvault");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --release -p dbvault` (or set DBVAULT_BIN)",
        p.display()
    );
    // `cargo test` alone does not rebuild the binary: refuse to test an old one.
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    let newest = newest_source();
    if let (Some(built), Some((src, changed))) = (built, newest) {
        assert!(
            built >= changed,
            "{} is older than {}: rebuild it with `cargo build --release -p dbvault` (scripts/test does)",
            p.display(),
            src.display()
        );
    }
    p
}

/// The most recently changed source file of the binary's crates.
fn newest_source() -> Option<(PathBuf, std::time::SystemTime)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    let mut dirs: Vec<PathBuf> = ["core/src", "formats/src", "jobs/src", "cli/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    let mut files: Vec<PathBuf> = [
        "core/Cargo.toml",
        "formats/Cargo.toml",
        "jobs/Cargo.toml",
        "cli/Cargo.toml",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    for f in files {
        if let Ok(t) = std::fs::metadata(&f).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(_, n)| t > *n) {
                newest = Some((f, t));
            }
        }
    }
    newest
}

/// Result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, as text.
    pub stderr: String,
}

impl Run {
    /// Panics unless the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "dbvault failed: {}", self.stderr);
        self
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }

    /// Stdout as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn check_secret(out: &Output) {
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    let needle = PASSWORD.as_bytes();
    assert!(
        !all.windows(needle.len()).any(|w| w == needle),
        "the passphrase appeared in dbvault's output"
    );
}

/// Turns a finished process into a [`Run`], checking the passphrase stayed secret.
pub fn finish(out: Output) -> Run {
    check_secret(&out);
    Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A repository in a temporary directory.
pub struct Repo {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Repository path.
    pub path: PathBuf,
}

impl Repo {
    /// A fresh, initialised repository.
    pub fn new() -> Repo {
        let r = Repo::uninit();
        r.run(&["init"], None).ok();
        r
    }

    /// A temp dir and a repository path inside it, not initialised.
    pub fn uninit() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("repo");
        Repo { dir, path }
    }

    /// A copy of this repository (`cp -a`), in a temp dir of its own.
    pub fn copy(&self) -> Repo {
        let c = Repo::uninit();
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(&c.path)
            .status()
            .expect("cp");
        assert!(st.success(), "copying {}", self.path.display());
        c
    }

    /// A command with `--repo` and the passphrase set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--repo").arg(&self.path).args(args);
        c.env("DBVAULT_PASSWORD", PASSWORD);
        c.env_remove("DBVAULT_PASSWORD_FILE")
            .env_remove("DBVAULT_REPO");
        // This client's memory of the repository (what it has seen), beside it: a copy of
        // the repository is a different client's.
        c.env("DBVAULT_CACHE_DIR", self.dir.path().join("client"));
        c
    }

    /// Runs dbvault with `args`, feeding `stdin`.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        run_cmd(self.cmd(args), stdin)
    }

    /// Backs up `data` from stdin; returns the `backup --json` document.
    pub fn backup(&self, data: &[u8], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["backup", "-", "--json"];
        args.extend_from_slice(extra);
        self.run(&args, Some(data)).ok().json()
    }

    /// Restores a snapshot to stdout.
    pub fn restore(&self, snapshot: &str) -> Run {
        self.run(&["restore", snapshot, "--to", "-"], None)
    }

    /// Snapshot ids, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let v = self.run(&["snapshots", "--json"], None).ok().json();
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect()
    }

    /// Every file of the repository with its bytes: to prove nothing changed.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        tree(&self.path)
    }
}

/// Runs a prepared command, feeding `stdin`.
pub fn run_cmd(mut c: Command, stdin: Option<&[u8]>) -> Run {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn dbvault");
    let feeder = stdin.map(|data| {
        let mut si = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        })
    });
    let out = child.wait_with_output().expect("wait");
    if let Some(f) = feeder {
        let _ = f.join();
    }
    finish(out)
}

/// How a command measured by [`run_peak`] ended.
pub struct Peak {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its standard error.
    pub stderr: String,
    /// Its peak resident memory (the kernel's maximum resident set size), in MiB.
    pub mib: f64,
}

/// Runs a prepared command with stdin from the file `stdin` (else nothing) and stdout into
/// the file `stdout`, and measures its peak resident memory.
#[allow(unsafe_code)]
pub fn run_peak(mut c: Command, stdin: Option<&Path>, stdout: &Path) -> Peak {
    let err = tempfile::NamedTempFile::new().expect("temp file");
    c.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).expect("stdin file")),
        None => Stdio::null(),
    });
    c.stdout(Stdio::from(
        std::fs::File::create(stdout).expect("stdout file"),
    ));
    c.stderr(Stdio::from(err.reopen().expect("stderr file")));
    let child = c.spawn().expect("spawn dbvault");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is a plain C struct, for which all zero bytes are a valid value; wait4
    // only writes the status and usage of our own child, which nothing else reaps (the
    // `Child` is never waited on, and dropping it neither waits nor kills).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are to live locals of the right types.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    Peak {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: std::fs::read_to_string(err.path()).unwrap_or_default(),
        mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Every file under `root` with its content.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic text that compresses like a table dump: numbered rows of varying fields.
pub fn dump_like(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 200);
    let mut row = 0u64;
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        row += 1;
        let _ = writeln!(
            out,
            "{row}\tcustomer {}\tuser{}@example.org\t{}.{:02}\t2026-{:02}-{:02} 12:{:02}:00+00",
            r % 100_000,
            (r >> 17) % 1_000_000,
            (r >> 7) % 5000,
            (r >> 3) % 100,
            1 + (r >> 20) % 12,
            1 + (r >> 24) % 28,
            (r >> 30) % 60
        );
    }
    out.truncate(len);
    out
}

/// Runs an SQL script through the sqlite3 shell on `db` (fed on stdin); it must succeed.
pub fn sqlite3(db: &Path, script: &str) -> String {
    let mut c = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3: apt-get install sqlite3");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("feed");
    let out = c.wait_with_output().expect("sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sqlite3 PATH .dump`, through the sqlite3 command-line shell.
pub fn sqlite3_dump(path: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(path)
        .arg(".dump")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sqlite3 ({e}): install it with `apt-get install sqlite3`")
        });
    assert!(
        out.status.success(),
        "sqlite3 .dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway PostgreSQL database on the local server (unix socket, current OS user).
/// Dropped when the value is dropped.
pub struct PgDb {
    /// Database name.
    pub name: String,
}

pub(crate) fn pg_host() -> String {
    std::env::var("PGHOST").unwrap_or_else(|_| "/var/run/postgresql".into())
}

/// `psql -X -q -v ON_ERROR_STOP=1` on database `db` of the test server.
fn psql_cmd(db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &pg_host(),
        "-d",
        db,
    ]);
    c
}

/// Runs a psql command line (`-c SQL`) against database `db`, returning stdout.
pub fn psql(db: &str, sql: &str) -> String {
    let out = psql_cmd(db)
        .args(["-A", "-t", "-c", sql])
        .output()
        .expect("psql: install postgresql-client");
    assert!(
        out.status.success(),
        "psql -c {sql:?} on {db} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgDb {
    /// Creates an empty database named `dbv_<tag>_<random>`.
    pub fn new(tag: &str) -> PgDb {
        let ok = psql_cmd("postgres")
            .args(["-A", "-t", "-c", "SELECT 1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "no PostgreSQL server to test against: start one with `pg_ctlcluster 15 main start` and create a role \
             for this user (`runuser -u postgres -- createuser -s $USER`); .ci/run does both"
        );
        let name = format!("dbv_{tag}_{}", hex_tag());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name }
    }

    /// Loads an SQL file.
    pub fn load(&self, path: &Path) {
        let out = psql_cmd(&self.name)
            .arg("-f")
            .arg(path)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "loading {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgresql:///name?host=…` for dbvault.
    pub fn url(&self) -> String {
        format!("postgresql:///{}?host={}", self.name, pg_host())
    }

    /// Runs SQL, returns stdout.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// Every user table (incl. partitions) with its row count and an order-independent hash
    /// of its rows.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        // Names in hex: a name may hold a newline.
        let tables = self.sql(
            "SELECT encode(convert_to(quote_ident(n.nspname) || '.' || quote_ident(c.relname), 'UTF8'), 'hex'), c.relispopulated FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1",
        );
        tables
            .lines()
            .map(|l| {
                // A materialized view a schema-only restore left unpopulated cannot be read.
                let (hex, populated) = l.rsplit_once('|').unwrap_or((l, "t"));
                let bytes: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect();
                let name = String::from_utf8(bytes).expect("utf-8 name");
                let t = name.as_str();
                if populated != "t" {
                    return (t.to_string(), "not populated".to_string());
                }
                let fp = self.sql(&format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM ONLY {t} x"
                ));
                (t.to_string(), fp.trim().to_string())
            })
            .collect()
    }

    /// `pg_dump --schema-only`, without the lines that differ between any two dumps.
    pub fn schema(&self) -> String {
        pgfixture::pg_dump_with(&["--schema-only", "-h", &pg_host(), "-d", &self.name])
    }

    /// The `pg_dump` command line for this database (for `--command` and pipes).
    pub fn dump_cmd(&self) -> String {
        format!("pg_dump -h {} {}", pg_host(), self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = psql_cmd("postgres")
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

pub(crate) fn hex_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), t % 0xffff_ffff)
}

/// Runs a shell pipeline, returning its result as a [`Run`].
pub fn sh(cmd: &str, env: &[(&str, &str)]) -> Run {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    run_cmd(c, None)
}

/// For a database an application filled with rows `id` = 1, 2, 3, …: the row count of
/// `table`, whether its ids are exactly 1..=count (a prefix of the commits), and what
/// `PRAGMA integrity_check` says.
pub fn sqlite_prefix(path: &Path, table: &str) -> (i64, bool, String) {
    let c = rusqlite::Connection::open(path).expect("open");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    let (n, max): (i64, Option<i64>) = c
        .query_row(&format!("SELECT count(*), max(id) FROM {table}"), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    (n, max.unwrap_or(0) == n, check)
}
