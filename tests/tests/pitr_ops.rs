//! The WAL archive in operation, against real clusters: `wal-push` killed with SIGKILL
//! mid-upload (PostgreSQL retries; the archive ends complete; check is clean); a store that
//! fails (non-zero exit, then the push succeeds); a missing segment (check exits 3 naming
//! it, a restore past it is refused); archiving after a promotion and a second PITR on the
//! new timeline; forget + prune keep exactly the WAL the kept base backups need.

use std::path::Path;
use std::time::{Duration, Instant};

use dbvault_tests::garage::Garage;
use dbvault_tests::physical::{archive_now, Archive, Restored};
use dbvault_tests::{bin, run_cmd, PgCluster, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
}

fn give(p: &Path) {
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres"])
        .arg(p)
        .status();
}

fn server_time(sql: &dyn Fn(&str) -> String) -> String {
    let t = sql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')");
    format!("{}:00", t.trim())
}

/// The archive's WAL file names.
fn archived(archive: &Archive) -> Vec<String> {
    archive
        .wal_records()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn the_archive_survives_kills_gaps_promotions_and_retention() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    // The first attempt at each file is killed with SIGKILL mid-push; PostgreSQL retries.
    let flaky = archive.dir.join("flaky-push");
    let cmd = archive.archive_command("pg");
    let inner = cmd
        .trim_start_matches("archive_command = '")
        .trim_end_matches('\'')
        .replace(" %p", " \"$1\"");
    std::fs::write(
        &flaky,
        format!(
            "#!/bin/sh\nmark=\"{}/killed-$(basename \"$1\")\"\nif [ ! -e \"$mark\" ]; then\n  touch \"$mark\"\n  {inner} &\n  pid=$!\n  sleep 0.02\n  kill -9 $pid\n  exit 1\nfi\nexec {inner}\n",
            archive.dir.display()
        ),
    )
    .expect("script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&flaky, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    give(&archive.dir);
    let settings = format!(
        "archive_mode = on\narchive_command = '{} %p'\n",
        flaky.display()
    );
    let pg = PgCluster::with_tcp(Some((&settings, "local replication all trust")));
    let sql = |q: &str| pg.sql("postgres", q);
    let log = || pg.log();
    let url = pg.url("postgres");
    sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(
        dbv(&["backup", &url, "--physical", "--name", "pg"]),
        "base backup 1",
    );
    for round in 0..3 {
        sql(&format!(
            "INSERT INTO t SELECT i, 'r{round}' FROM generate_series({}, {}) i",
            round * 1000 + 1,
            round * 1000 + 1000
        ));
        archive_now(&sql, &log);
    }
    let killed = std::fs::read_dir(&archive.dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("killed-"))
        .count();
    assert!(killed >= 3, "only {killed} pushes were killed");
    let c = ok(dbv(&["--json", "check"]), "check after kills").json();
    assert_eq!(c["ok"], true, "{c}");

    // After a promotion: timeline 2 archived too, and a PITR to a point on it.
    // The second base backup reads the data directory itself.
    let data = pg.dir.join("data").display().to_string();
    let r = ok(
        dbv(&[
            "--json",
            "backup",
            &url,
            "--physical",
            "--name",
            "pg",
            "--pgdata",
            &data,
        ]),
        "base backup 2",
    )
    .json();
    assert!(
        r["bytes_added"].as_u64().expect("added") < r["bytes_in"].as_u64().expect("in") / 4,
        "the second base backup stored too much of what the first had: {r}"
    );
    let r1 = archive.dir.join("r1");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--to",
            &format!("pgdata:{}", r1.display()),
        ]),
        "restore to the end",
    );
    // The original keeps going on timeline 1 no more: it is stopped, as after a failover.
    drop(pg);
    let s = Restored::start(
        &r1,
        &format!(
            "-c archive_mode=on -c \"archive_command={} %p\"",
            flaky.display()
        ),
        &[],
    );
    s.wait_promoted();
    let q = |x: &str| {
        s.try_sql("postgres", x)
            .unwrap_or_else(|e| panic!("{x}: {e}\n{}", s.log()))
    };
    assert_eq!(q("SELECT count(*) FROM t"), "3000");
    assert_eq!(q("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    q("INSERT INTO t SELECT i, 'tl2' FROM generate_series(3001, 3500) i");
    let t2 = server_time(&|x| q(x));
    std::thread::sleep(Duration::from_millis(1100));
    q("INSERT INTO t SELECT i, 'late' FROM generate_series(3501, 4000) i");
    archive_now(&|x| q(x), &|| s.log());
    // A few more segments on timeline 2 (one goes missing below).
    for _ in 0..2 {
        q("UPDATE t SET v = v || '.' WHERE id > 3500");
        archive_now(&|x| q(x), &|| s.log());
    }
    drop(s);
    assert!(archived(&archive).iter().any(|n| n == "00000002.history"));
    let r2 = archive.dir.join("r2");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--target-time",
            &t2,
            "--target-action",
            "promote",
            "--to",
            &format!("pgdata:{}", r2.display()),
        ]),
        "restore to T2 on timeline 2",
    );
    let s = Restored::start(&r2, "-c archive_mode=off", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*), max(id) FROM t"),
        Ok("3500|3500".into()),
        "{}",
        s.log()
    );
    drop(s);

    // Retention: keep the newest base backup only; WAL before it goes, the rest stays.
    let before = archived(&archive);
    let snaps = ok(dbv(&["--json", "snapshots", "--name", "pg"]), "snapshots").json();
    assert_eq!(snaps.as_array().expect("list").len(), 2);
    let newest = snaps[1]["parts"][0]["base_backup"]["start_wal"]
        .as_str()
        .expect("start")
        .to_string();
    let r = ok(dbv(&["forget", "--keep-last", "1", "--prune"]), "forget");
    assert!(r.text().contains("WAL: forgot"), "{}", r.text());
    let after = archived(&archive);
    for n in &before {
        let needed = n.len() < 24 || !n.starts_with("00000001") || n[..24] >= *newest.as_str();
        assert_eq!(
            after.contains(n),
            needed,
            "{n} (newest base backup starts at {newest})"
        );
    }
    let c = ok(
        dbv(&["--json", "check", "--read-data"]),
        "check after prune",
    )
    .json();
    assert_eq!(c["ok"], true, "{c}");
    let r3 = archive.dir.join("r3");
    ok(
        dbv(&[
            "restore",
            "latest",
            "--name",
            "pg",
            "--to",
            &format!("pgdata:{}", r3.display()),
        ]),
        "restore the kept base backup",
    );
    let s = Restored::start(&r3, "-c archive_mode=off", &[]);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*) FROM t"),
        Ok("4000".into())
    );
    drop(s);

    // A segment missing in the middle: check names it (exit 3); a restore past it is refused.
    let segs: Vec<String> = after
        .iter()
        .filter(|n| n.len() == 24 && n.starts_with("00000002"))
        .cloned()
        .collect();
    assert!(segs.len() >= 3, "{segs:?}");
    let victim = &segs[1];
    for ns in std::fs::read_dir(Path::new(&archive.repo).join("files"))
        .expect("files")
        .flatten()
    {
        let p = ns.path().join(victim);
        if p.exists() {
            std::fs::remove_file(&p).expect("rm");
        }
    }
    let r = dbv(&["check"]);
    assert_eq!(r.code, Some(3), "{}", r.text());
    assert!(r.text().contains(victim.as_str()), "{}", r.text());
    let r4 = archive.dir.join("r4");
    let r = dbv(&[
        "restore",
        "latest",
        "--name",
        "pg",
        "--to",
        &format!("pgdata:{}", r4.display()),
    ]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains(victim.as_str()) && r.stderr.contains("missing"),
        "{}",
        r.stderr
    );
    let list = ok(dbv(&["snapshots"]), "snapshots").text();
    assert!(
        list.contains("ends at a gap") && list.contains(victim.as_str()),
        "{list}"
    );
}

