//! SQLite: online backup of live databases, atomic restore, table-level restore.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbvault_tests::{sqlite3_dump, Repo};
use rusqlite::Connection;

fn make_db(path: &Path) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        r#"
        PRAGMA foreign_keys = ON;
        CREATE TABLE "Customers" (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT, photo BLOB);
        CREATE INDEX idx_customers_name ON "Customers"(name);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES "Customers"(id), total REAL, placed TEXT);
        CREATE INDEX idx_orders_customer ON orders(customer_id);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
        CREATE TRIGGER trg_orders_audit AFTER INSERT ON orders BEGIN INSERT INTO audit(what) VALUES ('order ' || NEW.id); END;
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
        CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE empty_one (a, b);
        "#,
    )
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in 1..=3000i64 {
        let note: Option<String> = if i % 7 == 0 {
            None
        } else {
            Some(format!("ünïcödé ✓ line\nwith 'quotes' {i}"))
        };
        let photo: Option<Vec<u8>> = if i % 5 == 0 {
            None
        } else {
            Some((0..(i % 300) as u8).collect())
        };
        tx.execute(
            "INSERT INTO \"Customers\" VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i, format!("customer {i}"), note, photo],
        )
        .expect("insert");
    }
    for i in 1..=10000i64 {
        tx.execute(
            "INSERT INTO orders VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i, 1 + i % 3000, (i as f64) * 0.37, "2026-11-20 10:00:00"],
        )
        .expect("insert");
    }
    for i in 0..200 {
        tx.execute(
            "INSERT INTO kv VALUES (?1, ?2)",
            rusqlite::params![format!("key{i}"), i * 3],
        )
        .expect("kv");
    }
    tx.commit().expect("commit");
}

fn integrity(path: &Path) -> (String, usize) {
    let c = Connection::open(path).expect("open");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    let mut st = c.prepare("PRAGMA foreign_key_check").expect("fk");
    let fk = st.query_map([], |_| Ok(())).expect("fk").count();
    (ok, fk)
}

fn fingerprint(path: &Path, table: &str) -> String {
    let c = Connection::open(path).expect("open");
    let mut st = c
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
        .expect("prepare");
    let n = st.column_count();
    let mut rows = st.query([]).expect("query");
    let mut h = String::new();
    while let Some(r) = rows.next().expect("row") {
        for i in 0..n {
            h.push_str(&format!("{:?}|", r.get_ref(i).expect("col")));
        }
        h.push('\n');
    }
    h
}

#[test]
fn round_trip_keeps_the_dump_identical_and_passes_integrity_check() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    let b = repo
        .run(
            &["backup", &format!("sqlite:{}", db.display()), "--json"],
            None,
        )
        .ok()
        .json();
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    assert_eq!(list[0]["name"], "app");
    assert_eq!(list[0]["parts"][0]["tables"]["orders"], 10000);
    assert_eq!(list[0]["parts"][0]["tables"]["Customers"], 3000);
    assert_eq!(list[0]["parts"][0]["tables"]["empty_one"], 0);
    let out = repo.dir.path().join("restored.db");
    let id = b["snapshot_id"].as_str().expect("id");
    repo.run(
        &["restore", id, "--to", &format!("sqlite:{}", out.display())],
        None,
    )
    .ok();
    assert_eq!(integrity(&out), ("ok".to_string(), 0));
    assert_eq!(sqlite3_dump(&out), sqlite3_dump(&db));
    // --to - gives the file bytes.
    let bytes = repo.restore(id).ok().stdout;
    assert_eq!(bytes, std::fs::read(&out).expect("read"));
}

#[test]
fn existing_target_is_refused_without_force() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    repo.run(&["backup", &format!("sqlite:{}", db.display())], None)
        .ok();
    let target = repo.dir.path().join("precious.db");
    std::fs::write(&target, b"do not touch").expect("write");
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--to",
            &format!("sqlite:{}", target.display()),
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"do not touch");
    repo.run(
        &[
            "restore",
            "latest",
            "--force",
            "--to",
            &format!("sqlite:{}", target.display()),
        ],
        None,
    )
    .ok();
    assert_eq!(sqlite3_dump(&target), sqlite3_dump(&db));
    let leftovers: Vec<_> = std::fs::read_dir(repo.dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".dbvault"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn unchanged_database_adds_under_one_percent() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    let src = format!("sqlite:{}", db.display());
    repo.run(&["backup", &src], None).ok();
    let b = repo.run(&["backup", &src, "--json"], None).ok().json();
    let (added, size) = (
        b["bytes_added"].as_u64().expect("n"),
        b["bytes_in"].as_u64().expect("n"),
    );
    assert!(
        added * 100 < size,
        "unchanged database added {added} of {size} bytes"
    );
}

