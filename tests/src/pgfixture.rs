//! The PostgreSQL fixture for faithfulness tests, and whole dumps to compare databases by.
//!
//! `fixtures/hard.sql` holds the cases that break splitters and restores;
//! `fixtures/faithful.sql` adds what a backup must hold besides ordinary tables (large
//! objects, an unlogged table, an extension's configuration data, row-level security,
//! values whose text depends on session settings). Its extension, `dbvault_fixture`, is
//! installed into PostgreSQL's share directory first.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{pg_host, PgCluster, PgDb};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Copies the `dbvault_fixture` extension into the extension directory of every
/// installed PostgreSQL version (as root, or as a user who may write there).
pub fn install_fixture_extension() {
    let share = Path::new("/usr/share/postgresql");
    let versions: Vec<PathBuf> = std::fs::read_dir(share)
        .map(|d| d.flatten().map(|e| e.path().join("extension")).collect())
        .unwrap_or_default();
    let versions: Vec<PathBuf> = versions.into_iter().filter(|p| p.is_dir()).collect();
    assert!(
        !versions.is_empty(),
        "no PostgreSQL extension directory under {}: apt-get install postgresql",
        share.display()
    );
    for dir in versions {
        for f in ["dbvault_fixture.control", "dbvault_fixture--1.0.sql"] {
            let from = fixtures().join("extension").join(f);
            let to = dir.join(f);
            let same = std::fs::read(&to).ok() == std::fs::read(&from).ok();
            if !same {
                // Written beside and renamed: parallel tests never see half a file.
                let tmp = dir.join(format!(".{f}.{}", std::process::id()));
                std::fs::copy(&from, &tmp)
                    .and_then(|_| std::fs::rename(&tmp, &to))
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot install the test extension into {} ({e}): run the tests as root (.ci/run does)",
                            dir.display()
                        )
                    });
            }
        }
    }
}

/// The fixture files, in load order.
pub fn faithful_files() -> Vec<PathBuf> {
    install_fixture_extension();
    vec![fixtures().join("hard.sql"), fixtures().join("faithful.sql")]
}

/// A database on the test server with the whole fixture.
pub fn faithful_db(tag: &str) -> PgDb {
    let db = PgDb::new(tag);
    for f in faithful_files() {
        db.load(&f);
    }
    db
}

/// Loads the whole fixture into database `db` of a throwaway cluster.
pub fn load_faithful(cluster: &PgCluster, db: &str) {
    for f in faithful_files() {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &cluster.url(db),
                "-f",
            ])
            .arg(&f)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "loading {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A whole `pg_dump` (schema, data, large objects) of a connection string, without the
/// lines that differ between any two dumps (`\restrict` keys).
pub fn pg_dump(conn: &str) -> String {
    pg_dump_with(&["-d", conn])
}

/// `pg_dump ARGS`, without the lines that differ between any two dumps.
pub fn pg_dump_with(args: &[&str]) -> String {
    let out = Command::new("pg_dump")
        .args(args)
        .output()
        .expect("pg_dump: apt-get install postgresql-client");
    assert!(
        out.status.success(),
        "pg_dump {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Restores pg_dump's own dump of `from` into `to` (both connection strings), with psql.
pub fn copy_with_pg_dump(from: &str, to: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("pg_dump -d \"$FROM\" | psql -X -q -v ON_ERROR_STOP=1 -d \"$TO\" >/dev/null")
        .env("FROM", from)
        .env("TO", to)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "pg_dump | psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every large object of a connection string: oid and md5 of its data, in oid order.
pub fn large_objects(conn: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-d", conn, "-c"])
        .arg("SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid")
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The connection string of a database on the test server.
pub fn conn(db: &PgDb) -> String {
    format!("host={} dbname={}", pg_host(), db.name)
}
