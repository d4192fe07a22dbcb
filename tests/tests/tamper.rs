//! What someone with write access to the store can change, and what dbvault then does:
//! an edited `config` makes every command refuse to open the repository; a key file with
//! absurd Argon2 parameters is refused at once (and does not lock out the other keys).

use std::time::{Duration, Instant};

use dbvault_tests::Repo;

fn config(repo: &Repo) -> serde_json::Value {
    let raw = std::fs::read(repo.path.join("config")).expect("config");
    serde_json::from_slice(&raw).expect("config is JSON")
}

fn write_config(repo: &Repo, v: &serde_json::Value) {
    std::fs::write(
        repo.path.join("config"),
        serde_json::to_vec_pretty(v).expect("json"),
    )
    .expect("write config");
}

/// Every everyday command refuses, with one line naming `config`, and writes nothing.
fn all_refuse(repo: &Repo, why: &str) {
    let before = repo.files();
    for args in [
        &["snapshots"][..],
        &["backup", "-", "--name", "late"],
        &["restore", "latest", "--to", "-"],
        &["check"],
        &["forget", "--keep-last", "1"],
    ] {
        let r = repo.run(args, Some(b"more data"));
        assert_ne!(r.code, Some(0), "{args:?} accepted a config {why}");
        assert!(
            r.stderr.contains("config") && r.stderr.contains("altered"),
            "{args:?} ({why}): {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(
        repo.files(),
        before,
        "a refused command changed the repository"
    );
}

#[test]
fn an_edited_config_is_refused_by_every_command() {
    let repo = Repo::new();
    let data = dbvault_tests::random_bytes(300_000, 5);
    repo.backup(&data, &[]);
    let good = config(&repo);
    assert_eq!(good["version"], 3);
    assert!(good["mac"].is_string(), "{good}");

    // Weaker compression and tiny chunks: a change that would alter the next backup.
    let mut edited = good.clone();
    edited["compression"] = serde_json::json!(19);
    edited["chunker"]["min"] = serde_json::json!(64);
    write_config(&repo, &edited);
    all_refuse(&repo, "with edited parameters");

    // Stripping the MAC by claiming the older, unauthenticated format does not work either.
    let mut downgraded = edited.clone();
    downgraded["version"] = serde_json::json!(2);
    downgraded.as_object_mut().expect("object").remove("mac");
    write_config(&repo, &downgraded);
    all_refuse(&repo, "downgraded to format 2");

    // The original config back: everything works again, and the data is intact.
    write_config(&repo, &good);
    assert_eq!(repo.restore("latest").ok().stdout, data);
}

fn key_files(repo: &Repo) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(repo.path.join("keys"))
        .expect("keys")
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_key_file_with_absurd_kdf_parameters_is_refused_at_once() {
    let repo = Repo::new();
    repo.backup(b"rows", &[]);
    let keys = key_files(&repo);
    assert_eq!(keys.len(), 1);
    let mut kf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keys[0]).expect("key")).expect("json");
    // New keys use the stronger default cost.
    assert_eq!(kf["params"]["m_kib"], 48 * 1024, "{kf}");
    assert_eq!(kf["params"]["t"], 3, "{kf}");

    // A planted key beside the real one (4 TiB of memory, a million passes) is skipped:
    // the real key still opens the repository, quickly.
    let mut planted = kf.clone();
    planted["params"]["m_kib"] = serde_json::json!(u32::MAX);
    planted["params"]["t"] = serde_json::json!(1_000_000);
    std::fs::write(
        repo.path.join("keys").join("0".repeat(64)),
        serde_json::to_vec(&planted).expect("json"),
    )
    .expect("plant");
    let start = Instant::now();
    repo.run(&["snapshots"], None).ok();
    assert!(start.elapsed() < Duration::from_secs(10));

    // The only key made absurd: refused at once, naming the file and the parameter.
    std::fs::remove_file(&keys[0]).expect("rm");
    kf["params"]["m_kib"] = serde_json::json!(u32::MAX);
    std::fs::write(&keys[0], serde_json::to_vec(&kf).expect("json")).expect("write");
    let start = Instant::now();
    let r = repo.run(&["snapshots"], None);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("key file keys/") && r.stderr.contains("out of range"),
        "{}",
        r.stderr
    );
}

