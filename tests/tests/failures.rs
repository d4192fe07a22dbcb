//! Bad input and failures: one clear line, the right exit code, nothing lost or changed.

use dbvault_tests::{dump_like, random_bytes, Repo};

fn one_line(stderr: &str) -> &str {
    // The note naming the snapshot `latest` resolved to is not part of the error.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("dbvault: latest is snapshot"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one line, got {stderr:?}");
    lines[0]
}

#[test]
fn wrong_passphrase_is_one_line_exit_1_and_changes_nothing() {
    let repo = Repo::new();
    repo.backup(b"data", &[]);
    let before = repo.files();
    for args in [
        &["snapshots"][..],
        &["restore", "latest", "--to", "-"],
        &["backup", "-"],
        &["stats"],
    ] {
        let mut c = repo.cmd(args);
        c.env("DBVAULT_PASSWORD", "not the passphrase");
        let r = dbvault_tests::run_cmd(c, Some(b"new data"));
        assert_eq!(r.code, Some(1), "{args:?}");
        assert!(
            one_line(&r.stderr).contains("wrong passphrase"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty());
    }
    assert!(
        repo.files() == before,
        "a failed command changed the repository"
    );
}

#[test]
fn missing_repository_is_one_line_exit_1_and_creates_nothing() {
    let repo = Repo::uninit();
    for args in [
        &["snapshots"][..],
        &["backup", "-"],
        &["restore", "latest", "--to", "-"],
    ] {
        let r = repo.run(args, Some(b"x"));
        assert_eq!(r.code, Some(1));
        assert!(
            one_line(&r.stderr).contains("no repository at"),
            "{}",
            r.stderr
        );
    }
    assert!(
        !repo.path.exists(),
        "a failed command created the repository directory"
    );
    let mut c = std::process::Command::new(dbvault_tests::bin());
    c.args(["snapshots"]).env_remove("DBVAULT_REPO");
    let r = dbvault_tests::run_cmd(c, None);
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r.stderr).contains("--repo"), "{}", r.stderr);
}

#[test]
fn init_twice_is_refused() {
    let repo = Repo::new();
    let before = repo.files();
    let r = repo.run(&["init"], None);
    assert_eq!(r.code, Some(1));
    assert!(
        one_line(&r.stderr).contains("already exists"),
        "{}",
        r.stderr
    );
    assert!(repo.files() == before);
}

#[test]
fn unknown_and_ambiguous_snapshot_ids() {
    let repo = Repo::new();
    // Back up until two snapshot ids share a first hex digit (at most 17 by pigeonhole).
    let mut ids: Vec<String> = Vec::new();
    let prefix = loop {
        let b = repo.backup(format!("stream {}", ids.len()).as_bytes(), &[]);
        let id = b["snapshot_id"].as_str().expect("id").to_string();
        if let Some(other) = ids.iter().find(|o| o[..1] == id[..1]) {
            break other[..1].to_string();
        }
        ids.push(id);
    };
    let before = repo.files();
    let r = repo.restore(&prefix);
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r.stderr).contains("ambiguous"), "{}", r.stderr);
    let r = repo.restore("0123456789abcdef0123");
    assert_eq!(r.code, Some(1));
    assert!(
        one_line(&r.stderr).contains("no snapshot matches"),
        "{}",
        r.stderr
    );
    let r = repo.restore("not-an-id");
    assert_eq!(r.code, Some(1));
    assert!(
        one_line(&r.stderr).contains("no snapshot matches"),
        "{}",
        r.stderr
    );
    let empty = Repo::new();
    let r = empty.restore("latest");
    assert_eq!(r.code, Some(1));
    assert!(one_line(&r.stderr).contains("no snapshots"), "{}", r.stderr);
    // A full id and a unique prefix work.
    let full = &ids[0];
    assert_eq!(repo.restore(full).ok().stdout, b"stream 0");
    assert!(repo.files() == before);
}

