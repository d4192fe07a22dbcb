//! What an operator trips on in daily use: a `--json` failure with nothing on stdout, an
//! ambiguous id prefix that lists fewer ids than it counts, `restore --to - | head` ending
//! in an error, a Prisma URL parameter called "invalid connection string", a 0-byte file
//! backed up as an empty SQLite database, a 5% check reading no pack of a small repository,
//! and `snapshots` without tag filters, repeating notes, breaking its columns.

use std::process::{Command, Stdio};

use dbvault_tests::{random_bytes, Repo};

#[test]
fn a_json_failure_is_json_on_stdout_too() {
    let repo = Repo::new();
    let r = repo.run(&["restore", "0123", "--to", "-", "--json"], None);
    assert_eq!(r.code, Some(1));
    let j = r.json();
    assert_eq!(j["exit_code"], 1, "{j}");
    assert_eq!(j["kind"], "failure", "{j}");
    assert!(
        j["error"].as_str().is_some_and(|e| e.contains("0123")),
        "{j}"
    );
    assert!(r.stderr.starts_with("dbvault: error:"), "{}", r.stderr);
}

#[test]
fn a_json_usage_error_is_json_on_stdout_too() {
    let repo = Repo::new();
    let r = repo.run(&["snapshots", "--json", "--no-such-flag"], None);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["kind"], "usage", "{j}");
    assert_eq!(j["exit_code"], 2, "{j}");
    assert!(
        j["error"]
            .as_str()
            .is_some_and(|e| e.contains("--no-such-flag")),
        "{j}"
    );
    // Help is not an error, and stays help.
    let h = repo.run(&["snapshots", "--json", "--help"], None);
    assert_eq!(h.code, Some(0));
    assert!(h.text().contains("Usage:"), "{}", h.text());
}

#[test]
fn an_ambiguous_prefix_lists_every_snapshot_it_matches() {
    let repo = Repo::new();
    // 17 snapshots: two share a first hex digit.
    for i in 0..17u64 {
        repo.backup(&random_bytes(64, i), &["--name", "s"]);
    }
    let ids = repo.snapshot_ids();
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .max_by_key(|d| ids.iter().filter(|id| id.starts_with(d.as_str())).count())
        .expect("a digit");
    let matching: Vec<&String> = ids.iter().filter(|id| id.starts_with(&digit)).collect();
    assert!(matching.len() >= 2);
    let r = repo.run(&["restore", &digit, "--to", "-"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("matches {} snapshots", matching.len())),
        "{}",
        r.stderr
    );
    for id in matching.iter().take(10) {
        assert!(r.stderr.contains(&id[..8]), "{id} not named: {}", r.stderr);
    }
}

