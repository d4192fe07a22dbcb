//! An SQLite rollback over a crashed migration's `-wal`, as an operator does it: the restore
//! is refused while the application has the file open; after the crash it gives the
//! snapshot back (not the migration the stale `-wal` holds), with the file's owner and
//! mode kept.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbvault_tests::Repo;

fn snap_id(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

/// A `sqlite3` shell on `db`, fed `sql`, kept running (its stdin open) until killed.
fn sqlite_shell(db: &Path, sql: &str) -> std::process::Child {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqlite3: apt-get install sqlite3");
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("feed sqlite3");
    child
}

#[test]
#[allow(clippy::permissions_set_readonly_false)]
fn an_sqlite_rollback_over_a_crashed_migrations_wal_gives_the_snapshot_back() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app.db");
    let c = rusqlite::Connection::open(&app).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL); \
         WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 500) \
         INSERT INTO orders SELECT i, i * 1.5 FROM g;",
    )
    .expect("fill");
    drop(c);
    let root = unsafe_euid_is_root();
    if root {
        let st = Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(&app)
            .status()
            .expect("chown");
        assert!(st.success());
    }
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let before_meta = std::fs::metadata(&app).expect("stat");
    let repo = Repo::new();
    let s = repo
        .run(
            &["backup", &format!("sqlite:{}", app.display()), "--json"],
            None,
        )
        .ok()
        .json();
    let id = snap_id(&s);
    let target = format!("sqlite:{}", app.display());
    let restore_over_app = || repo.run(&["restore", &id, "--to", &target, "--force"], None);

    // The migration commits into the -wal, then its process is killed before any
    // checkpoint: the commits live only in app.db-wal.
    let mut migration = sqlite_shell(
        &app,
        "PRAGMA wal_autocheckpoint = 0; ALTER TABLE orders ADD COLUMN migrated INTEGER; \
         UPDATE orders SET total = 0, migrated = 1; DELETE FROM orders WHERE id > 100;\n",
    );
    let wal = dir.path().join("app.db-wal");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: Option<i64> =
            rusqlite::Connection::open_with_flags(&app, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
                        .ok()
                });
        if n == Some(100) {
            break;
        }
        assert!(Instant::now() < deadline, "the migration never committed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // While the application has the file open, the restore is refused, naming it.
    let r = restore_over_app();
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("sqlite3") && r.stderr.contains("--while-open"),
        "{}",
        r.stderr
    );

    migration.kill().expect("SIGKILL the migration");
    let _ = migration.wait();
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the crash left its commits in app.db-wal"
    );
    let r = restore_over_app();
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    // What the application opens next is the snapshot: no migrated column, 500 rows.
    let c = rusqlite::Connection::open(&app).expect("open");
    let (n, sum): (i64, f64) = c
        .query_row("SELECT count(*), sum(total) FROM orders", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    assert_eq!((n, sum), (500, 1.5 * 500.0 * 501.0 / 2.0));
    let cols: i64 = c
        .query_row(
            "SELECT count(*) FROM pragma_table_info('orders') WHERE name = 'migrated'",
            [],
            |r| r.get(0),
        )
        .expect("columns");
    assert_eq!(
        cols, 0,
        "the migration's column came back from the stale -wal"
    );
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(ok, "ok");
    drop(c);
    let after = std::fs::metadata(&app).expect("stat");
    assert_eq!(
        (after.uid(), after.gid(), after.mode() & 0o7777),
        (before_meta.uid(), before_meta.gid(), 0o664),
        "owner and mode of the application's file kept"
    );
}

fn unsafe_euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
