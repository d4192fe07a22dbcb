//! Point-in-time recovery in daily use, against real clusters: restore-test of a physical
//! snapshot on a throwaway server (passes; fails naming a missing or damaged WAL segment;
//! leaves no server or directory behind), and one table restored as it was at a time
//! beside the live one.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dbvault_tests::physical::{self, Archive};
use dbvault_tests::{bin, run_cmd, PgCluster, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}\n{}", r.stderr, r.text());
    r
}

fn archive_now(pg: &PgCluster) {
    physical::archive_now(&|q| pg.sql("postgres", q), &|| pg.log());
}

/// A dbvault command run as root (as on a backup host), on the archive's repository.
fn as_root(archive: &Archive, args: &[&str]) -> Run {
    let mut c = Command::new(bin());
    c.env("DBVAULT_REPO", &archive.repo)
        .env("DBVAULT_PASSWORD_FILE", archive.dir.join("pw"))
        .env("DBVAULT_CACHE_DIR", archive.dir.join("root-cache"))
        .env_remove("DBVAULT_PASSWORD")
        .args(args);
    let r = run_cmd(c, None);
    // What root wrote (the report) goes back to the repository's owner.
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&archive.dir)
        .status();
    r
}

/// No process runs with `dir` on its command line, and `dir` is gone.
fn nothing_left(dir: &str) {
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
    for p in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(!cmd.contains(dir), "a process was left running: {cmd}");
    }
}

/// The throwaway directory a restore-test report names.
fn scratch_dir(report: &serde_json::Value) -> String {
    let s = report["scratch"].as_str().expect("scratch").to_string();
    s.split_whitespace()
        .find(|w| w.contains("dbvault-recover-"))
        .expect("a directory in the scratch text")
        .to_string()
}

/// The archive's file records of the WAL segments, path by name.
fn segment_records(archive: &Archive) -> Vec<std::path::PathBuf> {
    let mut v = archive.wal_records();
    v.retain(|p| p.file_name().is_some_and(|n| n.len() == 24));
    v
}

fn cluster(archive: &Archive) -> PgCluster {
    let settings = format!("archive_mode = on\n{}\n", archive.archive_command("pg"));
    PgCluster::with_tcp(Some((&settings, "local replication all trust")))
}

#[test]
fn restore_test_of_a_physical_snapshot_checks_the_recovered_cluster() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let pg = cluster(&archive);
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'a' FROM generate_series(1, 1000) i",
    );
    pg.sql("postgres", "CREATE DATABASE other");
    pg.sql(
        "other",
        "CREATE TABLE o (id int); INSERT INTO o VALUES (1), (2), (3)",
    );
    ok(
        dbv(&["backup", &pg.url("postgres"), "--physical", "--name", "pg"]),
        "base backup",
    );
    // Rows after the base backup: only replaying the archive brings them.
    pg.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'b' FROM generate_series(1001, 2500) i",
    );
    archive_now(&pg);
    pg.sql("postgres", "INSERT INTO t VALUES (2501, 'c')");
    archive_now(&pg);

    // As root on the backup host: the throwaway server runs as postgres.
    let r = ok(
        as_root(
            &archive,
            &["--json", "restore-test", "latest", "--name", "pg"],
        ),
        "restore-test",
    );
    let rep = r.json();
    assert_eq!(rep["ok"], true, "{rep}");
    let rows = |rep: &serde_json::Value, name: &str| {
        rep["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["rows_restored"].as_u64())
    };
    assert_eq!(rows(&rep, "postgres/public.t"), Some(2501), "{rep}");
    assert_eq!(rows(&rep, "other/public.o"), Some(3), "{rep}");
    let notes = rep["notes"].to_string();
    assert!(
        notes.contains("pg_amcheck checked 2 database(s): no corruption"),
        "{notes}"
    );
    nothing_left(&scratch_dir(&rep));
    // snapshots shows the report.
    let s = ok(dbv(&["--json", "snapshots"]), "snapshots").json();
    assert_eq!(s[0]["restore_test"]["last_ok"], true, "{s}");

    // As the postgres user, to a time before the last row: it is not there.
    let before = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')",
    );
    std::thread::sleep(Duration::from_millis(50));
    pg.sql("postgres", "INSERT INTO t VALUES (2502, 'd')");
    archive_now(&pg);
    let at = format!("{}:00", before.trim());
    let r = ok(
        dbv(&[
            "--json",
            "restore-test",
            "latest",
            "--name",
            "pg",
            "--target-time",
            &at,
        ]),
        "restore-test to a time",
    );
    assert_eq!(
        rows(&r.json(), "postgres/public.t"),
        Some(2501),
        "{}",
        r.text()
    );

    // A damaged segment the recovery needs: exit 3, named.
    let records = segment_records(&archive);
    let last = records.last().expect("segments").clone();
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    let saved = std::fs::read(&last).expect("record");
    let mut bad = saved.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&last, &bad).expect("damage");
    let r = as_root(
        &archive,
        &["--json", "restore-test", "latest", "--name", "pg"],
    );
    assert_eq!(r.code, Some(3), "{}\n{}", r.text(), r.stderr);
    let rep = r.json();
    assert!(rep["problems"].to_string().contains(&name), "{rep}");
    nothing_left(&scratch_dir(&rep));
    std::fs::write(&last, &saved).expect("repair");

    // A missing segment in the middle: exit 3, named.
    let middle = records[records.len() - 2].clone();
    let name = middle.file_name().unwrap().to_string_lossy().into_owned();
    let moved = archive.dir.join("moved-segment");
    std::fs::rename(&middle, &moved).expect("move");
    let r = as_root(
        &archive,
        &["--json", "restore-test", "latest", "--name", "pg"],
    );
    assert_eq!(r.code, Some(3), "{}\n{}", r.text(), r.stderr);
    let rep = r.json();
    assert!(rep["problems"].to_string().contains(&name), "{rep}");
    std::fs::rename(&moved, &middle).expect("move back");
    let s = ok(dbv(&["--json", "snapshots"]), "snapshots").json();
    assert_eq!(s[0]["restore_test"]["last_ok"], false, "{s}");
}

