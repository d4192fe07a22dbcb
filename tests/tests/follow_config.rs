//! `dbvault follow` from a configuration file, on an S3 repository (Garage), with the
//! application in rollback-journal mode: snapshots follow the writer, the follower compacts
//! them by the source's retention (an hour of every snapshot is the default; here a few
//! seconds), each snapshot costs a handful of requests, every kept snapshot is a consistent
//! prefix of the commits (through a VACUUM half-way), and the writer waits for the copy
//! at most what the README says.

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbvault_tests::garage::Garage;
use dbvault_tests::{run_cmd, Run, PASSWORD};

const BASELINE: Duration = Duration::from_secs(3);

fn prefix(path: &std::path::Path) -> (i64, bool, String) {
    dbvault_tests::sqlite_prefix(path, "w")
}

#[test]
fn follow_from_the_configuration_compacts_and_costs_few_requests_on_s3() {
    let g = Garage::start();
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.db");
    {
        // 24 MB of existing rows, so the copy takes measurable time.
        let c = rusqlite::Connection::open(&db).expect("create");
        c.execute_batch(
            "PRAGMA journal_mode = DELETE;
             CREATE TABLE old (id INTEGER PRIMARY KEY, pad TEXT);
             CREATE TABLE w (id INTEGER PRIMARY KEY, at REAL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO old SELECT i, printf('%0200d', i) FROM n;",
        )
        .expect("fill");
    }
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw");
    let cfg = dir.path().join("dbvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.s3]\nurl = \"{}\"\npassword_file = \"{}\"\ns3_endpoint = \"{}\"\n\
             s3_region = \"garage\"\ns3_path_style = true\n\n\
             [[source]]\nname = \"app\"\nsqlite = \"{}\"\nfollow = \"1s\"\ncompact_every = \"3s\"\n\
             retention = {{ keep_within = \"5s\", keep_daily = 7 }}\n",
            g.url("f"),
            pw.display(),
            g.endpoint,
            db.display()
        ),
    )
    .expect("config");
    let dbvault = |args: &[&str]| {
        let mut c = g.dbvault(&g.endpoint, "f", &[]);
        c.arg("--config").arg(&cfg).args(args);
        c.env_remove("DBVAULT_REPO").env_remove("DBVAULT_PASSWORD");
        c
    };
    let plain = |args: &[&str]| run_cmd(g.dbvault(&g.endpoint, "f", args), None);
    plain(&["init"]).ok();

    // What cannot be followed is refused, naming it.
    let r: Run = run_cmd(dbvault(&["follow", "nosuch"]), None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no source named \"nosuch\""),
        "{}",
        r.stderr
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace("sqlite = ", "postgres = \"postgresql:///x\"\n#"),
    )
    .expect("bad");
    let mut c = dbvault(&["run"]);
    c.arg("--config").arg(&bad);
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("follow backs up an SQLite database"),
        "{}",
        r.stderr
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).expect("writer");
            c.busy_timeout(Duration::from_secs(10)).expect("busy");
            let t0 = Instant::now();
            let mut lat: Vec<(bool, Duration)> = Vec::new();
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                n += 1;
                c.execute(
                    "INSERT INTO w (id, at) VALUES (?1, ?2)",
                    rusqlite::params![n, t0.elapsed().as_secs_f64()],
                )
                .expect("commit");
                lat.push((t0.elapsed() > BASELINE, started.elapsed()));
                if n == 1500 {
                    // The application vacuums while it is followed: every page moves.
                    c.execute_batch("DELETE FROM old WHERE id % 2 = 0; VACUUM;")
                        .expect("vacuum");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (n, lat)
        })
    };
    std::thread::sleep(BASELINE);
    let mut f = dbvault(&["--json", "follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn follow");
    std::thread::sleep(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let (commits, lat) = writer.join().expect("writer");
    // Caught up: the newest snapshot holds every commit.
    let out = dir.path().join("newest.db");
    let stopped = Instant::now();
    let mut caught_up = false;
    while !caught_up && stopped.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_file(&out);
        let to = format!("sqlite:{}", out.display());
        let r = plain(&["restore", "latest", "--name", "app", "--to", &to]);
        caught_up = r.code == Some(0) && prefix(&out).0 == commits;
    }
    f.kill().expect("kill");
    f.wait().expect("wait");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    f.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    f.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(
        caught_up,
        "no snapshot holds all {commits} commits:\n{stderr}"
    );
    assert!(stderr.contains("compacted app:"), "{stderr}");

    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(|v| v.expect("json"))
        .collect();
    assert!(
        reports.len() >= 12,
        "{} snapshots in 20 s:\n{stderr}",
        reports.len()
    );
    let mut reqs: Vec<u64> = reports[1..]
        .iter()
        .map(|r| r["requests"].as_u64().expect("requests"))
        .collect();
    reqs.sort_unstable();
    let added: Vec<u64> = reports[1..]
        .iter()
        .map(|r| r["bytes_added"].as_u64().expect("added"))
        .collect();
    let mean_added = added.iter().sum::<u64>() / added.len() as u64;
    let mut v: Vec<Duration> = lat.iter().filter(|l| l.0).map(|l| l.1).collect();
    v.sort();
    let mut base: Vec<Duration> = lat.iter().filter(|l| !l.0).map(|l| l.1).collect();
    base.sort();
    let at = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    eprintln!(
        "follow on S3, rollback journal, 24 MB database: {} snapshots; requests per snapshot median {} max {}; \
         {mean_added} bytes added per snapshot on average; {commits} commits; \
         commit ms p50/p99/max without dbvault {:.2}/{:.2}/{:.1}, with follow {:.2}/{:.2}/{:.1}",
        reports.len(),
        reqs[reqs.len() / 2],
        reqs[reqs.len() - 1],
        at(&base, 0.5),
        at(&base, 0.99),
        at(&base, 1.0),
        at(&v, 0.5),
        at(&v, 0.99),
        at(&v, 1.0),
    );
    // README: a handful of requests per snapshot, and writers wait at most for the copy.
    assert!(
        reqs[reqs.len() / 2] <= 12,
        "requests per snapshot: {reqs:?}"
    );
    assert!(
        at(&v, 1.0) < 1000.0,
        "a commit waited {:.0} ms",
        at(&v, 1.0)
    );
    assert!(mean_added < 200_000, "{added:?}");

    // Compacted: within 5 s of the newest, plus the newest of its hour and day.
    let ids: Vec<String> = plain(&["snapshots", "--json", "--name", "app"])
        .ok()
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        ids.len() <= 9 && ids.len() < reports.len(),
        "{} kept of {}",
        ids.len(),
        reports.len()
    );
    let mut last_rows = 0;
    for id in &ids {
        let out = dir.path().join(format!("s-{id}.db"));
        let to = format!("sqlite:{}", out.display());
        plain(&["restore", id, "--to", &to]).ok();
        let (n, is_prefix, check) = prefix(&out);
        assert_eq!(check, "ok", "snapshot {id}");
        assert!(is_prefix, "snapshot {id} is not a prefix of the commits");
        assert!(n >= last_rows, "snapshot {id} went back in time");
        last_rows = n;
    }

    // The nightly run backs the followed source up too, and compacts it the same way.
    let r = run_cmd(dbvault(&["run"]), None).ok();
    assert!(
        r.text().contains("1 of 1 sources backed up"),
        "{}",
        r.text()
    );
    let after = plain(&["snapshots", "--json", "--name", "app"]).ok().json();
    assert!(after.as_array().expect("list").len() <= ids.len() + 1);
    plain(&["check", "--read-data"]).ok();
}