#[test]
fn a_push_to_a_failing_store_fails_and_succeeds_once_it_is_back() {
    let mut g = Garage::start();
    let mut env = g.env();
    env.push(("DBVAULT_S3_PATH_STYLE".into(), "1".into()));
    env.push(("DBVAULT_S3_TIMEOUT".into(), "3".into()));
    let archive = Archive::s3(&g.url("failing"), env);
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    // A real segment from a real cluster.
    let pg = PgCluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE x AS SELECT generate_series(1, 10000) AS i",
    );
    let name = pg.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.sql("postgres", "SELECT pg_switch_wal()");
    let seg = archive.dir.join(name.trim());
    std::fs::copy(pg.dir.join("data/pg_wal").join(name.trim()), &seg).expect("copy");
    give(&archive.dir);
    g.stop();
    let t0 = Instant::now();
    let r = dbv(&["wal-push", "--name", "pg", &seg.display().to_string()]);
    // A store that did not answer: worth retrying, 75 (PostgreSQL retries any non-zero).
    assert_eq!(r.code, Some(75), "{}", r.stderr);
    assert!(
        !r.stderr.contains("damaged"),
        "a store that is down is no damage: {}",
        r.stderr
    );
    eprintln!(
        "push to a stopped store failed after {:?}: {}",
        t0.elapsed(),
        r.stderr.trim()
    );
    g.restart();
    ok(
        dbv(&["wal-push", "--name", "pg", &seg.display().to_string()]),
        "push once it is back",
    );
    let back = archive.dir.join("back");
    ok(
        dbv(&[
            "wal-fetch",
            "--name",
            "pg",
            name.trim(),
            &back.display().to_string(),
        ]),
        "fetch",
    );
    assert!(std::fs::read(&back).expect("back") == std::fs::read(&seg).expect("seg"));
    let _ = bin();
}
