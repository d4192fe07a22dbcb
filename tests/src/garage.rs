//! A real S3-compatible server for the tests: Garage, single node on 127.0.0.1, with a
//! bucket and a key, started per test and stopped when dropped.
//!
//! Garage comes from `cargo install garage --locked` (`.ci/run` installs it when missing);
//! `$GARAGE_BIN` overrides where it is looked for.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Garage server.
pub struct Garage {
    dir: tempfile::TempDir,
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id.
    pub key_id: String,
    /// Secret key.
    pub secret: String,
    /// The bucket made for the test.
    pub bucket: String,
}

pub(crate) fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for c in [
        format!("{home}/.cargo/bin/garage"),
        "/usr/local/bin/garage".into(),
        "/usr/bin/garage".into(),
    ] {
        if std::path::Path::new(&c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("Garage (an S3-compatible server) is missing: install it with `cargo install garage --locked` (.ci/run does), or set GARAGE_BIN");
}

pub(crate) fn spawn(bin: &std::path::Path, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("garage.log"))
        .expect("log");
    Command::new(bin)
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .arg("server")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start garage")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Garage {
    /// Starts a server with one bucket and one key allowed on it.
    pub fn start() -> Garage {
        let bin = garage_bin();
        let dir = tempfile::tempdir().expect("tmp");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let secret_hex = crate::random_bytes(32, u64::from(rpc) << 16 | u64::from(s3))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let conf = dir.path().join("garage.toml");
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret_hex}\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.path().display()
            ),
        )
        .expect("garage.toml");
        let child = spawn(&bin, dir.path());
        let mut g = Garage {
            dir,
            child,
            bin,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
            bucket: "dbvault-test".into(),
        };
        let t = Instant::now();
        let node = loop {
            let out = g.cli(&["node", "id", "-q"]);
            if out.status.success() {
                let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
                break s.split('@').next().unwrap_or_default().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "garage did not start: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // `node id` reads the key from disk: the server may not listen yet.
        loop {
            let out = g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
            if out.status.success() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "garage layout assign: {}{}",
                String::from_utf8_lossy(&out.stderr),
                g.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        g.ok(&["layout", "apply", "--version", "1"]);
        g.ok(&["bucket", "create", "dbvault-test"]);
        let key = g.ok(&["key", "create", "dbvault-test-key"]);
        for line in key.lines() {
            if let Some(v) = line.trim().strip_prefix("Key ID:") {
                g.key_id = v.trim().to_string();
            }
            if let Some(v) = line.trim().strip_prefix("Secret key:") {
                g.secret = v.trim().to_string();
            }
        }
        assert!(
            !g.key_id.is_empty() && !g.secret.is_empty(),
            "no key in: {key}"
        );
        g.ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "dbvault-test",
            "--key",
            "dbvault-test-key",
        ]);
        g
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same data, ports and keys; returns once the
    /// bucket answers.
    pub fn restart(&mut self) {
        self.child = spawn(&self.bin, self.dir.path());
        let t = Instant::now();
        while !self.cli(&["bucket", "info", &self.bucket]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "garage did not come back: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("garage cli")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A second bucket with a key of its own, allowed on that bucket only: (key id,
    /// secret).
    pub fn another_bucket(&self, bucket: &str) -> (String, String) {
        self.ok(&["bucket", "create", bucket]);
        let key_name = format!("{bucket}-key");
        let key = self.ok(&["key", "create", &key_name]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        let ids = (field("Key ID:"), field("Secret key:"));
        self.ok(&[
            "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &key_name,
        ]);
        ids
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The environment a client needs (credentials, region, endpoint).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
        ]
    }

    /// A dbvault command on repository `s3://bucket/prefix` reached through `endpoint`
    /// (the server's own, or a proxy's), with this server's credentials, the test
    /// passphrase and a cache directory of its own.
    pub fn dbvault(&self, endpoint: &str, prefix: &str, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bin());
        c.arg("--s3-path-style")
            .args(args)
            .env("DBVAULT_REPO", self.url(prefix))
            .env("DBVAULT_PASSWORD", crate::PASSWORD)
            .env("DBVAULT_CACHE_DIR", self.dir.path().join("cache"));
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL", endpoint);
        c
    }

    /// The client cache directory [`Garage::dbvault`] commands use.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
