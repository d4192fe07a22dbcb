//! A throwaway PostgreSQL server for tests that need an empty server, server-wide objects
//! (roles), or TCP with chosen settings (TLS, authentication methods).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::hex_tag;

/// A throwaway PostgreSQL server (its own `initdb` cluster, socket and port), stopped and
/// deleted when dropped: for tests that need an empty server or server-wide objects (roles).
/// As root, `initdb` and `postgres` run as the `postgres` user.
pub struct PgCluster {
    /// Data and socket directory.
    pub dir: PathBuf,
    /// Port.
    pub port: u16,
}

/// A PostgreSQL server program of the newest installed version.
pub fn pg_bin(tool: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    let v = versions.last().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries in /usr/lib/postgresql: apt-get install postgresql")
    });
    root.join(v.to_string()).join("bin").join(tool)
}

/// Runs a server program as the `postgres` user (when this is root).
pub fn as_postgres(tool: &str, args: &[&str]) -> Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        c
    } else {
        Command::new(pg_bin(tool))
    };
    c.args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

impl PgCluster {
    /// Creates and starts a cluster on a free port, reachable on its Unix socket only.
    pub fn new() -> PgCluster {
        PgCluster::with_tcp(None)
    }

    /// A cluster that also listens on 127.0.0.1, with `settings` appended to its
    /// `postgresql.conf` and `hba` after a `local all all trust` line in `pg_hba.conf`
    /// (`None`: a socket-only cluster with the defaults).
    pub fn with_tcp(tcp: Option<(&str, &str)>) -> PgCluster {
        PgCluster::with_initdb(tcp, &[])
    }

    /// [`PgCluster::with_tcp`], with `initdb_args` added to initdb's (e.g.
    /// `--wal-segsize=1`).
    pub fn with_initdb(tcp: Option<(&str, &str)>, initdb_args: &[&str]) -> PgCluster {
        let dir = std::env::temp_dir().join(format!("dbvault-pg-{}", hex_tag()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let data = dir.join("data");
        let d = data.to_string_lossy().into_owned();
        let mut args = vec!["-D", &d, "-A", "trust", "-U", "postgres", "--no-sync"];
        args.extend_from_slice(initdb_args);
        let out = as_postgres("initdb", &args);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listen = if let Some((settings, hba)) = tcp {
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str(&format!("\n{settings}\n"));
            std::fs::write(&conf, text).expect("postgresql.conf");
            std::fs::write(
                data.join("pg_hba.conf"),
                format!("local all all trust\n{hba}\n"),
            )
            .expect("pg_hba.conf");
            "127.0.0.1"
        } else {
            ""
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let opts = format!(
            "-p {port} -k {} -c listen_addresses='{listen}' -c fsync=off",
            dir.display()
        );
        let log = dir.join("log").to_string_lossy().into_owned();
        let out = as_postgres(
            "pg_ctl",
            &["-D", &d, "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PgCluster { dir, port }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `postgresql://postgres@/db?host=…&port=…`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// Runs SQL on database `db` as the superuser; returns stdout.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let d = self.dir.join("data").to_string_lossy().into_owned();
        let _ = as_postgres("pg_ctl", &["-D", &d, "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