#[test]
fn one_table_comes_back_as_it_was_at_a_time_beside_the_live_one() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let pg = cluster(&archive);
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE orders (id serial PRIMARY KEY, v text NOT NULL CHECK (v <> ''), at int DEFAULT 7)");
    sql("CREATE INDEX orders_v ON orders (v)");
    sql("CREATE TABLE keep (k int)");
    sql("INSERT INTO orders (v) SELECT 'night-' || i FROM generate_series(1, 500) i");
    ok(
        dbv(&["backup", &pg.url("postgres"), "--physical", "--name", "pg"]),
        "base backup",
    );
    // The day's changes, which last night's backup does not have.
    sql("INSERT INTO orders (v) SELECT 'day-' || i FROM generate_series(1, 300) i");
    sql("UPDATE orders SET v = v || '-changed' WHERE id % 7 = 0");
    sql("INSERT INTO keep VALUES (1)");
    archive_now(&pg);
    let fingerprint = |table: &str| {
        sql(&format!(
            "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v || ':' || at, ',' ORDER BY id)) FROM {table}"
        ))
    };
    let before = fingerprint("orders");
    let t = sql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')");
    let at = format!("{}:00", t.trim());
    std::thread::sleep(Duration::from_millis(50));
    // 14:32: the wrong rows deleted; other tables go on changing.
    sql("DELETE FROM orders WHERE id > 10");
    sql("INSERT INTO keep VALUES (2)");
    archive_now(&pg);

    let r = ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--target-time",
            &at,
            "--table",
            "orders",
            "--rename-table",
            "orders_at",
            "--to",
            &pg.url("postgres"),
        ]),
        "table as of a time",
    );
    assert_eq!(fingerprint("orders_at"), before, "{}", r.stderr);
    assert!(before.starts_with("800 "), "{before}");
    let indexes = sql("SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'orders_at'");
    assert!(
        indexes.contains("(v)") && indexes.contains("UNIQUE"),
        "{indexes}"
    );
    let check = sql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders_at'::regclass AND contype = 'c'");
    assert_eq!(check.trim(), "1");
    // The live table and the others are untouched.
    assert!(fingerprint("orders").starts_with("10 "));
    assert_eq!(
        sql("SELECT string_agg(k::text, ',' ORDER BY k) FROM keep").trim(),
        "1,2"
    );
    let dir = r
        .stderr
        .split_whitespace()
        .find(|w| w.contains("dbvault-recover-"))
        .unwrap_or_else(|| panic!("no throwaway directory named: {}", r.stderr))
        .to_string();
    nothing_left(&dir);

    // A time past the archive's end is refused, and nothing is restored.
    let r = dbv(&[
        "restore",
        "latest",
        "--name",
        "pg",
        "--target-time",
        "2099-01-01T00:00:00Z",
        "--table",
        "orders",
        "--rename-table",
        "orders_future",
        "--to",
        &pg.url("postgres"),
    ]);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    let exists = sql("SELECT count(*) FROM pg_class WHERE relname = 'orders_future'");
    assert_eq!(exists.trim(), "0", "{}", r.stderr);
    eprintln!("future: {}", r.stderr);
}

