//! Point-in-time recovery chained the way a DBA chains it, where a quiet mistake used to
//! lose data while every command exited 0:
//! - the store goes away mid-recovery: the server stops instead of promoting early, and
//!   carries on to the last archived row once the store is back;
//! - a restored copy started with only its port changed archives nothing into
//!   production's archive; with `--archive-mode preserve` its branch is named by `check`,
//!   `latest` is refused until a timeline is chosen, and `wal-remove-timeline` clears it;
//! - `copy` of a physical source to a new repository, then `check` and a recovery there;
//! - `run` as root, then `wal-push` as `postgres`, on one repository;
//! - `--target-time` with the text `SELECT now()` prints;
//! - the throwaway server of a restore-test never sees dbvault's secrets;
//! - a base backup named differently from its WAL fails within seconds, naming the fix.

use std::path::Path;
use std::time::{Duration, Instant};

use dbvault_tests::garage::Garage;
use dbvault_tests::physical::{archive_now, Archive, Restored};
use dbvault_tests::proxy::{FaultProxy, Faults};
use dbvault_tests::{bin, run_cmd, PgCluster, Run, PASSWORD};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
}

/// A cluster archiving into `archive` as source `name`.
fn production(archive: &Archive, name: &str) -> PgCluster {
    let settings = format!(
        "archive_mode = on\n{}\nwal_level = replica\n",
        archive.archive_command(name)
    );
    PgCluster::with_tcp(Some((&settings, "local replication all trust")))
}

fn pgdata(dir: &Path) -> String {
    format!("pgdata:{}", dir.display())
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

#[test]
fn copy_of_a_physical_source_takes_its_wal_and_recovers_from_the_copy() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let offsite = archive.dir.join("offsite").display().to_string();
    let pw = archive.dir.join("pw").display().to_string();
    ok(dbv(&["--repo", &offsite, "init"]), "init offsite");
    let pg = production(&archive, "main");
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 300)");
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
    for k in 0..3 {
        sql(&format!(
            "INSERT INTO t SELECT generate_series({}, {})",
            301 + k * 100,
            400 + k * 100
        ));
        archive_now(&sql, &|| pg.log());
    }
    let copy = |what: &str| {
        ok(
            dbv(&[
                "copy",
                "--to-repo",
                &offsite,
                "--to-password-file",
                &pw,
                "--name",
                "main",
            ]),
            what,
        )
    };
    let r = copy("copy");
    assert!(r.text().contains("WAL of main"), "{}", r.text());
    // More WAL, then the nightly copy again: it carries the archive forward.
    sql("INSERT INTO t SELECT generate_series(601, 650)");
    archive_now(&sql, &|| pg.log());
    copy("copy again");
    drop(pg);
    let c = ok(
        dbv(&["--repo", &offsite, "--json", "check"]),
        "check offsite",
    )
    .json();
    assert_eq!(c["ok"], true, "{c}");
    let r = archive.dir.join("r");
    ok(
        dbv(&[
            "--repo",
            &offsite,
            "restore",
            "latest",
            "--name",
            "main",
            "--to",
            &pgdata(&r),
        ]),
        "restore from the offsite copy",
    );
    let conf = std::fs::read_to_string(r.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(conf.contains(&offsite), "{conf}");
    let s = Restored::start(&r, "", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), max(id) FROM t"),
        Ok("650|650".to_string()),
        "{}",
        s.log()
    );
}

