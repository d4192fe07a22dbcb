//! Progress as an operator at a terminal sees it, through a pseudo-terminal (`script`):
//! a restore and a `check --read-data` draw a bar with a percentage and an estimate; the
//! same commands under cron (no terminal) or `--quiet` draw nothing; `--progress json`
//! gives a wrapper JSON lines on stderr; stdout stays the data.

use std::process::Command;

use dbvault_tests::{bin, random_bytes, Repo, PASSWORD};

/// Runs `args` with stderr (and stdin) on a pseudo-terminal, stdout to `out`; returns what
/// the terminal showed.
fn on_a_terminal(repo: &Repo, args: &str, out: &std::path::Path) -> String {
    let cmd = format!(
        "{} --repo '{}' {args} > '{}'",
        bin().display(),
        repo.path.display(),
        out.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DBVAULT_PASSWORD", PASSWORD)
        .env("DBVAULT_CACHE_DIR", repo.dir.path().join("client"))
        .output()
        .expect("script (util-linux, Debian's bsdutils) runs a command on a pseudo-terminal");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn long_commands_show_progress_on_a_terminal_only() {
    let repo = Repo::new();
    let data = random_bytes(300 << 20, 41);
    repo.backup(&data, &["--name", "big"]);
    let out = repo.dir.path().join("restored");

    let shown = on_a_terminal(&repo, "restore latest --name big --to -", &out);
    assert!(
        std::fs::read(&out).expect("restored") == data,
        "the data is intact"
    );
    assert!(shown.contains("restoring"), "{shown}");
    assert!(
        shown.contains('%') && shown.contains("ETA"),
        "a percentage and an estimate: {shown}"
    );
    assert!(shown.contains("300.00 MiB"), "the total: {shown}");

    let shown = on_a_terminal(&repo, "check --read-data", &out);
    assert!(
        shown.contains("reading packs") && shown.contains('%'),
        "{shown}"
    );

    // --quiet: nothing drawn, the same data.
    let shown = on_a_terminal(&repo, "--quiet restore latest --name big --to -", &out);
    assert!(!shown.contains('%') && !shown.contains("ETA"), "{shown}");
    assert!(std::fs::read(&out).expect("restored") == data);

    // No terminal (cron, a pipe): no bar, no escape codes.
    let r = repo
        .run(&["restore", "latest", "--name", "big", "--to", "-"], None)
        .ok();
    assert!(
        !r.stderr.contains("ETA") && !r.stderr.contains('\u{1b}'),
        "{}",
        r.stderr
    );

    // A wrapper: a JSON line per task, the last one finished, stdout untouched.
    let r = repo
        .run(
            &[
                "restore",
                "latest",
                "--name",
                "big",
                "--to",
                "-",
                "--progress",
                "json",
            ],
            None,
        )
        .ok();
    assert!(r.stdout == data);
    let last = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["progress"]
                .as_str()
                .is_some_and(|p| p.starts_with("restoring"))
        })
        .last();
    // A restore shorter than the display's delay has no line: only a long one must.
    if let Some(v) = last {
        assert_eq!(v["finished"], true, "{v}");
        assert_eq!(v["done"], v["total"], "{v}");
    }
}

#[test]
fn an_sqlite_backup_shows_its_percentage() {
    let repo = Repo::new();
    let db = repo.dir.path().join("app.db");
    dbvault_tests::sqlite3(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 60000) \
         INSERT INTO t SELECT i, randomblob(2000) FROM s;",
    );
    let out = repo.dir.path().join("summary");
    let shown = on_a_terminal(&repo, &format!("backup sqlite:{}", db.display()), &out);
    assert!(
        shown.contains("backing up app") && shown.contains('%'),
        "{shown}"
    );
    let summary = std::fs::read_to_string(&out).expect("summary");
    assert!(summary.contains("saved"), "{summary}");
}
