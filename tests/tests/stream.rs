//! Stream backups through the real binary: round trips, dedup, JSON shapes, options.

use dbvault_tests::{dump_like, random_bytes, run_cmd, Repo, PASSWORD};

fn round_trip(repo: &Repo, data: &[u8]) {
    // An empty stream is stored only when asked to (`--allow-empty`): by default it is
    // what a failed producer leaves, and refused (tests/logical_safety.rs).
    let b = repo.backup(
        data,
        if data.is_empty() {
            &["--allow-empty"]
        } else {
            &[]
        },
    );
    let id = b["snapshot_id"].as_str().expect("snapshot_id");
    assert_eq!(b["bytes_in"].as_u64(), Some(data.len() as u64));
    let out = repo.restore(id).ok();
    assert!(
        out.stdout == data,
        "restore of {} bytes differs",
        data.len()
    );
}

#[test]
fn round_trips_are_byte_identical_for_small_and_odd_sizes() {
    let repo = Repo::new();
    round_trip(&repo, b"");
    round_trip(&repo, b"x");
    round_trip(&repo, &random_bytes(1_234_567, 7));
    round_trip(&repo, &dump_like(3_000_001, 8));
}

#[test]
fn round_trip_of_a_stream_over_100_mb() {
    let repo = Repo::new();
    let mut data = dump_like(60 << 20, 1);
    data.extend_from_slice(&random_bytes(45 << 20, 2));
    data.extend_from_slice(b"odd tail");
    round_trip(&repo, &data);
    // Two snapshots share every chunk: both still restore.
    let b = repo.backup(&data, &["--name", "again"]);
    assert!(b["bytes_added"].as_u64().expect("n") < data.len() as u64 / 100);
    let out = repo
        .run(&["restore", "latest", "--name", "again", "--to", "-"], None)
        .ok();
    assert!(out.stdout == data);
}

#[test]
fn same_stream_twice_adds_under_one_percent() {
    let repo = Repo::new();
    let data = dump_like(20 << 20, 3);
    let first = repo.backup(&data, &[]);
    assert!(first["bytes_added"].as_u64().expect("n") > 0);
    let second = repo.backup(&data, &[]);
    let added = second["bytes_added"].as_u64().expect("n");
    assert!(
        added * 100 < data.len() as u64,
        "second backup added {added} bytes"
    );
}

#[test]
fn bytes_inserted_near_the_front_add_under_five_percent() {
    let repo = Repo::new();
    let data = random_bytes(20 << 20, 4); // incompressible: added bytes measure dedup alone
    repo.backup(&data, &[]);
    let mut shifted = data[..1000].to_vec();
    shifted.extend_from_slice(b"a few inserted bytes near the front");
    shifted.extend_from_slice(&data[1000..]);
    let b = repo.backup(&shifted, &[]);
    let added = b["bytes_added"].as_u64().expect("n");
    assert!(
        added * 20 < shifted.len() as u64,
        "insert added {added} bytes of {}",
        shifted.len()
    );
    assert!(repo.restore("latest").ok().stdout == shifted);
}

#[test]
fn json_shapes_that_scripts_rely_on() {
    let repo = Repo::new();
    let b = repo.backup(
        b"hello\n",
        &["--name", "db1", "--tag", "nightly", "--tag", "t2"],
    );
    for key in ["snapshot_id", "bytes_in", "bytes_added", "seconds"] {
        assert!(b.get(key).is_some(), "backup --json lacks {key}: {b}");
    }
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let s = &list[0];
    assert_eq!(s["id"], b["snapshot_id"]);
    assert_eq!(s["name"], "db1");
    assert_eq!(s["tags"], serde_json::json!(["nightly", "t2"]));
    assert_eq!(s["bytes_in"], 6);
    let time = s["time"].as_str().expect("time");
    assert!(
        chrono_like_rfc3339(time),
        "time {time:?} is not RFC 3339 with an offset"
    );
    assert_eq!(s["parts"][0]["bytes"], 6);
    assert!(s["parts"][0].get("name").is_some() && s["parts"][0].get("rows").is_some());
    let stats = repo.run(&["stats", "--json"], None).ok().json();
    assert_eq!(stats["snapshots"], 1);
    assert!(stats["stored_bytes"].as_u64().expect("n") > 0);
}

fn chrono_like_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 25
        && b[4] == b'-'
        && b[10] == b'T'
        && (t.ends_with('Z') || b[b.len() - 6] == b'+' || b[b.len() - 6] == b'-')
}

