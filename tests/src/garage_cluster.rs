//! Garage as it is recommended in production: three nodes on loopback, each in a zone of
//! its own, replication factor 3 (a write or read needs two of them), one bucket and key.
//! A node can be killed and started again; clients talk to node 1's S3 endpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running three-node Garage cluster.
pub struct GarageCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Option<Child>>,
    /// Node 1's S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    key_id: String,
    secret: String,
    /// Each node's `id@127.0.0.1:port`.
    peers: Vec<String>,
    /// The bucket.
    pub bucket: String,
}

fn node_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("node{n}"))
}

impl GarageCluster {
    /// Starts three nodes, connects them, applies a layout of one node per zone with
    /// replication factor 3, and makes a bucket with a key.
    pub fn start() -> GarageCluster {
        let bin = crate::garage::garage_bin();
        let dir = tempfile::tempdir().expect("tmp");
        let secret_hex: String = crate::random_bytes(32, std::process::id().into())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut rpcs = Vec::new();
        let mut s3s = Vec::new();
        for n in 1..=3 {
            let (rpc, s3, admin) = (
                crate::garage::free_port(),
                crate::garage::free_port(),
                crate::garage::free_port(),
            );
            let d = node_dir(dir.path(), n);
            std::fs::create_dir_all(&d).expect("node dir");
            std::fs::write(
                d.join("garage.toml"),
                format!(
                    "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret_hex}\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    d = d.display()
                ),
            )
            .expect("garage.toml");
            rpcs.push(rpc);
            s3s.push(s3);
        }
        let mut c = GarageCluster {
            nodes: Vec::new(),
            endpoint: format!("http://127.0.0.1:{}", s3s[0]),
            dir,
            bin,
            key_id: String::new(),
            secret: String::new(),
            peers: Vec::new(),
            bucket: "dbvault-fleet".into(),
        };
        for n in 1..=3 {
            let child = crate::garage::spawn(&c.bin, &node_dir(c.dir.path(), n));
            c.nodes.push(Some(child));
        }
        let ids: Vec<String> = (1..=3).map(|n| c.node_id(n)).collect();
        c.peers = ids
            .iter()
            .zip(&rpcs)
            .map(|(id, rpc)| format!("{id}@127.0.0.1:{rpc}"))
            .collect();
        for (n, id) in ids.iter().enumerate().skip(1) {
            c.retry(
                1,
                &["node", "connect", &format!("{id}@127.0.0.1:{}", rpcs[n])],
            );
        }
        for (n, id) in ids.iter().enumerate() {
            c.retry(
                1,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("dc{}", n + 1),
                    "-c",
                    "1G",
                    id,
                ],
            );
        }
        c.retry(1, &["layout", "apply", "--version", "1"]);
        c.retry(1, &["bucket", "create", &c.bucket.clone()]);
        let key = c.retry(1, &["key", "create", "fleet-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        c.key_id = field("Key ID:");
        c.secret = field("Secret key:");
        let bucket = c.bucket.clone();
        c.retry(
            1,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                &bucket,
                "--key",
                "fleet-key",
            ],
        );
        c
    }

    fn cli(&self, n: usize, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(node_dir(self.dir.path(), n).join("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("garage cli")
    }

    /// Runs a command on node `n` until it succeeds (30 s at most): the nodes take a
    /// moment to listen and to see each other.
    fn retry(&self, n: usize, args: &[&str]) -> String {
        let t = Instant::now();
        loop {
            let out = self.cli(n, args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "garage {args:?} on node {n}: {}{}",
                String::from_utf8_lossy(&out.stderr),
                self.log(n)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn node_id(&self, n: usize) -> String {
        self.retry(n, &["node", "id", "-q"])
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Kills node `n` (1 to 3), as a crash would.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.nodes[n - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `n` again on its data; returns once the bucket answers through it.
    pub fn restart(&mut self, n: usize) {
        if self.nodes[n - 1].is_none() {
            self.nodes[n - 1] = Some(crate::garage::spawn(
                &self.bin,
                &node_dir(self.dir.path(), n),
            ));
        }
        let bucket = self.bucket.clone();
        self.retry(n, &["bucket", "info", &bucket]);
    }

    /// `garage repair --all-nodes tables`: what an operator runs after a node was down,
    /// so the nodes' tables agree again without waiting for their periodic sync.
    pub fn repair_tables(&self) {
        self.retry(1, &["repair", "--all-nodes", "--yes", "tables"]);
    }

    /// Node `n`'s log.
    pub fn log(&self, n: usize) -> String {
        std::fs::read_to_string(node_dir(self.dir.path(), n).join("garage.log")).unwrap_or_default()
    }

    /// A dbvault command on `s3://bucket/prefix` through node 1, with the test passphrase
    /// and a cache of its own.
    pub fn dbvault(&self, prefix: &str, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bin());
        c.arg("--s3-path-style")
            .args(args)
            .env("DBVAULT_REPO", format!("s3://{}/{prefix}", self.bucket))
            .env("DBVAULT_PASSWORD", crate::PASSWORD)
            .env("DBVAULT_CACHE_DIR", self.dir.path().join("cache"))
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "garage")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            // A node down is noticed by Garage within its own timeouts: keep retries short.
            .env("DBVAULT_S3_TIMEOUT", "20");
        c
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for n in 1..=3 {
            self.kill(n);
        }
    }
}
