//! Logical and SQLite backups chained the way users chain them, where a quiet mistake used
//! to exit 0 with the wrong data:
//! - a failed `pg_dump` piped in is refused, and the last good backup stays `latest`;
//! - a dump without post-data (a table with no index) restores one table under a new name
//!   and comes back byte for byte; the same database as `pg_dump -Fc` (SQL_ASCII too) is
//!   stored;
//! - custom-format archives (`--inserts`, `-Z0`, large objects) come back byte for byte;
//! - `diff` of two dumps of an unchanged database calls the schema unchanged;
//! - a stray `\.` in hand-edited COPY data fails the restore naming the table, loading
//!   nothing of it;
//! - a whole-database restore into a database holding the schema is refused unchanged;
//!   `--clean` replaces it; `--create` makes a database; psql's errors read once;
//! - `sql --csv` loads back into PostgreSQL (bytea intact) and `sql --insert` into sqlite3
//!   (the SQLite rollback over a crashed migration's `-wal`: tests/sqlite_rollback.rs).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use dbvault_tests::pgfixture::conn;
use dbvault_tests::{psql, sh, PgDb, Repo};

fn pg_dump(db: &PgDb, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .args(extra)
        .arg("-d")
        .arg(conn(db))
        .output()
        .expect("pg_dump: apt-get install postgresql-client");
    assert!(
        out.status.success(),
        "pg_dump {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `psql` on `db` with `args`, fed `input`; it must succeed.
fn psql_stdin(db: &PgDb, args: &[&str], input: &[u8]) {
    let mut p = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &conn(db)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed");
    let out = p.wait_with_output().expect("psql");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn snap_id(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

#[test]
fn a_failed_pg_dump_piped_in_is_refused_and_latest_stays_good() {
    let db = PgDb::new("pipefail");
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50);");
    let repo = Repo::new();
    let dump = pg_dump(&db, &[]);
    let good = repo.backup(&dump, &["--name", "shop"]);
    let cmd = |c: &str| {
        let mut x = repo.cmd(&[]);
        x.args(["backup", "-", "--name", "shop"]);
        let prog = format!("{c} | {}", shell_words(&x));
        sh(&prog, &[("DBVAULT_PASSWORD", dbvault_tests::PASSWORD)])
    };
    // The nightly cron line whose dump fails: the pipe's last command decides the exit.
    let r = cmd(&format!(
        "pg_dump -h {} dbv_no_such_database_37",
        std::env::var("PGHOST").unwrap_or_else(|_| "/var/run/postgresql".into())
    ));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("stdin is empty") && r.stderr.contains("pipefail"),
        "{}",
        r.stderr
    );
    let r = cmd("printf ''");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    // --command that succeeds with nothing is refused too.
    let r = repo.run(&["backup", "--command", "true", "--name", "shop"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("empty"), "{}", r.stderr);
    // One that fails with nothing is named by its status, with no --allow-empty advice.
    let r = repo.run(
        &[
            "backup",
            "--command",
            "echo no such db >&2; exit 2",
            "--name",
            "shop",
        ],
        None,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("exited with status 2") && !r.stderr.contains("--allow-empty"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.snapshot_ids(), vec![snap_id(&good)]);
    assert_eq!(
        repo.restore("latest").ok().stdout,
        dump,
        "latest is the good night"
    );
    // On purpose, it is allowed.
    let r = repo.run(
        &["backup", "-", "--name", "marker", "--allow-empty"],
        Some(b""),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(repo.snapshot_ids().len(), 2);
}

/// The program and arguments of `c` as one shell line (the tests' paths need no quoting
/// beyond single quotes).
fn shell_words(c: &Command) -> String {
    let mut w = vec![format!("'{}'", c.get_program().to_string_lossy())];
    for a in c.get_args() {
        w.push(format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")));
    }
    for (k, v) in c.get_envs() {
        if let (k, Some(v)) = (k.to_string_lossy(), v) {
            if k != "DBVAULT_PASSWORD" {
                w.insert(0, format!("{k}='{}'", v.to_string_lossy()));
            }
        }
    }
    w.join(" ")
}

#[test]
fn a_dump_without_post_data_restores_a_table_renamed_and_byte_for_byte() {
    let db = PgDb::new("nopost");
    db.sql(
        "CREATE TABLE a (x int, y text); INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, 'three'); \
         CREATE TABLE b (z text); INSERT INTO b VALUES ('b1');",
    );
    let dump = pg_dump(&db, &[]);
    assert!(
        count(&dump, b"\n\\unrestrict ") <= 1,
        "pg_dump wrote its trailer once"
    );
    let repo = Repo::new();
    let s = repo.backup(&dump, &["--name", "nopost"]);
    let id = snap_id(&s);
    let ls = repo.run(&["ls", &id, "--json"], None).ok().json();
    let a = ls["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["name"] == "public.a"))
        .expect("public.a listed")
        .clone();
    assert_eq!(a["rows"], 3);
    // Its header, COPY line and three rows, not the dump's trailer (237 B with it).
    assert!(a["bytes"].as_u64().is_some_and(|b| b < 180), "{a}");
    let back = repo.restore(&id).ok().stdout;
    assert_eq!(back, dump, "the script comes back byte for byte");
    assert_eq!(
        count(&back, b"\\unrestrict "),
        count(&dump, b"\\unrestrict ")
    );
    let r = repo.run(
        &[
            "restore",
            &id,
            "--table",
            "a",
            "--rename-table",
            "a2",
            "--to",
            &db.url(),
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        db.fingerprint().get("public.a2"),
        db.fingerprint().get("public.a")
    );
    // The table alone, as a script, loads with psql.
    let t = repo
        .run(&["restore", &id, "--table", "b", "--to", "-"], None)
        .ok()
        .stdout;
    let other = PgDb::new("nopost2");
    psql_stdin(&other, &[], &t);
    assert_eq!(other.sql("SELECT z FROM b").trim(), "b1");

    // The same database as a custom-format archive, and an SQL_ASCII one.
    let fc = pg_dump(&db, &["-Fc"]);
    let s = repo.backup(&fc, &["--name", "nopost-fc"]);
    assert_eq!(repo.restore(&snap_id(&s)).ok().stdout, fc);
    let ascii = format!("dbv_ascii_{}", std::process::id());
    psql(
        "postgres",
        &format!("CREATE DATABASE {ascii} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
    );
    let ascii_db = PgDb { name: ascii };
    ascii_db.sql("CREATE TABLE t (v text); INSERT INTO t VALUES (E'caf\\xe9'), ('plain');");
    let fc = pg_dump(&ascii_db, &["-Fc"]);
    let s = repo.backup(&fc, &["--name", "ascii-fc"]);
    assert_eq!(repo.restore(&snap_id(&s)).ok().stdout, fc);
}

#[test]
fn custom_format_archives_come_back_byte_for_byte() {
    let db = PgDb::new("fcblocks");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v text); \
         INSERT INTO a SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 3000) g; \
         CREATE TABLE b (x int); INSERT INTO b VALUES (1), (2); \
         SELECT lo_from_bytea(0, 'a large object');",
    );
    let repo = Repo::new();
    for extra in [
        &["--inserts"][..],
        &["-Z0"][..],
        &["-Z0", "--inserts"][..],
        &["-Z9"][..],
        &["--column-inserts", "-Z1"][..],
    ] {
        let mut args = vec!["-Fc"];
        args.extend_from_slice(extra);
        let arch = pg_dump(&db, &args);
        let s = repo.backup(&arch, &["--name", "fc"]);
        let id = snap_id(&s);
        let back = repo.restore(&id);
        assert_eq!(back.code, Some(0), "{extra:?}: {}", back.stderr);
        assert!(back.stdout == arch, "{extra:?}: the archive differs");
        let chk = repo.run(&["check", "--read-data"], None);
        assert_eq!(chk.code, Some(0), "{}", chk.stderr);
    }
}

#[test]
fn diff_of_two_dumps_of_an_unchanged_database_calls_the_schema_unchanged() {
    let db = PgDb::new("restrictkey");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'x');");
    let repo = Repo::new();
    let d1 = pg_dump(&db, &[]);
    let d2 = pg_dump(&db, &[]);
    let a = snap_id(&repo.backup(&d1, &["--name", "s"]));
    let b = snap_id(&repo.backup(&d2, &["--name", "s"]));
    let d = repo.run(&["diff", &a, &b, "--json"], None).ok().json();
    let changed: Vec<String> = d["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["status"] != "same")
        .map(|c| c["name"].to_string())
        .collect();
    assert!(changed.is_empty(), "{changed:?} in {d}");
    // A real schema change is seen.
    db.sql("ALTER TABLE t ADD COLUMN w int");
    let c = snap_id(&repo.backup(&pg_dump(&db, &[]), &["--name", "s"]));
    let d = repo.run(&["diff", &b, &c, "--json"], None).ok().json();
    assert!(
        d["changes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "pre-data")),
        "{d}"
    );
}

#[test]
fn a_stray_end_of_data_line_fails_the_restore_naming_the_table() {
    let db = PgDb::new("stray");
    db.sql("CREATE TABLE big (id int, v text); INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 5000) g;");
    let dump = String::from_utf8(pg_dump(&db, &[])).expect("utf8");
    // A hand edit that leaves `\.` after the first row.
    let edited = dump.replacen("1\trow 1\n", "1\trow 1\n\\.\n", 1);
    assert_ne!(edited, dump);
    let repo = Repo::new();
    let id = snap_id(&repo.backup(edited.as_bytes(), &["--name", "stray"]));
    let target = PgDb::new("stray_to");
    let r = repo.run(&["restore", &id, "--to", &target.url()], None);
    assert_ne!(r.code, Some(0), "a partial load must not exit 0");
    assert!(r.stderr.contains("big"), "{}", r.stderr);
    let n = target.sql("SELECT count(*) FROM big");
    assert_eq!(n.trim(), "0", "nothing of the table is kept");
}

#[test]
fn a_database_holding_the_schema_is_refused_unchanged_and_clean_and_create_work() {
    let src = PgDb::new("clean_src");
    src.sql(
        "CREATE SCHEMA app; \
         CREATE FUNCTION app.bump(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a + 1'; \
         CREATE TABLE app.orders (id serial PRIMARY KEY, n int DEFAULT app.bump(1)); \
         INSERT INTO app.orders (n) SELECT g FROM generate_series(1, 100) g; \
         CREATE TABLE items (id int REFERENCES app.orders(id), q int); \
         INSERT INTO items SELECT g, g FROM generate_series(1, 100) g; \
         CREATE VIEW app.big AS SELECT * FROM app.orders WHERE n > 50;",
    );
    let repo = Repo::new();
    let id = snap_id(&repo.backup(&pg_dump(&src, &[]), &["--name", "c"]));
    let want = src.fingerprint();

    // A database that already holds it (yesterday's restore, changed since).
    let target = PgDb::new("clean_to");
    repo.run(&["restore", &id, "--to", &target.url()], None)
        .ok();
    target.sql("DELETE FROM items WHERE id > 10; INSERT INTO app.orders (n) VALUES (-1);");
    let before = target.fingerprint();
    let r = repo.run(&["restore", &id, "--to", &target.url()], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("nothing was changed")
            && r.stderr.contains("app.orders")
            && r.stderr.contains("--clean"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert_eq!(
        target.fingerprint(),
        before,
        "the refusal changed the target"
    );

    let r = repo.run(&["restore", &id, "--to", &target.url(), "--clean"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(target.fingerprint(), want);

    // --create: a database that does not exist yet.
    let name = format!("dbv_created_{}", std::process::id());
    let created = PgDb { name: name.clone() };
    let url = created.url();
    let r = repo.run(&["restore", &id, "--to", &url], None);
    assert_eq!(
        r.code,
        Some(1),
        "a missing database without --create: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("does not exist") && r.stderr.contains("--create"),
        "{}",
        r.stderr
    );
    let r = repo.run(&["restore", &id, "--to", &url, "--create"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(created.fingerprint(), want);

    // psql's error reads once: no doubled labels.
    let owned = PgDb::new("owned");
    let role = format!("dbv_role_{}", std::process::id());
    owned.sql(&format!(
        "CREATE ROLE {role}; CREATE TABLE t (a int); ALTER TABLE t OWNER TO {role};"
    ));
    let oid = snap_id(&repo.backup(&pg_dump(&owned, &[]), &["--name", "owned"]));
    owned.sql(&format!("DROP TABLE t; DROP ROLE {role};"));
    let into = PgDb::new("owned_to");
    let r = repo.run(&["restore", &oid, "--to", &into.url()], None);
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr
            .contains(&format!("role \"{role}\" does not exist"))
            && r.stderr.matches("ERROR").count() == 1
            && !r.stderr.contains("STATEMENT:"),
        "{}",
        r.stderr
    );
}

#[test]
fn sql_output_loads_back_into_postgres_and_sqlite() {
    // PostgreSQL: bytea through --csv and \copy.
    let db = PgDb::new("csvback");
    db.sql(
        "CREATE TABLE logo (id int, img bytea, note text, f float8); \
         INSERT INTO logo VALUES (1, '\\x000102030405060708090a0b0c0d0e0f', '', 0.1), \
         (2, NULL, NULL, 1e300), (3, '\\x2c22', 'a,\"b\"\nc', -2.5);",
    );
    let want =
        db.sql("SELECT id, md5(img), length(img), note IS NULL, note, f FROM logo ORDER BY id");
    let repo = Repo::new();
    let id = snap_id(&repo.backup(&pg_dump(&db, &[]), &["--name", "csv"]));
    let csv = repo
        .run(
            &["sql", &id, "-t", "logo", "--csv", "SELECT * FROM logo"],
            None,
        )
        .ok()
        .stdout;
    db.sql("CREATE TABLE logo2 (LIKE logo)");
    psql_stdin(&db, &["-c", "\\copy logo2 FROM STDIN CSV HEADER"], &csv);
    let got =
        db.sql("SELECT id, md5(img), length(img), note IS NULL, note, f FROM logo2 ORDER BY id");
    assert_eq!(got, want, "csv: {}", String::from_utf8_lossy(&csv));
    assert!(got.contains("|16|"), "{got}");

    // SQLite: blobs, empty strings, NULLs and floats through --insert and sqlite3.
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app.db");
    let c = rusqlite::Connection::open(&app).expect("open");
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT, r REAL, n); \
         INSERT INTO t VALUES (1, X'00ff10', '', 0.1, NULL), (2, NULL, 'it''s', 1e300, 7), (3, X'', 'x\ny', -0.0, 'txt');",
    )
    .expect("fill");
    drop(c);
    let s = repo
        .run(
            &["backup", &format!("sqlite:{}", app.display()), "--json"],
            None,
        )
        .ok()
        .json();
    let sql = repo
        .run(
            &["sql", &snap_id(&s), "--insert", "t", "SELECT * FROM t"],
            None,
        )
        .ok()
        .stdout;
    let back = dir.path().join("back.db");
    let c = rusqlite::Connection::open(&back).expect("open");
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT, r REAL, n);")
        .expect("schema");
    c.execute_batch(&String::from_utf8(sql).expect("utf8"))
        .expect("sqlite3 runs the inserts");
    let rows = |p: &Path| -> Vec<String> {
        let c = rusqlite::Connection::open(p).expect("open");
        let mut st = c
            .prepare("SELECT quote(id), quote(b), quote(s), quote(r), quote(n), typeof(r), typeof(n) FROM t ORDER BY id")
            .expect("prepare");
        st.query_map([], |r| {
            Ok((0..7)
                .map(|i| r.get::<_, String>(i).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("|"))
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
    };
    assert_eq!(rows(&back), rows(&app));
}

#[test]
fn names_with_newlines_and_quotes_are_listed_counted_addressed_and_restored() {
    let db = PgDb::new("oddnames");
    db.sql(
        "CREATE TABLE \"we\"\"ird\nname\" (a int PRIMARY KEY, \"col\nx\" text); \
         INSERT INTO \"we\"\"ird\nname\" VALUES (1, 'x'), (2, 'y'), (3, 'z'); \
         CREATE TABLE \"we\"\"ird name\" (a int); INSERT INTO \"we\"\"ird name\" VALUES (9);",
    );
    let want = db.fingerprint();
    let odd = "public.we\"ird\nname";
    let repo = Repo::new();
    let plain = pg_dump(&db, &[]);
    let piped = snap_id(&repo.backup(&plain, &["--name", "piped"]));
    let direct = snap_id(
        &repo
            .run(&["backup", &db.url(), "--name", "direct", "--json"], None)
            .ok()
            .json(),
    );
    let fc = pg_dump(&db, &["-Fc"]);
    let custom = snap_id(&repo.backup(&fc, &["--name", "custom"]));
    assert_eq!(repo.restore(&custom).ok().stdout, fc, "-Fc byte for byte");
    assert_eq!(
        repo.restore(&piped).ok().stdout,
        plain,
        "plain byte for byte"
    );
    for id in [&piped, &direct, &custom] {
        let ls = repo.run(&["ls", id, "--json"], None).ok().json();
        let e = ls["entries"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["name"] == odd))
            .unwrap_or_else(|| panic!("{odd:?} not listed in {ls}"))
            .clone();
        assert_eq!(e["rows"], 3, "{id}: {e}");
        // One name, one line, escaped.
        let text = repo.run(&["ls", id], None).ok().text();
        assert!(text.contains("public.we\"ird\\nname"), "{text}");
        assert!(!text.contains("we\"ird\nname"), "{text}");
        // Both spellings address it; the look-alike with a space is another table.
        for spelling in ["public.\"we\"\"ird\\nname\"", "public.\"we\"\"ird\nname\""] {
            let to = PgDb::new("odd_to");
            let r = repo.run(
                &["restore", id, "--table", spelling, "--to", &to.url()],
                None,
            );
            assert_eq!(r.code, Some(0), "{id} {spelling:?}: {}", r.stderr);
            let got = to.fingerprint();
            let key = "public.\"we\"\"ird\nname\"";
            assert_eq!(got.get(key), want.get(key), "{id} {spelling:?}: {got:?}");
            assert_eq!(got.len(), 1, "only that table: {got:?}");
        }
        let to = PgDb::new("odd_all");
        repo.run(&["restore", id, "--to", &to.url()], None).ok();
        assert_eq!(to.fingerprint(), want, "{id}");
        let rt = repo.run(&["restore-test", id, "--json"], None);
        assert_eq!(rt.code, Some(0), "{id}: {}", rt.stderr);
        let report = rt.text();
        assert!(
            report.contains("ird\\nname"),
            "restore-test counts it: {report}"
        );
    }
}
