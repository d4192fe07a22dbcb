//! What other commands do with a physical source, chained as a DBA chains them:
//! - `copy` of a physical source to a new repository, then `check` and a recovery there;
//! - `run` as root, then `wal-push` as `postgres`, on one repository;
//! - the throwaway server of a restore-test never sees dbvault's secrets;
//! - a base backup named differently from its WAL fails within seconds, naming the fix.

use std::path::Path;
use std::time::{Duration, Instant};

use dbvault_tests::physical::{archive_now, pgdata, production, Archive, Restored};
use dbvault_tests::{bin, run_cmd, Run, PASSWORD};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
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
