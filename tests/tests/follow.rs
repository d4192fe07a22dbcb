//! Continuous SQLite backup (`backup sqlite:PATH --follow`): a writer commits hundreds of
//! transactions a second for a minute while dbvault follows the database; dbvault is
//! killed with SIGKILL half-way and started again. Every snapshot restores to a database
//! that passes integrity_check and holds a prefix of the writer's commits, the newest lags
//! the writer by at most the interval and a few seconds, nothing is damaged, and the
//! writer's commit latency stays low. `restore --target-time` picks the state at a time.

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbvault_tests::Repo;

const BASELINE: Duration = Duration::from_secs(5);

fn follow(repo: &Repo, db: &std::path::Path) -> Child {
    let src = format!("sqlite:{}", db.display());
    repo.cmd(&[
        "backup",
        &src,
        "--name",
        "app",
        "--follow",
        "--interval",
        "2s",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn --follow")
}

fn prefix(path: &std::path::Path) -> (i64, bool, String) {
    dbvault_tests::sqlite_prefix(path, "t")
}

#[test]
fn follow_keeps_consistent_snapshots_through_a_kill_while_a_writer_commits() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&db).expect("create");
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL, pad TEXT);",
        )
        .expect("schema");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).expect("writer");
            c.busy_timeout(Duration::from_secs(10)).expect("busy");
            // As WAL applications usually run: no fsync per commit.
            c.execute_batch("PRAGMA synchronous = NORMAL")
                .expect("synchronous");
            let t0 = Instant::now();
            let mut lat: Vec<(bool, Duration)> = Vec::new();
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                n += 1;
                c.execute(
                    "INSERT INTO t (id, at, pad) VALUES (?1, ?2, ?3)",
                    rusqlite::params![n, t0.elapsed().as_secs_f64(), "x".repeat(200)],
                )
                .expect("commit");
                // The first five seconds run without dbvault: the baseline.
                lat.push((t0.elapsed() > BASELINE, started.elapsed()));
                std::thread::sleep(Duration::from_millis(1));
            }
            (n, lat, t0.elapsed())
        })
    };
    std::thread::sleep(BASELINE);
    let mut f = follow(&repo, &db);
    std::thread::sleep(Duration::from_secs(30));
    f.kill().expect("SIGKILL");
    f.wait().expect("wait");
    let mut f = follow(&repo, &db);
    std::thread::sleep(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let (commits, lat, ran) = writer.join().expect("writer");
    let pct = |following: bool| {
        let mut v: Vec<Duration> = lat
            .iter()
            .filter(|l| l.0 == following)
            .map(|l| l.1)
            .collect();
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        (at(0.5), at(0.99), at(1.0))
    };
    let (without, with) = (pct(false), pct(true));
    let worst = Duration::from_secs_f64(with.2 / 1000.0);
    let stopped = Instant::now();
    // The last commits reach a snapshot within the interval and a few seconds.
    let mut caught_up = None;
    while stopped.elapsed() < Duration::from_secs(8) && caught_up.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        let out = repo.dir.path().join("newest.db");
        let _ = std::fs::remove_file(&out);
        let to = format!("sqlite:{}", out.display());
        let r = repo.run(&["restore", "latest", "--name", "app", "--to", &to], None);
        if r.code == Some(0) && prefix(&out).0 == commits {
            caught_up = Some(stopped.elapsed());
        }
    }
    f.kill().expect("kill");
    f.wait().expect("wait");
    let lag = caught_up
        .unwrap_or_else(|| panic!("no snapshot holds all {commits} commits 8 s after the last"));
    let rate = commits as f64 / ran.as_secs_f64();
    assert!(rate > 200.0, "the writer managed only {rate:.0} commits/s");
    eprintln!(
        "follow: {commits} commits at {rate:.0}/s; commit ms p50/p99/max without dbvault {:.2}/{:.2}/{:.1}, with --follow {:.2}/{:.2}/{:.1}; caught up {:.1} s after the last",
        without.0, without.1, without.2, with.0, with.1, with.2,
        lag.as_secs_f64()
    );
    // The writer was never held up for long (README: what to expect).
    assert!(
        worst < Duration::from_millis(500),
        "a commit waited {worst:?}"
    );

    let ids = repo.snapshot_ids();
    assert!(ids.len() >= 20, "only {} snapshots in a minute", ids.len());
    let mut last_rows = 0;
    for id in &ids {
        let out = repo.dir.path().join(format!("s-{id}.db"));
        let to = format!("sqlite:{}", out.display());
        repo.run(&["restore", id, "--to", &to], None).ok();
        let (n, is_prefix, check) = prefix(&out);
        assert_eq!(check, "ok", "snapshot {id}");
        assert!(is_prefix, "snapshot {id} is not a prefix of the commits");
        assert!(n >= last_rows, "snapshot {id} went back in time");
        last_rows = n;
        let _ = std::fs::remove_file(&out);
    }
    repo.run(&["check", "--read-data"], None).ok();

    // The state at a time: the newest snapshot at or before it.
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let all = list.as_array().expect("list");
    let mid = &all[all.len() / 2];
    let out = repo.dir.path().join("at.db");
    let to = format!("sqlite:{}", out.display());
    // Times are listed to the second: a second after the middle one, before the next.
    let t = chrono::DateTime::parse_from_rfc3339(mid["time"].as_str().expect("time"))
        .expect("rfc3339")
        + chrono::Duration::seconds(1);
    let t = t.to_rfc3339();
    let t = t.as_str();
    let r = repo
        .run(
            &[
                "restore",
                "latest",
                "--name",
                "app",
                "--target-time",
                t,
                "--to",
                &to,
            ],
            None,
        )
        .ok();
    let short = &mid["id"].as_str().expect("id")[..8];
    assert!(r.stderr.contains(short), "{}", r.stderr);
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "app",
            "--target-time",
            "2001-01-01 00:00",
            "--to",
            "-",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("at or before 2001-01-01"), "{}", r.stderr);
}