fn live_backup(journal_mode: &str) {
    let repo = Repo::new();
    let db = repo.dir.path().join("live.db");
    {
        let c = Connection::open(&db).expect("open");
        c.query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |_| {
            Ok(())
        })
        .expect("mode");
        c.execute_batch(
            "CREATE TABLE parent (seq INTEGER PRIMARY KEY, pad TEXT);
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent_seq INTEGER NOT NULL REFERENCES parent(seq), pad TEXT);
             CREATE TABLE bulk (id INTEGER PRIMARY KEY, pad TEXT);",
        )
        .expect("schema");
        let tx = c.unchecked_transaction().expect("tx");
        for i in 0..40000 {
            tx.execute("INSERT INTO bulk (pad) VALUES (?1)", [format!("{i:0>400}")])
                .expect("bulk");
        }
        tx.commit().expect("commit");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (db2, stop2) = (db.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let c = Connection::open(&db2).expect("open");
        c.busy_timeout(Duration::from_secs(60)).expect("busy");
        c.execute_batch("PRAGMA foreign_keys = ON").expect("fk");
        let mut seq = 0i64;
        while !stop2.load(Ordering::Relaxed) {
            seq += 1;
            let tx = c.unchecked_transaction().expect("tx");
            tx.execute(
                "INSERT INTO parent VALUES (?1, ?2)",
                rusqlite::params![seq, "p".repeat(200)],
            )
            .expect("parent");
            tx.execute(
                "INSERT INTO child (parent_seq, pad) VALUES (?1, ?2)",
                rusqlite::params![seq, "c".repeat(200)],
            )
            .expect("child");
            tx.commit().expect("commit");
        }
        seq
    });
    std::thread::sleep(Duration::from_millis(300));
    let count = |p: &Path| -> i64 {
        // In rollback-journal mode the writer holds the file between commits: wait for it.
        let c = Connection::open(p).expect("o");
        c.busy_timeout(Duration::from_secs(60)).expect("busy");
        c.query_row("SELECT count(*) FROM parent", [], |r| r.get(0))
            .expect("c")
    };
    let before = count(&db);
    repo.run(&["backup", &format!("sqlite:{}", db.display())], None)
        .ok();
    let after = count(&db);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("writer");
    assert!(
        after > before && last > after,
        "the writer made no commits during the backup ({before} {after} {last})"
    );
    let out = repo.dir.path().join("restored.db");
    repo.run(
        &[
            "restore",
            "latest",
            "--to",
            &format!("sqlite:{}", out.display()),
        ],
        None,
    )
    .ok();
    assert_eq!(integrity(&out), ("ok".to_string(), 0));
    let c = Connection::open(&out).expect("open");
    let (n, max, children): (i64, Option<i64>, i64) = c
        .query_row(
            "SELECT count(*), max(seq), (SELECT count(*) FROM child) FROM parent",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("q");
    assert_eq!(
        Some(n),
        max.or(Some(0)),
        "parent rows are not a prefix 1..n"
    );
    assert_eq!(children, n, "a commit was torn");
    assert!(
        n >= before && n <= after,
        "restored {n} commits, outside [{before}, {after}]"
    );
}

#[test]
fn live_backup_while_writing_wal() {
    live_backup("wal");
}

#[test]
fn live_backup_while_writing_rollback_journal() {
    live_backup("delete");
}