#[test]
fn init_takes_the_kdf_cost_and_refuses_absurd_ones() {
    let repo = Repo::uninit();
    let r = repo.run(&["init", "--kdf-memory", "5000"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("Argon2 memory"), "{}", r.stderr);
    assert!(!repo.path.join("config").exists());
    repo.run(
        &[
            "init",
            "--kdf-memory",
            "64",
            "--kdf-passes",
            "4",
            "--kdf-lanes",
            "2",
        ],
        None,
    )
    .ok();
    let kf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key_files(&repo)[0]).expect("key")).expect("json");
    assert_eq!(
        kf["params"],
        serde_json::json!({"m_kib": 65536, "t": 4, "p": 2})
    );
    repo.backup(b"rows", &[]);
}

fn snapshot_id(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

#[test]
fn a_deleted_newest_snapshot_is_reported_not_silently_replaced() {
    let repo = Repo::new();
    let old = snapshot_id(&repo.backup(b"monday's rows\n", &["--name", "shop"]));
    let new = snapshot_id(&repo.backup(b"tuesday's rows\n", &["--name", "shop"]));
    assert_eq!(repo.restore("latest").ok().stdout, b"tuesday's rows\n");

    // Someone with write access to the store deletes the newest snapshot.
    std::fs::remove_file(repo.path.join("snapshots").join(&new)).expect("rm");
    let r = repo.run(&["restore", "latest", "--name", "shop", "--to", "-"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "older data was given for latest");
    assert!(
        r.stderr.contains(&new[..8]) && r.stderr.contains("no `forget` removed it"),
        "{}",
        r.stderr
    );
    let r = repo.run(&["snapshots"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("MISSING") && r.stderr.contains(&new[..8]),
        "{}",
        r.stderr
    );
    assert!(r.text().contains(&old[..8]), "the others are still listed");
    let r = repo.run(&["check"], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.text().contains(&new[..8]), "{}", r.text());
    // The older snapshot is still there for whoever asks for it by id.
    assert_eq!(repo.restore(&old).ok().stdout, b"monday's rows\n");

    // The next backup names the vanished snapshot as its predecessor, so a client that
    // never saw it (a copy of the repository has its own memory) learns of the loss too.
    repo.backup(b"wednesday's rows\n", &["--name", "shop"]);
    let other = repo.copy();
    let r = other.run(&["check"], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.text().contains(&new[..8]) && r.text().contains("predecessor"),
        "{}",
        r.text()
    );
}

#[test]
fn forget_is_not_mistaken_for_a_deletion() {
    let repo = Repo::new();
    for night in 0..4 {
        repo.backup(format!("night {night}\n").as_bytes(), &["--name", "shop"]);
    }
    repo.run(&["forget", "--keep-last", "1"], None).ok();
    assert_eq!(repo.snapshot_ids().len(), 1);
    repo.run(&["check"], None).ok();
    repo.run(&["snapshots"], None).ok();
    assert_eq!(repo.restore("latest").ok().stdout, b"night 3\n");
    repo.backup(b"night 4\n", &["--name", "shop"]);
    repo.copy().run(&["check"], None).ok();
    // The client's memory is private to its user.
    let seen = walk(&repo.dir.path().join("client"));
    assert!(!seen.is_empty(), "no client state was written");
    for f in seen {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&f).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is readable by others", f.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn deleting_the_newest_policy_does_not_bring_an_old_one_back_silently() {
    let repo = Repo::new();
    repo.run(&["policy", "--keep-daily", "7"], None).ok();
    let old: Vec<_> = std::fs::read_dir(repo.path.join("policy"))
        .expect("policy dir")
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).expect("read")))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    repo.run(
        &["policy", "--keep-daily", "30", "--keep-monthly", "12"],
        None,
    )
    .ok();
    // Someone with write access removes the new policy and puts the old, laxer one back.
    for e in std::fs::read_dir(repo.path.join("policy"))
        .expect("dir")
        .flatten()
    {
        std::fs::remove_file(e.path()).expect("rm");
    }
    for (name, bytes) in &old {
        std::fs::write(repo.path.join("policy").join(name), bytes).expect("restore old");
    }
    for args in [&["policy"][..], &["forget"]] {
        let r = repo.run(args, None);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("older than the one this client saw"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // Setting it again is the way out.
    repo.run(&["policy", "--keep-daily", "30"], None).ok();
    repo.run(&["forget", "--dry-run"], None).ok();
}