#[test]
fn a_configured_physical_source_is_backed_up_watched_and_alarms_when_archiving_stalls() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let settings = format!("archive_mode = on\n{}\n", archive.archive_command("pgconf"));
    let pg = PgCluster::with_tcp(Some((&settings, "local replication all trust")));
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t (id int)");
    let cfg = archive.dir.join("dbvault.toml");
    let metrics = archive.dir.join("dbvault.prom");
    std::fs::write(
        &cfg,
        format!(
            "[repository.local]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[metrics]\ntextfile = \"{}\"\n\n\
             [[source]]\nname = \"pgconf\"\npostgres = \"{}\"\nphysical = true\nwal_wait = \"20s\"\nretention = {{ keep_last = 1 }}\n",
            archive.repo,
            archive.dir.join("pw").display(),
            metrics.display(),
            pg.url("postgres")
        ),
    )
    .expect("config");
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&archive.dir)
        .status();
    let with_cfg = |args: &[&str]| {
        let mut all = vec!["--config", cfg.to_str().expect("path")];
        all.extend_from_slice(args);
        dbv(&all)
    };
    let gauge = |name: &str| {
        let text = std::fs::read_to_string(&metrics).expect("metrics");
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{source=\"pgconf\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };

    // run takes the base backup; status shows the archive.
    let r = ok(with_cfg(&["run"]), "run");
    assert!(r.text().contains("WAL: newest segment"), "{}", r.text());
    let s = ok(with_cfg(&["--json", "status"]), "status").json();
    let wal = &s["sources"][0]["wal"];
    assert!(wal["newest_segment"].as_str().is_some(), "{s}");
    assert!(wal["age_seconds"].as_i64().is_some_and(|a| a >= 0), "{s}");
    assert!(wal["stalled"].is_null(), "{s}");
    assert_eq!(s["sources"][0]["snapshots"], 1, "{s}");
    assert_eq!(gauge("dbvault_wal_archiving_ok"), 1.0);
    assert!(gauge("dbvault_wal_last_archived_timestamp_seconds") > 1.7e9);

    // Pushes start failing: status exits 1 naming it, and so does run, with the metric.
    sql("ALTER SYSTEM SET archive_command = '/bin/false'");
    sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    sql("INSERT INTO t SELECT generate_series(1, 1000)");
    sql("SELECT pg_switch_wal()");
    let t0 = Instant::now();
    while sql("SELECT failed_count FROM pg_stat_archiver").trim() == "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no failed push:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = with_cfg(&["status"]);
    assert_eq!(r.code, Some(1), "{}", r.text());
    assert!(
        r.text().contains("STALLED: archiving is failing"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("stopped archiving WAL"), "{}", r.text());
    let r = with_cfg(&["run"]);
    assert_eq!(r.code, Some(1), "{}", r.text());
    assert!(r.text().contains("WAL archiving stalled"), "{}", r.text());
    assert_eq!(gauge("dbvault_wal_archiving_ok"), 0.0);
    assert!(gauge("dbvault_wal_push_failures") >= 1.0);

    // Fixed: the waiting segments are pushed and status is clean again.
    sql("ALTER SYSTEM RESET archive_command");
    sql("SELECT pg_reload_conf()");
    archive_now(&pg);
    let r = ok(with_cfg(&["status"]), "status after the fix");
    assert!(!r.text().contains("STALLED"), "{}", r.text());

    // The next run's base backup replaces the first (keep_last = 1), and the WAL only the
    // first needed goes with it.
    let before = segment_records(&archive);
    ok(with_cfg(&["run"]), "second run");
    let after = segment_records(&archive);
    let s = ok(with_cfg(&["--json", "status"]), "status").json();
    assert_eq!(s["sources"][0]["snapshots"], 1, "{s}");
    assert!(
        !after.contains(&before[0]) && after.len() < before.len(),
        "the first base backup's WAL was kept: {before:?} -> {after:?}"
    );
    ok(dbv(&["check"]), "check after retention");
}