#[test]
fn table_restore_beside_the_live_table_leaves_the_rest_untouched() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    repo.run(&["backup", &format!("sqlite:{}", db.display())], None)
        .ok();
    // Someone deletes the wrong rows.
    Connection::open(&db)
        .expect("o")
        .execute("DELETE FROM orders WHERE id <= 500", [])
        .expect("delete");
    let others = ["Customers", "audit", "kv"].map(|t| fingerprint(&db, t));
    let orders_now = fingerprint(&db, "orders");
    let target = format!("sqlite:{}", db.display());
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "orders",
            "--rename-table",
            "orders_restored",
            "--to",
            &target,
        ],
        None,
    )
    .ok();
    assert_eq!(
        ["Customers", "audit", "kv"].map(|t| fingerprint(&db, t)),
        others
    );
    assert_eq!(fingerprint(&db, "orders"), orders_now);
    let c = Connection::open(&db).expect("o");
    let n: i64 = c
        .query_row("SELECT count(*) FROM orders_restored", [], |r| r.get(0))
        .expect("q");
    assert_eq!(n, 10000);
    let idx: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master WHERE tbl_name = 'orders_restored' AND type IN ('index','trigger')", [], |r| r.get(0))
        .expect("q");
    assert_eq!(idx, 2, "the index and the trigger come with the table");
    // Copy the deleted rows back with plain SQL.
    c.execute(
        "INSERT INTO orders SELECT * FROM orders_restored WHERE id NOT IN (SELECT id FROM orders)",
        [],
    )
    .expect("copy back");
    assert_eq!(integrity(&db), ("ok".to_string(), 0));
    // Onto the live table without --clean: refused, nothing changed.
    let before = std::fs::read(&db).expect("read");
    let r = repo.run(
        &["restore", "latest", "--table", "orders", "--to", &target],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read(&db).expect("read"), before);
    // A table that is not in the snapshot.
    let r = repo.run(
        &["restore", "latest", "--table", "nope", "--to", &target],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no table \"nope\"") && r.stderr.contains("orders"),
        "{}",
        r.stderr
    );
}

#[test]
fn table_as_sql_loads_in_sqlite3() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    repo.run(&["backup", &format!("sqlite:{}", db.display())], None)
        .ok();
    let sql = repo
        .run(
            &["restore", "latest", "--table", "customers", "--to", "-"],
            None,
        )
        .ok()
        .stdout;
    let fresh = repo.dir.path().join("fresh.db");
    let mut child = std::process::Command::new("sqlite3")
        .arg(&fresh)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (apt-get install sqlite3)");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &sql).expect("feed");
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        fingerprint(&fresh, "Customers"),
        fingerprint(&db, "Customers")
    );
}

#[test]
fn non_sqlite_input_is_refused_clearly() {
    let repo = Repo::new();
    let text = repo.dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "just some text, long enough to not be a database header at all\n".repeat(100),
    )
    .expect("w");
    let r = repo.run(&["backup", &format!("sqlite:{}", text.display())], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("not an SQLite database"), "{}", r.stderr);
    let r = repo.run(
        &["backup", "-", "--format", "sqlite"],
        Some(b"hello, not a database"),
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("not an SQLite database"), "{}", r.stderr);
    let r = repo.run(&["backup", "sqlite:/nonexistent/x.db"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no such database file"), "{}", r.stderr);
    assert!(repo.snapshot_ids().is_empty());
}

#[test]
fn database_file_on_stdin_is_detected() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    make_db(&db);
    let bytes = std::fs::read(&db).expect("read");
    repo.backup(&bytes, &["--name", "piped"]);
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    assert_eq!(list[0]["source"]["format"], "sqlite");
    assert_eq!(list[0]["parts"][0]["tables"]["orders"], 10000);
    assert_eq!(repo.restore("latest").ok().stdout, bytes);
}

