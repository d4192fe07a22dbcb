//! SIGKILL at random moments during backups: earlier snapshots survive, the next backup works.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use dbvault_tests::{dump_like, random_bytes, Repo};

#[test]
fn killed_backups_lose_nothing() {
    let repo = Repo::new();
    let base = dump_like(8 << 20, 21);
    repo.backup(&base, &["--name", "base"]);
    // DBVAULT_CRASH_SEED=N re-runs a schedule that failed (the seed is printed first).
    let seed = match std::env::var("DBVAULT_CRASH_SEED") {
        Ok(s) => s.parse().expect("DBVAULT_CRASH_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("time")
            .as_nanos() as u64,
    };
    eprintln!("kill schedule seed: {seed} (re-run with DBVAULT_CRASH_SEED={seed})");
    let delays = random_bytes(64, seed);
    let mut big = dump_like(40 << 20, 22);
    big.extend_from_slice(&random_bytes(40 << 20, 23));
    for round in 0..6 {
        // 0..0.5 s: mostly mid-backup. The first round's data is all new (later rounds
        // dedup against what earlier ones stored), so a short delay there always lands
        // mid-backup.
        let delay = if round == 0 {
            Duration::from_millis(150)
        } else {
            Duration::from_millis(u64::from(delays[round]) * 2)
        };
        let mut child = repo
            .cmd(&["backup", "-", "--name", "victim"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = big.clone();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let _ = feeder.join();
        // Every earlier snapshot still restores exactly.
        let out = repo
            .run(&["restore", "latest", "--name", "base", "--to", "-"], None)
            .ok();
        assert!(
            out.stdout == base,
            "round {round} (delay {delay:?}): base snapshot damaged"
        );
        let list = repo.run(&["snapshots", "--json"], None).ok().json();
        for s in list.as_array().expect("array") {
            let id = s["id"].as_str().expect("id");
            let r = repo.restore(id).ok();
            assert_eq!(r.stdout.len() as u64, s["bytes_in"].as_u64().expect("n"));
        }
    }
    // At least one round was killed before it could record its snapshot.
    let victims = repo
        .run(&["snapshots", "--name", "victim", "--json"], None)
        .ok()
        .json();
    assert!(
        victims.as_array().expect("array").len() < 6,
        "no backup was interrupted"
    );
    // The next backup succeeds and restores.
    let b = repo.backup(&big, &["--name", "after"]);
    assert!(b["snapshot_id"].is_string());
    let out = repo
        .run(&["restore", "latest", "--name", "after", "--to", "-"], None)
        .ok();
    assert!(out.stdout == big);
    // `latest` alone, among three sources, asks which.
    let r = repo.restore("latest");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("--name"), "{}", r.stderr);
}
