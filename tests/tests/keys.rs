//! Several passphrases for one repository: `key add`, `key list` (the one in use marked),
//! `key passwd` (rotation: the old passphrase stops working), `key remove` (never the last,
//! never the one in use without --force).

use dbvault_tests::{run_cmd, Repo, Run};

fn with_pass(repo: &Repo, pass: &str, args: &[&str]) -> Run {
    let mut c = repo.cmd(args);
    c.env("DBVAULT_PASSWORD", pass);
    run_cmd(c, None)
}

fn keys(repo: &Repo, pass: &str) -> serde_json::Value {
    with_pass(repo, pass, &["key", "list", "--json"])
        .ok()
        .json()
}

#[test]
fn passphrases_are_added_listed_rotated_and_removed() {
    let repo = Repo::new();
    repo.backup(b"rows\n", &[]);
    let dir = repo.dir.path();
    let (alice, bob) = (dir.join("alice"), dir.join("bob"));
    std::fs::write(&alice, "alice's passphrase 1\n").expect("write");
    std::fs::write(&bob, "bob's passphrase 2\n").expect("write");
    let first = keys(&repo, dbvault_tests::PASSWORD);
    assert_eq!(first.as_array().map(Vec::len), Some(1));
    assert_eq!(first[0]["current"], true);

    repo.run(
        &[
            "key",
            "add",
            "--new-password-file",
            alice.to_str().expect("path"),
            "--kdf-memory",
            "8",
        ],
        None,
    )
    .ok();
    let both = keys(&repo, "alice's passphrase 1");
    assert_eq!(both.as_array().map(Vec::len), Some(2));
    let alice_key = both
        .as_array()
        .and_then(|a| a.iter().find(|k| k["current"] == true))
        .expect("current key");
    assert_eq!(alice_key["kdf"]["m_kib"], 8192);
    assert!(alice_key["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(
        with_pass(
            &repo,
            "alice's passphrase 1",
            &["restore", "latest", "--to", "-"]
        )
        .ok()
        .stdout,
        b"rows\n"
    );

    // The key in use is not removed by accident; the last key never.
    let alice_id = alice_key["id"].as_str().expect("id").to_string();
    let r = with_pass(
        &repo,
        "alice's passphrase 1",
        &["key", "remove", &alice_id[..8]],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("--force"), "{}", r.stderr);

    // Rotation: Alice's passphrase becomes Bob's; hers no longer opens anything.
    with_pass(
        &repo,
        "alice's passphrase 1",
        &[
            "key",
            "passwd",
            "--new-password-file",
            bob.to_str().expect("path"),
            "--kdf-memory",
            "8",
        ],
    )
    .ok();
    let r = with_pass(&repo, "alice's passphrase 1", &["snapshots"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("passphrase"), "{}", r.stderr);
    assert_eq!(
        keys(&repo, "bob's passphrase 2").as_array().map(Vec::len),
        Some(2)
    );

    // The original key removed by Bob; then Bob's, the last one, cannot go.
    let original = first[0]["id"].as_str().expect("id");
    with_pass(&repo, "bob's passphrase 2", &["key", "remove", original]).ok();
    let r = repo.run(&["snapshots"], None);
    assert_eq!(r.code, Some(1), "the removed passphrase still opens it");
    let last = keys(&repo, "bob's passphrase 2");
    let last_id = last[0]["id"].as_str().expect("id");
    let r = with_pass(
        &repo,
        "bob's passphrase 2",
        &["key", "remove", last_id, "--force"],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("only key"), "{}", r.stderr);
    assert_eq!(
        with_pass(
            &repo,
            "bob's passphrase 2",
            &["restore", "latest", "--to", "-"]
        )
        .ok()
        .stdout,
        b"rows\n"
    );
    // Absurd costs are refused before anything is written.
    let r = with_pass(
        &repo,
        "bob's passphrase 2",
        &[
            "key",
            "add",
            "--new-password-file",
            alice.to_str().expect("path"),
            "--kdf-passes",
            "1000",
        ],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("Argon2 passes"), "{}", r.stderr);
}
