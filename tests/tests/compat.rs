//! A repository of format 2, written by the dbvault before format 3 (the fixture in
//! `tests/fixtures/repo-v2`, made with `dbvault init` and two backups of the data below):
//! it still opens, restores byte-identically, passes `check --read-data`, and takes new
//! backups that dedup against its old ones (its chunk boundaries did not move).

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