#[test]
fn run_as_root_and_wal_push_as_postgres_share_one_repository() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init as postgres");
    let pg = production(&archive, "main");
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t AS SELECT generate_series(1, 100) AS i");
    // The nightly job as root, from a configuration file.
    let cfg = archive.dir.join("dbvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[check]\n\n[[source]]\nname = \"main\"\npostgres = \"{}\"\nphysical = true\n",
            archive.repo,
            archive.dir.join("pw").display(),
            pg.url("postgres")
        ),
    )
    .expect("config");
    let mut c = std::process::Command::new(bin());
    c.arg("--config").arg(&cfg).arg("run");
    c.env("DBVAULT_CACHE_DIR", archive.dir.join("root-cache"));
    c.env_remove("DBVAULT_PASSWORD").env_remove("DBVAULT_REPO");
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(0), "run as root: {}{}", r.text(), r.stderr);
    // Every file root wrote belongs to the repository's owner.
    let mut foreign = Vec::new();
    for (p, _) in dbvault_tests::tree(Path::new(&archive.repo)) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&p).map(|m| m.uid()).unwrap_or(0) == 0 {
            foreign.push(p);
        }
    }
    assert!(
        foreign.is_empty(),
        "root left files postgres does not own: {foreign:?}"
    );
    // WAL archiving as postgres goes on, and so does everything else as postgres.
    sql("INSERT INTO t SELECT generate_series(101, 200)");
    archive_now(&sql, &|| pg.log());
    ok(dbv(&["check"]), "check as postgres");
    let list = ok(dbv(&["snapshots"]), "snapshots as postgres").text();
    assert!(list.contains("main"), "{list}");

    // A repository only root may write: postgres is told whose it is.
    let rooted = archive.dir.join("rooted");
    let mut c = std::process::Command::new(bin());
    c.arg("--repo")
        .arg(&rooted)
        .arg("init")
        .env("DBVAULT_PASSWORD", PASSWORD);
    ok(run_cmd(c, None), "init as root");
    let _ = std::process::Command::new("chown")
        .args(["root:root"])
        .arg(&rooted)
        .status();
    let seg = pg.sql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
    let wal = pg.dir.join("data/pg_wal").join(seg.trim());
    let r = dbv(&[
        "--repo",
        &rooted.display().to_string(),
        "wal-push",
        "--name",
        "x",
        &wal.display().to_string(),
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("belongs to root"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
}

#[test]
fn the_throwaway_server_never_sees_secrets_and_a_misnamed_base_backup_fails_fast() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let pg = production(&archive, "main");
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t AS SELECT generate_series(1, 100) AS i");
    // Named otherwise than its WAL: fails within seconds, naming the archive_command.
    let t0 = Instant::now();
    let r = dbv(&[
        "backup",
        &pg.url("postgres"),
        "--physical",
        "--name",
        "cluster",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("archived under source name \"main\"")
            && r.stderr.contains("wal-push --name cluster"),
        "{}",
        r.stderr
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
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
    archive_now(&sql, &|| pg.log());

    // A restore-test as root with the passphrase and store credentials in its environment:
    // the throwaway server (and every other child) gets neither.
    let secret_pw = PASSWORD;
    let secret_key = "sk-test-9c1e7f0d2b";
    let mut c = std::process::Command::new(bin());
    c.args([
        "--repo",
        &archive.repo,
        "restore-test",
        "latest",
        "--name",
        "main",
    ]);
    c.env("DBVAULT_PASSWORD", secret_pw)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .env("DBVAULT_CACHE_DIR", archive.dir.join("root-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("restore-test");
    let me = child.id().to_string();
    let mut seen = 0;
    let mut holders_seen = 0;
    let mut children: std::collections::BTreeSet<String> = Default::default();
    let t0 = Instant::now();
    let mut child = child;
    while child.try_wait().expect("wait").is_none() && t0.elapsed() < Duration::from_secs(300) {
        for e in std::fs::read_dir("/proc").expect("proc").flatten() {
            // Every process: only dbvault itself may hold this test's store secret (what a
            // process was started with), whatever it is: runuser, pg_ctl, tar, psql, …
            let pid = e.file_name().to_string_lossy().into_owned();
            if let Ok(env) = std::fs::read(e.path().join("environ")) {
                if env
                    .windows(secret_key.len())
                    .any(|w| w == secret_key.as_bytes())
                {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    assert_eq!(
                        pid,
                        me,
                        "{} (pid {pid}) was started with the store secret",
                        comm.trim()
                    );
                    holders_seen += 1;
                }
            }
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1));
                if ppid == Some(me.as_str()) {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    children.insert(comm.trim().to_string());
                }
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains("dbvault-throwaway") {
                continue;
            }
            let Ok(environ) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            let environ = String::from_utf8_lossy(&environ).into_owned();
            seen += 1;
            assert!(
                !environ.contains(secret_pw) && !environ.contains(secret_key),
                "the throwaway server's environment holds a secret"
            );
            assert!(!environ.contains("DBVAULT_PASSWORD") && !environ.contains("AWS_SECRET"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("restore-test");
    assert!(
        out.status.success(),
        "restore-test: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen > 0, "no throwaway server process was seen");
    // The scan sees environments: dbvault's own holds the secret.
    assert!(
        holders_seen > 0,
        "the scan never saw dbvault's own environment"
    );
    eprintln!("children of restore-test seen: {children:?}");
    assert!(!children.is_empty(), "no child of restore-test was seen");
}