#[test]
fn failing_or_killed_command_records_no_snapshot() {
    let repo = Repo::new();
    repo.backup(b"earlier", &[]);
    let before = repo.snapshot_ids();
    let r = repo.run(
        &[
            "backup",
            "--command",
            "head -c 3000000 /dev/urandom; exit 3",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        one_line(&r.stderr).contains("exited with status 3"),
        "{}",
        r.stderr
    );
    let r = repo.run(
        &[
            "backup",
            "--command",
            "head -c 3000000 /dev/urandom; kill -9 $$",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        one_line(&r.stderr).contains("killed by signal 9"),
        "{}",
        r.stderr
    );
    let r = repo.run(&["backup", "--command", "exec /nonexistent/program"], None);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        repo.snapshot_ids(),
        before,
        "a failed command left a snapshot"
    );
    assert_eq!(repo.restore("latest").ok().stdout, b"earlier");
    repo.backup(b"next", &[]);
    assert_eq!(repo.restore("latest").ok().stdout, b"next");
}

/// Flips one bit at `pos` of `file`, runs a restore, flips it back.
fn restore_with_flip(repo: &Repo, file: &std::path::Path, pos: usize, want: &[u8]) {
    let orig = std::fs::read(file).expect("read");
    let mut bad = orig.clone();
    bad[pos] ^= 0x10;
    std::fs::write(file, &bad).expect("write");
    let r = repo.restore("latest");
    std::fs::write(file, &orig).expect("write back");
    let detected = r.code != Some(0) || r.stderr.contains("warning");
    assert!(
        detected,
        "flip at {pos} of {} went unnoticed",
        file.display()
    );
    assert!(
        want.starts_with(&r.stdout),
        "flip at {pos} of {} gave wrong output",
        file.display()
    );
    if r.code != Some(0) {
        one_line(&r.stderr);
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected_and_never_gives_wrong_output() {
    let repo = Repo::new();
    let mut data = dump_like(3 << 20, 11);
    data.extend_from_slice(&random_bytes(1 << 20, 12));
    repo.backup(&data, &[]);
    let files = repo.files();
    let targets: Vec<_> = files
        .keys()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("/data/") || s.contains("/index/") || s.contains("/snapshots/")
        })
        .cloned()
        .collect();
    assert!(targets.len() >= 3, "{targets:?}");
    for f in &targets {
        let len = files[f].len();
        let mut positions: Vec<usize> = (0..16).map(|i| i * len / 16).collect();
        positions.extend([len - 1, len - 3, len - 5, len - 40, 0, 30]);
        for pos in positions {
            restore_with_flip(&repo, f, pos, &data);
        }
    }
    assert!(repo.restore("latest").ok().stdout == data);
}

#[test]
fn a_missing_pack_or_index_is_a_clear_error() {
    let repo = Repo::new();
    let data = dump_like(2 << 20, 13);
    repo.backup(&data, &[]);
    for dir in ["data", "index"] {
        let victim = repo
            .files()
            .into_keys()
            .find(|p| p.to_string_lossy().contains(&format!("/{dir}/")))
            .expect("file");
        let saved = std::fs::read(&victim).expect("read");
        std::fs::remove_file(&victim).expect("rm");
        let r = repo.restore("latest");
        // Damage: exit 3 (docs/exit-codes.md).
        assert_eq!(r.code, Some(3), "{dir}: {}", r.stderr);
        let line = one_line(&r.stderr);
        assert!(
            line.contains("missing") || line.contains("not found"),
            "{line}"
        );
        assert!(data.starts_with(&r.stdout));
        std::fs::write(&victim, saved).expect("restore file");
    }
    assert!(repo.restore("latest").ok().stdout == data);
}

#[test]
fn damage_to_a_delta_base_is_detected_when_restoring_the_delta() {
    let repo = Repo::new();
    let data = dump_like(2 << 20, 41);
    repo.backup(&data, &["--name", "db"]);
    let first_packs: Vec<_> = repo
        .files()
        .into_keys()
        .filter(|p| p.to_string_lossy().contains("/data/"))
        .collect();
    let mut edited = data.clone();
    edited[1_000_000] ^= 1;
    let b = repo.backup(&edited, &["--name", "db"]);
    let id = b["snapshot_id"].as_str().expect("id").to_string();
    assert!(
        b["bytes_added"].as_u64().expect("n") < 20_000,
        "the edit was not stored as a delta"
    );
    for pack in &first_packs {
        let orig = std::fs::read(pack).expect("read");
        // Flip bits across the blob area of the base pack.
        for k in 1..8 {
            let mut bad = orig.clone();
            let pos = k * (orig.len() - 100) / 8;
            bad[pos] ^= 0x04;
            std::fs::write(pack, &bad).expect("write");
            let r = repo.restore(&id);
            assert!(
                r.code != Some(0) || r.stderr.contains("warning"),
                "damage at {pos} went unnoticed"
            );
            assert!(
                edited.starts_with(&r.stdout),
                "wrong output with damage at {pos}"
            );
        }
        std::fs::write(pack, &orig).expect("write back");
    }
    assert!(repo.restore(&id).ok().stdout == edited);
}

#[test]
fn a_damaged_snapshot_does_not_hide_the_others() {
    let repo = Repo::new();
    repo.backup(b"night one", &["--name", "db"]);
    let old = repo.snapshot_ids()[0].clone();
    repo.backup(b"night two", &["--name", "db"]);
    let path = repo.path.join("snapshots").join(&old);
    let mut bytes = std::fs::read(&path).expect("read");
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let r = repo.run(&["snapshots", "--json"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("damaged"),
        "{}",
        r.stderr
    );
    assert_eq!(r.json().as_array().expect("array").len(), 1);
    assert_eq!(repo.restore("latest").ok().stdout, b"night two");
    let r = repo.restore(&old);
    assert_eq!(r.code, Some(3));
    assert!(one_line(&r.stderr).contains("damaged"), "{}", r.stderr);
}

/// A tmpfs of a few MiB on a temp dir, unmounted when dropped: a disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "mounting a {mib} MiB tmpfs failed: the full-disk test needs root (`.ci/run` runs \
             the tests as root)"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_in_one_line_and_loses_nothing() {
    let disk = SmallDisk::new(12);
    let dir = tempfile::tempdir_in(disk.dir.path()).expect("tempdir");
    let repo = Repo {
        path: dir.path().join("repo"),
        dir,
    };
    repo.run(&["init"], None).ok();
    let first = random_bytes(4 << 20, 1);
    repo.backup(&first, &[]);
    let before = repo.files();

    // Packs are written a MiB at a time: the disk fills in the middle of one.
    let r = repo.run(&["backup", "-"], Some(&random_bytes(16 << 20, 2)));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let line = one_line(&r.stderr);
    assert!(
        line.contains("no snapshot recorded") && line.contains("No space left on device"),
        "{line}"
    );
    // Nothing of the failed backup is left, not even its temp files; the first one
    // restores and checks.
    assert!(
        repo.files() == before,
        "the failed backup left files behind"
    );
    assert_eq!(repo.snapshot_ids().len(), 1);
    assert!(repo.restore("latest").ok().stdout == first);
    repo.run(&["check", "--read-data"], None).ok();
}