/// A real application database with rows that violate its (unenforced) foreign keys backs
/// up and passes restore-test with one summary of them; a flipped bit still fails.
#[test]
fn preexisting_foreign_key_violations_are_summarised_not_failed() {
    let repo = dbvault_tests::Repo::new();
    let path = repo.dir.path().join("crs.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF; CREATE TABLE geodetic_crs (code INTEGER PRIMARY KEY); \
         CREATE TABLE projected_crs (id INTEGER PRIMARY KEY, geo INTEGER REFERENCES geodetic_crs(code)); \
         CREATE TABLE keyed (k TEXT PRIMARY KEY, geo INTEGER REFERENCES geodetic_crs(code)) WITHOUT ROWID; \
         INSERT INTO geodetic_crs VALUES (1); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
         INSERT INTO projected_crs SELECT i, CASE WHEN i % 2 = 0 THEN 1 ELSE 1000 + i END FROM n; \
         INSERT INTO keyed VALUES ('a', 999);",
    )
    .expect("sql");
    drop(conn);
    let src = format!("sqlite:{}", path.display());
    repo.run(&["backup", &src, "--name", "crs"], None).ok();
    let r = repo
        .run(&["restore-test", "latest", "--name", "crs"], None)
        .ok();
    let text = r.text();
    assert!(text.contains("PASSED"), "{text}");
    assert!(text.lines().count() < 20, "not a summary: {text}");
    assert!(
        text.contains("1501 foreign-key violations")
            && text.contains("1500 in projected_crs -> geodetic_crs")
            && text.contains("WITHOUT ROWID"),
        "{text}"
    );
    assert!(!text.contains("None"), "{text}");
    let v = repo
        .run(&["restore-test", "latest", "--name", "crs", "--json"], None)
        .ok()
        .json();
    assert_eq!(v["ok"], true, "{v}");
    // And it restores (the violations are the database's, not damage).
    let back = repo.dir.path().join("back.db");
    let to = format!("sqlite:{}", back.display());
    repo.run(&["restore", "latest", "--name", "crs", "--to", &to], None)
        .ok();
    assert_eq!(
        dbvault_tests::sqlite3_dump(&back),
        dbvault_tests::sqlite3_dump(&path)
    );

    // Real damage still fails, naming the pack.
    let packs = dbvault_tests::tree(&repo.path.join("data"));
    let (pack, bytes) = packs.iter().max_by_key(|(_, b)| b.len()).expect("a pack");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(repo.path.join("data").join(pack), bad).expect("flip");
    let r = repo.run(&["restore-test", "latest", "--name", "crs"], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let name = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(r.text().contains(&name[..8]), "{}", r.text());
}

/// A database that already fails `integrity_check` (an index that disagrees with its
/// table) is backed up as it is, says so, restores byte-identically and passes
/// restore-test with a note: its own complaints are recorded at backup, not damage.
#[test]
fn a_source_that_fails_integrity_check_is_recorded_and_still_restores() {
    let repo = dbvault_tests::Repo::new();
    let path = repo.dir.path().join("sick.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE t (a INTEGER, b TEXT); CREATE INDEX t_a ON t(a); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         INSERT INTO t SELECT i, 'row ' || i FROM n;",
    )
    .expect("sql");
    // The index's definition now says b while its entries hold a.
    conn.execute_batch(
        "PRAGMA writable_schema = ON; \
         UPDATE sqlite_master SET sql = 'CREATE INDEX t_a ON t(b)' WHERE name = 't_a'; \
         PRAGMA writable_schema = OFF;",
    )
    .expect("writable_schema");
    drop(conn);
    let c = rusqlite::Connection::open(&path).expect("reopen");
    let first: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_ne!(first, "ok", "the fixture is not damaged");
    drop(c);

    let src = format!("sqlite:{}", path.display());
    let b = repo.run(&["backup", &src, "--name", "sick"], None).ok();
    assert!(
        b.stderr
            .contains("note: the database failed PRAGMA integrity_check"),
        "{}",
        b.stderr
    );
    let list = repo.run(&["snapshots"], None).ok().text();
    assert!(
        list.contains("failed PRAGMA integrity_check at backup"),
        "{list}\n{}",
        b.stderr
    );
    let r = repo
        .run(&["restore-test", "latest", "--name", "sick"], None)
        .ok();
    let text = r.text();
    assert!(text.contains("PASSED"), "{text}");
    assert!(
        text.contains("integrity_check complaints, as at backup"),
        "{text}"
    );
    assert!(text.lines().count() < 20, "not a summary: {text}");
    let back = repo.dir.path().join("back.db");
    let to = format!("sqlite:{}", back.display());
    let restored = repo
        .run(&["restore", "latest", "--name", "sick", "--to", &to], None)
        .ok();
    assert!(
        restored
            .stderr
            .contains("fails integrity_check as the source did"),
        "{}",
        restored.stderr
    );
    assert_eq!(
        dbvault_tests::sqlite3_dump(&back),
        dbvault_tests::sqlite3_dump(&path),
        "the restored database differs from the source"
    );
}
