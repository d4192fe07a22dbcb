//! S3 repositories when the store misbehaves: answers 500/503, stalls, dies mid-backup,
//! refuses the credentials, lacks the bucket, or cannot be reached. Each time the command
//! retries, then succeeds or fails with one clear line; nothing stored earlier is lost and
//! the next backup works.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_core::backend::Backend;
use dbvault_tests::garage::Garage;
use dbvault_tests::proxy::{FaultProxy, Faults};
use dbvault_tests::{dump_like, run_cmd, Run};

fn restores(g: &Garage, prefix: &str, snapshot: &str, want: &[u8]) {
    let out = run_cmd(
        g.dbvault(&g.endpoint, prefix, &["restore", snapshot, "--to", "-"]),
        None,
    )
    .ok();
    assert!(out.stdout == want, "snapshot {snapshot} does not restore");
}

/// The one line a failed command printed; its exit status must be `code` (1 a failure,
/// 75 a store that did not answer: worth retrying later).
fn one_line(r: &Run, code: i32) -> String {
    // The note naming the snapshot `latest` resolved to is not part of the error.
    let err = r
        .stderr
        .lines()
        .filter(|l| !l.starts_with("dbvault: latest is snapshot"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    assert_eq!(r.code, Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn answers_of_500_and_503_and_stalls_are_retried() {
    let g = Garage::start();
    let proxy = FaultProxy::start(
        &g.endpoint,
        Faults {
            error_every: 5,
            stall_every: 13,
            stall: Duration::from_secs(6),
            ..Faults::default()
        },
    );
    let cmd = |args: &[&str]| {
        let mut c = g.dbvault(&proxy.endpoint, "flaky", args);
        c.env("DBVAULT_S3_TIMEOUT", "2");
        c
    };
    run_cmd(cmd(&["init"]), None).ok();
    let data = dump_like(24 << 20, 11);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&data)).ok();
    let out = run_cmd(cmd(&["--no-cache", "restore", "latest", "--to", "-"]), None).ok();
    assert!(
        out.stdout == data,
        "restore through the faulty proxy differs"
    );
    run_cmd(cmd(&["check", "--read-data"]), None).ok();
    let (requests, errors, stalls) = proxy.counts();
    eprintln!("{requests} requests, {errors} answered 500/503, {stalls} stalled");
    assert!(errors >= 5 && stalls >= 1, "too few faults injected");
}

#[test]
fn a_store_that_keeps_failing_fails_clearly_and_loses_nothing() {
    let g = Garage::start();
    let proxy = FaultProxy::start(&g.endpoint, Faults::default());
    let cmd = |args: &[&str]| g.dbvault(&proxy.endpoint, "down", args);
    run_cmd(cmd(&["init"]), None).ok();
    let first = dump_like(6 << 20, 1);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&first)).ok();
    proxy.set(Faults {
        error_every: 1,
        ..Faults::default()
    });
    let t = Instant::now();
    let second = dump_like(6 << 20, 2);
    let r = run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&second));
    let err = one_line(&r, 75);
    assert!(
        err.contains("SlowDown") && err.contains("s3://"),
        "unclear: {err}"
    );
    eprintln!("gave up after {:?}: {err}", t.elapsed());
    proxy.set(Faults::default());
    restores(&g, "down", "latest", &first);
    let third = dump_like(6 << 20, 3);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&third)).ok();
    restores(&g, "down", "latest", &third);
    run_cmd(cmd(&["check"]), None).ok();
}