#[test]
fn given_time_name_filter_and_global_options_after_the_subcommand() {
    let repo = Repo::new();
    repo.backup(
        b"a",
        &["--name", "x", "--time", "2026-01-02T03:04:05+01:00"],
    );
    repo.backup(b"b", &["--name", "y"]);
    let mut c = dbvault_tests::Repo::cmd(&repo, &[]);
    c.args(["snapshots", "--name", "x", "--json"]);
    let only_x = run_cmd(c, None).ok().json();
    assert_eq!(only_x.as_array().expect("array").len(), 1);
    assert_eq!(only_x[0]["time"], "2026-01-02T03:04:05+01:00");
    let out = repo
        .run(&["restore", "latest", "--name", "x", "--to", "-"], None)
        .ok();
    assert_eq!(out.stdout, b"a");
    let bad = repo.run(&["backup", "-", "--time", "yesterday"], Some(b"z"));
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}

#[test]
fn passphrase_from_a_file_or_env_file_variable() {
    let repo = Repo::new();
    let pw = repo.dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write");
    let mut c = repo.cmd(&["snapshots", "--password-file"]);
    c.arg(&pw).env_remove("DBVAULT_PASSWORD");
    run_cmd(c, None).ok();
    let mut c = repo.cmd(&["snapshots"]);
    c.env_remove("DBVAULT_PASSWORD")
        .env("DBVAULT_PASSWORD_FILE", &pw);
    run_cmd(c, None).ok();
    let mut c = repo.cmd(&["snapshots"]);
    c.env_remove("DBVAULT_PASSWORD");
    let r = run_cmd(c, None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("DBVAULT_PASSWORD"), "{}", r.stderr);
}

#[test]
fn repository_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::new();
    repo.backup(&dump_like(1 << 20, 5), &[]);
    for (path, _) in repo.files() {
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn usage_errors_exit_with_2() {
    let repo = Repo::new();
    assert_eq!(repo.run(&["frobnicate"], None).code, Some(2));
    assert_eq!(repo.run(&["restore", "latest"], None).code, Some(2));
}

#[test]
fn command_output_is_backed_up() {
    let repo = Repo::new();
    let r = repo
        .run(
            &[
                "backup",
                "--command",
                "printf 'line one\\nline two\\n'",
                "--json",
            ],
            None,
        )
        .ok();
    assert!(r.json()["snapshot_id"].is_string());
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    assert_eq!(list[0]["name"], "printf");
    assert_eq!(repo.restore("latest").ok().stdout, b"line one\nline two\n");
}

#[test]
fn scattered_edits_are_stored_as_small_deltas_and_restore_exactly() {
    let repo = Repo::new();
    let data = dump_like(16 << 20, 31);
    repo.backup(&data, &["--name", "db"]);
    // Change one byte in 40 places spread over the stream: 40 chunks are new.
    let mut edited = data.clone();
    for k in 0..40 {
        let at = (k * 397_123 + 1000) % edited.len();
        edited[at] = if edited[at] == b'7' { b'3' } else { b'7' };
    }
    let b = repo.backup(&edited, &["--name", "db"]);
    let added = b["bytes_added"].as_u64().expect("n");
    // Whole new 64 KiB chunks would cost about 40 x 15 KiB compressed; deltas cost bytes.
    assert!(added < 150_000, "40 one-byte edits added {added} bytes");
    assert!(repo.restore("latest").ok().stdout == edited);
    let first = repo.snapshot_ids()[0].clone();
    assert!(repo.restore(&first).ok().stdout == data);
    // A third night edits again: deltas stay one level deep and still restore.
    let mut again = edited.clone();
    again[5_000_000] ^= 1;
    repo.backup(&again, &["--name", "db"]);
    assert!(repo.restore("latest").ok().stdout == again);
}

#[test]
fn latest_of_snapshots_with_one_time_is_the_one_backed_up_last() {
    // Two archives pg_dump made within one second, imported with their own times, tie on
    // time: `latest` must be the second one backed up, whatever their ids.
    let repo = Repo::new();
    let t = "2026-11-30T03:00:00+00:00";
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let data = random_bytes(10_000, 100 + i);
        let s = repo
            .run(
                &["backup", "-", "--name", "tie", "--time", t, "--json"],
                Some(&data),
            )
            .ok()
            .json();
        ids.push(s["snapshot_id"].as_str().expect("id").to_string());
        let latest = repo
            .run(&["restore", "latest", "--name", "tie", "--to", "-"], None)
            .ok();
        assert!(
            latest.stdout == data,
            "after backup {i}: latest is not the newest"
        );
    }
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let order: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, ids, "snapshots lists them in the order taken");
}