#[test]
fn restore_into_a_pipe_closed_early_is_quiet() {
    let repo = Repo::new();
    repo.backup(&random_bytes(8 << 20, 7), &["--name", "big"]);
    let mut c = repo.cmd(&["restore", "latest", "--name", "big", "--to", "-"]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("restore");
    // `| head -c 10`: read a little, close the pipe.
    {
        use std::io::Read;
        let mut out = child.stdout.take().expect("stdout");
        let mut ten = [0u8; 10];
        out.read_exact(&mut ten).expect("read");
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn a_url_parameter_libpq_does_not_take_is_named() {
    let repo = Repo::new();
    let r = repo.run(
        &["backup", "postgresql:///shop?schema=public", "--name", "x"],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("parameter \"schema\" is not a libpq connection parameter"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(repo.snapshot_ids().is_empty());
}

#[test]
fn an_empty_file_is_not_an_sqlite_database() {
    let repo = Repo::new();
    let empty = repo.dir.path().join("app.db");
    std::fs::write(&empty, b"").expect("empty file");
    let src = format!("sqlite:{}", empty.display());
    let r = repo.run(&["backup", &src], None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("is an empty file (0 bytes)"),
        "{}",
        r.stderr
    );
    assert!(repo.snapshot_ids().is_empty());
    let r = repo.run(&["backup", &src, "--allow-empty"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(repo.snapshot_ids().len(), 1);
}

#[test]
fn a_small_share_of_a_small_repository_still_reads_a_pack() {
    let repo = Repo::new();
    repo.backup(&random_bytes(1 << 20, 3), &["--name", "a"]);
    for _ in 0..5 {
        let j = repo
            .run(&["check", "--read-data-subset", "5%", "--json"], None)
            .ok()
            .json();
        assert!(j["packs_read"].as_u64() >= Some(1), "{j}");
    }
}

#[test]
fn snapshots_filter_by_tag_and_host_and_keep_their_columns() {
    let repo = Repo::new();
    let long = "a-source-name-much-longer-than-sixteen-characters";
    repo.backup(b"one", &["--name", long, "--tag", "pre-migration-0042"]);
    repo.backup(b"two", &["--name", "s", "--tag", "nightly"]);
    let tagged = repo
        .run(
            &["snapshots", "--tag", "pre-migration-0042", "--json"],
            None,
        )
        .ok()
        .json();
    let list = tagged.as_array().expect("array");
    assert_eq!(list.len(), 1, "{tagged}");
    assert_eq!(list[0]["name"], long);
    let none = repo
        .run(&["snapshots", "--host", "no-such-host", "--json"], None)
        .ok()
        .json();
    assert_eq!(none.as_array().map(Vec::len), Some(0));
    // `latest` with a tag: the tagged snapshot, whichever source is newer.
    let r = repo
        .run(
            &[
                "restore",
                "latest",
                "--tag",
                "pre-migration-0042",
                "--to",
                "-",
            ],
            None,
        )
        .ok();
    assert_eq!(r.stdout, b"one");
    let r = repo.run(&["restore", "latest", "--tag", "nope", "--to", "-"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("latest (tag nope)"), "{}", r.stderr);
    let ls = repo
        .run(&["ls", "latest", "--tag", "nightly", "--json"], None)
        .ok()
        .json();
    assert_eq!(ls["name"], "s", "{ls}");
    // The columns after the name line up whatever its length.
    let text = repo.run(&["snapshots"], None).ok().text();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let at = |l: &str| l.find("never").expect("restore-test column");
    assert_eq!(at(rows[0]), at(rows[1]), "{text}");
}

#[test]
fn a_note_shared_by_snapshots_is_said_once() {
    let Ok(out) = Command::new("pg_dump").arg("--version").output() else {
        panic!("pg_dump is needed: install postgresql-client (.ci/run does)");
    };
    assert!(out.status.success());
    let db = dbvault_tests::PgDb::new("papercut_note");
    db.sql("CREATE TABLE t (a int); INSERT INTO t VALUES (1)");
    let repo = Repo::new();
    for _ in 0..3 {
        repo.run(
            &["backup", &db.url(), "--name", "sel", "--table", "t"],
            None,
        )
        .ok();
    }
    let text = repo.run(&["snapshots"], None).ok().text();
    let notes: Vec<&str> = text.lines().filter(|l| l.contains("note: ")).collect();
    assert_eq!(notes.len(), 1, "{text}");
    assert!(notes[0].contains("(every snapshot)"), "{text}");
}

/// `forget --tag`: the rules apply among the tagged snapshots alone; the others are
/// neither kept nor forgotten.
#[test]
fn forget_by_tag_leaves_the_other_snapshots_alone() {
    let repo = Repo::new();
    for (i, tag) in [
        "pre-migration",
        "nightly",
        "pre-migration",
        "nightly",
        "pre-migration",
    ]
    .iter()
    .enumerate()
    {
        let data = format!("night {i}");
        repo.backup(data.as_bytes(), &["--name", "db", "--tag", tag]);
    }
    let j = repo
        .run(
            &[
                "forget",
                "--tag",
                "pre-migration",
                "--keep-last",
                "1",
                "--json",
            ],
            None,
        )
        .ok()
        .json();
    assert_eq!(j["forget"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["keep"].as_array().map(Vec::len), Some(1), "{j}");
    let left = repo.run(&["snapshots", "--json"], None).ok().json();
    let tags: Vec<String> = left
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["tags"][0].as_str().expect("tag").to_string())
        .collect();
    assert_eq!(tags, ["nightly", "nightly", "pre-migration"], "{left}");
    let r = repo.run(&["forget", "--tag", "nope", "--keep-last", "1"], None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no snapshots match tag nope"),
        "{}",
        r.stderr
    );
}
