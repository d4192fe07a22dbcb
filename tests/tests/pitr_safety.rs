//! Point-in-time recovery chained the way a DBA chains it, where a quiet mistake used to
//! lose data while every command exited 0:
//! - the store goes away mid-recovery: the server stops instead of promoting early, and
//!   carries on to the last archived row once the store is back;
//! - a restored copy started with only its port changed archives nothing into
//!   production's archive; with `--archive-mode preserve` its branch is named by `check`,
//!   `latest` is refused until a timeline is chosen, and `wal-remove-timeline` clears it;
//! - `--target-time` with the text `SELECT now()` prints.
//!
//! (What other commands do with a physical source, `copy`, `run` beside `wal-push`, a
//! restore-test's throwaway server: pitr_handoffs.rs.)

use std::time::{Duration, Instant};

use dbvault_tests::garage::Garage;
use dbvault_tests::physical::{archive_now, pgdata, production, Archive, Restored};
use dbvault_tests::proxy::{FaultProxy, Faults};
use dbvault_tests::{run_cmd, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
}

/// The archive's WAL file names.
fn archived(archive: &Archive) -> Vec<String> {
    archive
        .wal_records()
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn wal_fetch_exits_1_only_for_a_file_the_archive_lacks() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let dest = archive.dir.join("out").display().to_string();
    let r = dbv(&["wal-fetch", "000000010000000000000007", &dest]);
    assert_eq!(r.code, Some(1), "missing: {}", r.stderr);
    assert!(r.stderr.contains("is not in the archive"), "{}", r.stderr);
    // Every other failure: above 125, so PostgreSQL stops recovery instead of ending it.
    let wrong_pw = archive.dir.join("wrong");
    std::fs::write(&wrong_pw, "not the passphrase\n").expect("pw");
    let _ = std::process::Command::new("chown")
        .args(["postgres"])
        .arg(&wrong_pw)
        .status();
    let w = wrong_pw.display().to_string();
    for (what, args) in [
        (
            "wrong passphrase",
            vec![
                "--password-file",
                &w,
                "wal-fetch",
                "000000010000000000000007",
                &dest,
            ],
        ),
        (
            "no repository",
            vec![
                "--repo",
                "/nonexistent/repo",
                "wal-fetch",
                "000000010000000000000007",
                &dest,
            ],
        ),
        (
            "a bad command line",
            vec![
                "wal-fetch",
                "--no-such-option",
                "000000010000000000000007",
                &dest,
            ],
        ),
    ] {
        let r = dbv(&args);
        assert_eq!(r.code, Some(255), "{what}: {}", r.stderr);
        assert!(!r.stderr.trim().is_empty(), "{what}: says nothing");
    }
}

#[test]
fn a_store_outage_during_recovery_stops_the_server_and_it_carries_on_later() {
    let g = Garage::start();
    let proxy = FaultProxy::start(&g.endpoint, Faults::default());
    let mut env: Vec<(String, String)> = g
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL")
        .collect();
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone()));
    env.push(("DBVAULT_S3_PATH_STYLE".into(), "1".into()));
    env.push(("DBVAULT_S3_TIMEOUT".into(), "2".into()));
    let archive = Archive::s3(&g.url("outage"), env.clone());
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let pg = production(&archive, "main");
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(
        dbv(&[
            "backup",
            &pg.url("postgres"),
            "--physical",
            "--name",
            "main",
        ]),
        "base backup",
    );
    // Many segments after the base backup, rows in each.
    for round in 0..10 {
        sql(&format!(
            "INSERT INTO t SELECT i, 'r{round}' FROM generate_series({}, {}) i",
            round * 103 + 1,
            round * 103 + 103
        ));
        archive_now(&sql, &|| pg.log());
    }
    assert_eq!(sql("SELECT count(*) FROM t").trim(), "1030");
    drop(pg);

    let r = archive.dir.join("r");
    ok(
        dbv(&["restore", "latest", "--name", "main", "--to", &pgdata(&r)]),
        "restore",
    );
    let s = Restored::spawn(&r, "", &env);
    // The store goes away as soon as recovery has fetched its first archived file.
    let t0 = Instant::now();
    while !s.log().contains("restored log file") {
        assert!(t0.elapsed() < Duration::from_secs(120), "{}", s.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.set(Faults {
        error_every: 1,
        ..Faults::default()
    });
    assert!(
        s.wait_stopped(Duration::from_secs(240)),
        "the server did not stop while the store was down:\n{}",
        s.log()
    );
    let log = s.log();
    assert!(
        !log.contains("archive recovery complete") && !log.contains("selected new timeline"),
        "the server ended recovery while the store was down:\n{log}"
    );
    assert!(
        log.contains("recovery must not end here") && log.contains("FATAL"),
        "{log}"
    );
    let control =
        dbvault_tests::cluster::as_postgres("pg_controldata", &[&r.display().to_string()]);
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    assert!(control.contains("in archive recovery"), "{control}");
    drop(s);

    // The store is back: started again, recovery goes on to every archived row.
    proxy.set(Faults::default());
    let s = Restored::start(&r, "", &env);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), max(id) FROM t"),
        Ok("1030|1030".to_string()),
        "{}",
        s.log()
    );
}