#[test]
fn the_store_dying_mid_backup_loses_nothing() {
    let mut g = Garage::start();
    let cmd = |g: &Garage, args: &[&str]| g.dbvault(&g.endpoint, "dies", args);
    run_cmd(cmd(&g, &["init", "--pack-size", "1MiB"]), None).ok();
    let first = dump_like(4 << 20, 21);
    run_cmd(cmd(&g, &["backup", "-", "--name", "s"]), Some(&first)).ok();
    let store = S3Backend::new(
        &g.url("dies"),
        &S3Options {
            endpoint: Some(g.endpoint.clone()),
            region: Some("garage".into()),
            path_style: true,
            credentials: Some((g.key_id.clone(), g.secret.clone())),
            attempt_timeout: None,
            spool_dir: None,
        },
    )
    .expect("backend");
    let packs_before = store.list("data/").expect("list").len();

    // A backup fed slowly, so it is surely running when the server goes.
    let mut child = cmd(&g, &["backup", "-", "--name", "s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let big = dump_like(64 << 20, 22);
    let feeder = std::thread::spawn(move || {
        for piece in big.chunks(1 << 20) {
            if stdin.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    let t = Instant::now();
    while store.list("data/").expect("list").len() < packs_before + 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no packs uploaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    g.stop();
    let out = dbvault_tests::finish(child.wait_with_output().expect("wait"));
    let _ = feeder.join();
    let err = one_line(&out, 75);
    assert!(
        err.contains("cannot reach") && err.contains("s3://"),
        "unclear: {err}"
    );
    g.restart();
    // Only the first snapshot exists, it restores, and no index entry lacks its pack.
    let list = run_cmd(cmd(&g, &["snapshots", "--json"]), None).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    restores(&g, "dies", "latest", &first);
    run_cmd(cmd(&g, &["check", "--read-data"]), None).ok();
    // The next backup works (taking the dead backup's lock over) and so does a prune.
    let next = dump_like(8 << 20, 23);
    run_cmd(cmd(&g, &["backup", "-", "--name", "s"]), Some(&next)).ok();
    restores(&g, "dies", "latest", &next);
    run_cmd(cmd(&g, &["prune"]), None).ok();
    restores(&g, "dies", "latest", &next);
}

#[test]
fn bad_credentials_a_missing_bucket_and_no_server_each_give_one_line() {
    let g = Garage::start();
    run_cmd(g.dbvault(&g.endpoint, "ok", &["init"]), None).ok();

    let mut c = g.dbvault(&g.endpoint, "ok", &["snapshots"]);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789");
    let err = one_line(&run_cmd(c, None), 1);
    assert!(err.contains("secret key is wrong"), "{err}");
    assert!(!err.contains("not-the-secret"), "secret in output: {err}");

    let mut c = g.dbvault(&g.endpoint, "ok", &["snapshots"]);
    c.env("AWS_ACCESS_KEY_ID", "GKdeadbeefdeadbeefdeadbeef");
    let err = one_line(&run_cmd(c, None), 1);
    assert!(err.contains("access key is not known"), "{err}");

    let mut c = g.dbvault(&g.endpoint, "ok", &["snapshots"]);
    c.env("DBVAULT_REPO", "s3://no-such-bucket/x");
    let err = one_line(&run_cmd(c, None), 1);
    assert!(
        err.contains("bucket does not exist") && err.contains("no-such-bucket"),
        "{err}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let t = Instant::now();
    let c = g.dbvault(&format!("http://127.0.0.1:{port}"), "ok", &["snapshots"]);
    let err = one_line(&run_cmd(c, None), 75);
    assert!(err.contains("cannot reach"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_store_that_times_out_during_a_restore_is_not_reported_as_damage() {
    let g = Garage::start();
    let proxy = FaultProxy::start(&g.endpoint, Faults::default());
    let cmd = |args: &[&str]| {
        let mut c = g.dbvault(&proxy.endpoint, "slow", args);
        c.env("DBVAULT_S3_TIMEOUT", "1");
        c
    };
    run_cmd(cmd(&["init"]), None).ok();
    let data = dump_like(2 << 20, 31);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&data)).ok();
    // Every read of a pack hangs past the timeout, retries and all.
    proxy.set(Faults {
        stall: Duration::from_secs(30),
        stall_pack_reads: true,
        refuse_deletes: false,
        ..Faults::default()
    });
    let r = run_cmd(cmd(&["restore", "latest", "--to", "-"]), None);
    let err = one_line(&r, 75);
    assert!(
        err.contains("did not answer in time") || err.contains("cannot reach"),
        "not a transport error: {err}"
    );
    assert!(
        !err.contains("damaged"),
        "a timeout reported as damage: {err}"
    );
    assert!(r.stdout.is_empty() || data.starts_with(&r.stdout));
    let (_, _, stalls) = proxy.counts();
    assert!(stalls >= 1, "no pack read was stalled");
    // And nothing was lost: with the store answering again, it restores.
    proxy.set(Faults::default());
    restores(&g, "slow", "latest", &data);
}

#[test]
fn a_snapshot_listed_but_not_found_stops_prune_for_a_later_try() {
    let g = Garage::start();
    let proxy = FaultProxy::start(&g.endpoint, Faults::default());
    let cmd = |args: &[&str]| g.dbvault(&proxy.endpoint, "stale", args);
    run_cmd(cmd(&["init"]), None).ok();
    let first = dump_like(4 << 20, 1);
    let second = dump_like(4 << 20, 2);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&first)).ok();
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&second)).ok();
    let before = run_cmd(cmd(&["--json", "stats"]), None).ok().json();
    // The listing names the snapshots; reading them answers "not found".
    proxy.set(Faults {
        missing_snapshot_reads: true,
        ..Faults::default()
    });
    let r = run_cmd(cmd(&["--no-cache", "prune"]), None);
    let err = one_line(&r, 75);
    assert!(
        err.contains("not found") && err.contains("run prune again later"),
        "{err}"
    );
    assert!(
        !err.contains("dbvault forget"),
        "never: forget a snapshot the store may still hold: {err}"
    );
    proxy.set(Faults::default());
    let after = run_cmd(cmd(&["--json", "stats"]), None).ok().json();
    assert_eq!(before["packs"], after["packs"], "nothing was deleted");
    run_cmd(cmd(&["prune"]), None).ok();
    let ids = run_cmd(cmd(&["snapshots", "--json"]), None).ok().json();
    let ids: Vec<&str> = ids
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    restores(&g, "stale", ids[0], &first);
    restores(&g, "stale", ids[1], &second);
}
