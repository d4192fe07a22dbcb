//! A repository of format 2, written by the dbvault before format 3 (the fixture in
//! `tests/fixtures/repo-v2`, made with `dbvault init` and two backups of the data below):
//! it still opens, restores byte-identically, passes `check --read-data`, and takes new
//! backups that dedup against its old ones (its chunk boundaries did not move).
//! A repository of December 2026 (`tests/fixtures/repo-2026-12`: a plain dump, a custom
//! archive, an SQLite database, a report) keeps reading as the code around it changes.

use dbvault_tests::{random_bytes, Repo};

/// The fixture's contents: `backup - --name raw` of `random_bytes(400_000, 3)`, then
/// `backup - --name text` of `dump_like(300_000, 21)`.
fn fixture() -> Repo {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-v2");
    let repo = Repo::uninit();
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&repo.path)
        .status()
        .expect("cp");
    assert!(st.success());
    repo
}

#[test]
fn a_format_2_repository_keeps_working() {
    let repo = fixture();
    let config = std::fs::read_to_string(repo.path.join("config")).expect("config");
    assert!(config.contains("\"version\": 2"), "{config}");
    let raw = random_bytes(400_000, 3);
    let text = dbvault_tests::dump_like(300_000, 21);
    let r = repo
        .run(&["restore", "latest", "--name", "raw", "--to", "-"], None)
        .ok();
    assert!(r.stdout == raw, "the old raw snapshot does not restore");
    let r = repo
        .run(&["restore", "latest", "--name", "text", "--to", "-"], None)
        .ok();
    assert!(r.stdout == text, "the old text snapshot does not restore");
    repo.run(&["check", "--read-data"], None).ok();

    // The same bytes again cost nearly nothing: the chunker still cuts where it did.
    let again = repo.backup(&raw, &["--name", "raw"]);
    let added = again["bytes_added"].as_u64().expect("bytes_added");
    assert!(added < 20_000, "{added} bytes added for unchanged data");
    let mut changed = raw.clone();
    changed[200_000] ^= 1;
    repo.backup(&changed, &["--name", "raw"]);
    let r = repo
        .run(&["restore", "latest", "--name", "raw", "--to", "-"], None)
        .ok();
    assert!(r.stdout == changed);
    repo.run(&["check"], None).ok();
    // Still format 2: nothing rewrote config.
    assert_eq!(
        std::fs::read_to_string(repo.path.join("config")).expect("config"),
        config
    );
}

/// A repository written by the dbvault of December 2026 (format 3, before the jobs
/// library and the typed source formats): a plain pg_dump, a custom-format archive, an
/// SQLite database and a restore-test report. The dumps and the SQLite file's `.dump` are
/// kept beside it, as they were backed up.
fn fixture_2026() -> (Repo, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repo-2026-12");
    let repo = Repo::uninit();
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.join("repo"))
        .arg(&repo.path)
        .status()
        .expect("cp");
    assert!(st.success());
    (repo, dir)
}

#[test]
fn a_repository_of_december_2026_reads_restores_and_takes_new_backups() {
    let (repo, dir) = fixture_2026();
    let chk = repo.run(&["check", "--read-data"], None);
    assert_eq!(chk.code, Some(0), "{}", chk.stderr);
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{list}");
    for n in ["shop", "shopfc", "app"] {
        assert!(names.contains(&n), "{n}: {list}");
    }
    // The plain dump and the archive come back byte for byte.
    let shop = std::fs::read(dir.join("shop.sql")).expect("shop.sql");
    let back = repo.run(&["restore", "latest", "--name", "shop", "--to", "-"], None);
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    assert!(back.stdout == shop, "the plain dump differs");
    let archive = std::fs::read(dir.join("shop.dump")).expect("shop.dump");
    let back = repo.run(
        &["restore", "latest", "--name", "shopfc", "--to", "-"],
        None,
    );
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    assert!(back.stdout == archive, "the archive differs");
    // Its tables are listed with their rows, and one comes back as a script.
    let ls = repo
        .run(&["ls", "latest", "--name", "shopfc"], None)
        .ok()
        .text();
    assert!(
        ls.lines()
            .any(|l| l.contains("Order Lines") && l.contains(" 300 ")),
        "{ls}"
    );
    let t = repo
        .run(
            &[
                "restore",
                "latest",
                "--name",
                "shop",
                "--table",
                "public.customers",
                "--to",
                "-",
            ],
            None,
        )
        .ok()
        .text();
    assert!(
        t.contains("COPY public.customers") && t.contains("customer 40"),
        "{t}"
    );
    // The SQLite database, with its restore-test on record.
    let out = repo.dir.path().join("app.db");
    repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "app",
            "--to",
            &format!("sqlite:{}", out.display()),
        ],
        None,
    )
    .ok();
    let dump = std::process::Command::new("sqlite3")
        .arg(&out)
        .arg(".dump")
        .output()
        .expect("sqlite3");
    let want = std::fs::read(dir.join("app.sql")).expect("app.sql");
    assert!(dump.stdout == want, "the SQLite database differs");
    let s = repo.run(&["snapshots"], None).ok().text();
    assert!(
        s.lines()
            .any(|l| l.contains(" app ") && l.contains("passed 2026-12-07")),
        "{s}"
    );
    // New backups go in beside the old ones and dedup against them.
    let r = repo
        .run(&["backup", "-", "--name", "shop", "--json"], Some(&shop))
        .ok()
        .json();
    assert!(r["bytes_added"].as_u64().expect("added") < 2_000, "{r}");
    assert_eq!(repo.run(&["check", "--read-data"], None).code, Some(0));
}