#[test]
fn a_restored_copy_never_archives_into_production_unless_asked_and_a_branch_is_named() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let pg = production(&archive, "main");
    let sql = |q: &str| pg.sql("postgres", q);
    let log = || pg.log();
    sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'a' FROM generate_series(1, 500) i");
    ok(
        dbv(&[
            "backup",
            &pg.url("postgres"),
            "--physical",
            "--name",
            "main",
        ]),
        "base backup",
    );
    sql("INSERT INTO t SELECT i, 'b' FROM generate_series(501, 700) i");
    // The time as the DBA has it: the text of SELECT now().
    let now = sql("SELECT now()").trim().to_string();
    assert!(now.contains('.') && now.contains(' '), "{now}");
    std::thread::sleep(Duration::from_millis(1100));
    sql("INSERT INTO t SELECT i, 'c' FROM generate_series(701, 900) i");
    archive_now(&sql, &log);

    // --target-time with SELECT now()'s text restores to that instant.
    let at = archive.dir.join("at");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "main",
            "--target-time",
            &now,
            "--target-action",
            "promote",
            "--to",
            &pgdata(&at),
        ]),
        "restore to now()",
    );
    let s = Restored::start(&at, "", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), max(id) FROM t"),
        Ok("700|700".to_string()),
        "{}",
        s.log()
    );
    drop(s);

    // A copy started with only its port changed: it promotes, writes, switches WAL, and
    // production's archive receives nothing from it.
    let copy = archive.dir.join("copy");
    let r = ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "main",
            "--to",
            &pgdata(&copy),
        ]),
        "restore a copy",
    );
    assert!(
        r.stderr.contains("archiving is off in this copy"),
        "{}",
        r.stderr
    );
    let before = archived(&archive);
    let c = Restored::start(&copy, "", &[]);
    c.wait_promoted();
    let q = |x: &str| {
        c.try_sql("postgres", x)
            .unwrap_or_else(|e| panic!("{x}: {e}\n{}", c.log()))
    };
    q("CREATE TABLE copy_only AS SELECT 1 AS x");
    q("SELECT pg_switch_wal()");
    q("CHECKPOINT");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        q("SELECT archived_count + failed_count FROM pg_stat_archiver"),
        "0"
    );
    drop(c);
    assert_eq!(
        archived(&archive),
        before,
        "the copy archived into production's archive"
    );
    sql("CREATE TABLE prod_later AS SELECT 42 AS answer");
    archive_now(&sql, &log);
    ok(dbv(&["check"]), "check after the copy");
    let end = archive.dir.join("end");
    ok(
        dbv(&["restore", "latest", "--name", "main", "--to", &pgdata(&end)]),
        "restore production to the end",
    );
    let s = Restored::start(&end, "", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT answer FROM prod_later"),
        Ok("42".into())
    );
    assert!(s.try_sql("postgres", "SELECT * FROM copy_only").is_err());
    drop(s);

    // With --archive-mode preserve the copy archives: its timeline forks production's,
    // which goes on archiving. check names the branch, `latest` is refused, a timeline can
    // be chosen, and wal-remove-timeline removes the branch.
    let kept = archive.dir.join("kept");
    let r = ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "main",
            "--archive-mode",
            "preserve",
            "--to",
            &pgdata(&kept),
        ]),
        "restore a copy that archives",
    );
    assert!(!r.stderr.contains("archiving is off"), "{}", r.stderr);
    let c = Restored::start(&kept, "", &[]);
    c.wait_promoted();
    let q = |x: &str| {
        c.try_sql("postgres", x)
            .unwrap_or_else(|e| panic!("{x}: {e}\n{}", c.log()))
    };
    q("CREATE TABLE branch_only AS SELECT 1 AS x");
    archive_now(&|x| q(x), &|| c.log());
    let tli = q("SELECT timeline_id FROM pg_control_checkpoint()");
    drop(c);
    // Production goes on past the fork point (two segments, each with writes).
    sql("INSERT INTO t SELECT i, 'd' FROM generate_series(901, 950) i");
    archive_now(&sql, &log);
    sql("INSERT INTO t SELECT i, 'e' FROM generate_series(951, 1000) i");
    archive_now(&sql, &log);
    let r = dbv(&["check"]);
    assert_eq!(r.code, Some(3), "{}", r.text());
    let text = format!("{}{}", r.text(), r.stderr);
    assert!(
        text.contains(&format!("timeline {tli} forked from timeline 1"))
            && text.contains(&format!("wal-remove-timeline {tli}")),
        "{text}"
    );
    let list = ok(dbv(&["snapshots"]), "snapshots").text();
    assert!(list.contains("two servers archive"), "{list}");
    let amb = archive.dir.join("amb");
    let r = dbv(&["restore", "latest", "--name", "main", "--to", &pgdata(&amb)]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("two branches") && r.stderr.contains("--target-timeline"),
        "{}",
        r.stderr
    );
    assert!(!amb.join("recovery.signal").exists());
    let one = archive.dir.join("one");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "main",
            "--target-timeline",
            "current",
            "--to",
            &pgdata(&one),
        ]),
        "restore production's timeline",
    );
    let s = Restored::start(&one, "", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), max(id) FROM t"),
        Ok("1000|1000".to_string()),
        "{}",
        s.log()
    );
    assert!(s.try_sql("postgres", "SELECT * FROM branch_only").is_err());
    drop(s);
    let r = ok(
        dbv(&["wal-remove-timeline", &tli, "--name", "main"]),
        "remove the branch",
    );
    assert!(
        r.text().contains(&format!("0000000{tli}.history")),
        "{}",
        r.text()
    );
    assert!(!archived(&archive)
        .iter()
        .any(|n| n.starts_with(&format!("0000000{tli}"))));
    ok(dbv(&["check"]), "check after removing the branch");
}
