//! Point-in-time recovery against a real cluster (`initdb`, pgbench): WAL archived by
//! `archive_command = 'dbvault wal-push %p'`, a base backup with `backup --physical`, then
//! writes, a recorded time T, a `DROP TABLE` and more writes. Restored to T, the server
//! has the table with exactly the rows committed before T; restored to the end, the table
//! is gone and the later writes are there. Locally (the base backup reading the data
//! directory itself) and on S3 (Garage; through the replication protocol). The same segment
//! pushed again with other bytes, and a segment of another cluster, are refused.

use std::time::Duration;

use dbvault_tests::garage::Garage;
use dbvault_tests::physical::{Archive, Restored};
use dbvault_tests::{run_cmd, PgCluster, Run};

/// Hands a file the test made to the `postgres` user, who runs dbvault here.
fn give(p: &std::path::Path) {
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres"])
        .arg(p)
        .status();
}

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
}

fn archive_now(pg: &PgCluster) {
    dbvault_tests::physical::archive_now(&|q| pg.sql("postgres", q), &|| pg.log());
}

/// `pgdata`: the base backup reads the data directory itself (else the replication
/// protocol).
fn round_trip(archive: &Archive, extra_env: &[(String, String)], pgdata: bool) {
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let settings = format!(
        "archive_mode = on\n{}\nwal_level = replica\n",
        archive.archive_command("pg")
    );
    let pg = PgCluster::with_tcp(Some((&settings, "local replication all trust")));
    pg.sql(
        "postgres",
        "CREATE TABLE warm (id int); INSERT INTO warm SELECT generate_series(1, 50000)",
    );
    let pgbench = |args: &[&str]| {
        let out = std::process::Command::new("pgbench")
            .arg("-h")
            .arg(&pg.dir)
            .args(["-p", &pg.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("pgbench (apt-get install postgresql-client)");
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbench(&["-i", "-s", "2", "-q"]);

    let url = pg.url("postgres");
    let data = pg.dir.join("data").display().to_string();
    let mut args = vec!["--json", "backup", &url, "--physical", "--name", "pg"];
    if pgdata {
        args.extend(["--pgdata", &data]);
    }
    let b = ok(dbv(&args), "base backup").json();
    assert!(b["bytes_in"].as_u64().expect("bytes") > 10 << 20, "{b}");

    pgbench(&["-c", "2", "-T", "3"]);
    let accounts = pg.sql("postgres", "SELECT sum(abalance) FROM pgbench_accounts");
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'before ' || i FROM generate_series(1, 1000) i",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.sql(
        "postgres",
        "SELECT to_char(clock_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')",
    );
    let t = format!("{}:00", t.trim());
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'after' FROM generate_series(1001, 1500) i",
    );
    pg.sql(
        "postgres",
        "DROP TABLE t; CREATE TABLE later AS SELECT 42 AS answer",
    );
    archive_now(&pg);

    // To T: the table with exactly the rows committed before T.
    let r1 = archive.dir.join("r1");
    let r = ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--target-time",
            &t,
            "--target-action",
            "promote",
            "--to",
            &format!("pgdata:{}", r1.display()),
        ]),
        "restore to T",
    );
    assert!(r.stderr.contains("restored into"), "{}", r.stderr);
    let s = Restored::start(&r1, "-c archive_mode=off", extra_env);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), min(v), max(id) FROM t"),
        Ok("1000|before 1|1000".to_string()),
        "{}",
        s.log()
    );
    assert!(s.try_sql("postgres", "SELECT * FROM later").is_err());
    // pgbench's writes between the base backup and T are there too.
    assert_eq!(
        s.try_sql("postgres", "SELECT sum(abalance) FROM pgbench_accounts"),
        Ok(accounts.trim().to_string())
    );
    drop(s);

    // To the end: the table is gone, the later writes are there.
    let r2 = archive.dir.join("r2");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--to",
            &format!("pgdata:{}", r2.display()),
        ]),
        "restore to the end",
    );
    let s = Restored::start(&r2, "-c archive_mode=off", extra_env);
    s.wait_promoted();
    assert!(
        s.try_sql("postgres", "SELECT count(*) FROM t").is_err(),
        "{}",
        s.log()
    );
    assert_eq!(
        s.try_sql("postgres", "SELECT answer FROM later"),
        Ok("42".into()),
        "{}",
        s.log()
    );
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*) FROM warm"),
        Ok("50000".into())
    );
    drop(s);

    // A non-empty directory is refused without --force.
    let r = dbv(&[
        "restore",
        "latest",
        "--name",
        "pg",
        "--to",
        &format!("pgdata:{}", r2.display()),
    ]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);

    // The same segment again: fine; with other bytes: refused, the stored one kept.
    let seg = pg.sql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
    let seg = seg.trim();
    let wal = pg.dir.join("data/pg_wal").join(seg);
    if wal.exists() {
        let copy = archive.dir.join(seg);
        std::fs::copy(&wal, &copy).expect("copy");
        give(&copy);
        ok(
            dbv(&["wal-push", "--name", "pg", &copy.display().to_string()]),
            "same again",
        );
        let mut bytes = std::fs::read(&copy).expect("read");
        let n = bytes.len() - 100;
        bytes[n] ^= 0xff;
        std::fs::write(&copy, &bytes).expect("write");
        let r = dbv(&["wal-push", "--name", "pg", &copy.display().to_string()]);
        assert_eq!(r.code, Some(1));
        assert!(r.stderr.contains("nothing was overwritten"), "{}", r.stderr);
        let back = archive.dir.join("back");
        ok(
            dbv(&[
                "wal-fetch",
                "--name",
                "pg",
                seg,
                &back.display().to_string(),
            ]),
            "fetch",
        );
        assert!(std::fs::read(&back).expect("back") == std::fs::read(&wal).expect("wal"));
    }
    let r = dbv(&[
        "wal-fetch",
        "--name",
        "pg",
        "0000000100000000000000FF",
        "/tmp/nowhere",
    ]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not in the archive"), "{}", r.stderr);
    ok(dbv(&["check"]), "check");
}

#[test]
fn point_in_time_recovery_from_a_local_repository() {
    let archive = Archive::local();
    round_trip(&archive, &[], true);
    // Another cluster's WAL under the same name is refused.
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    let other = PgCluster::new();
    other.sql("postgres", "SELECT pg_switch_wal()");
    let wal_dir = other.dir.join("data/pg_wal");
    let seg = std::fs::read_dir(&wal_dir)
        .expect("pg_wal")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.len() == 24))
        .expect("a segment");
    let copy = archive.dir.join("other-seg");
    std::fs::create_dir_all(&copy).expect("dir");
    let copy = copy.join(seg.file_name().expect("name"));
    std::fs::copy(&seg, &copy).expect("copy");
    give(&archive.dir.join("other-seg"));
    let r = dbv(&["wal-push", "--name", "pg", &copy.display().to_string()]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
}

#[test]
fn point_in_time_recovery_from_s3() {
    let g = Garage::start();
    let mut env = g.env();
    env.push(("DBVAULT_S3_PATH_STYLE".into(), "1".into()));
    let archive = Archive::s3(&g.url("pitr"), env.clone());
    round_trip(&archive, &env, false);
}
