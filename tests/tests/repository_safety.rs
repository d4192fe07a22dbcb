//! A repository no single damaged file or careless command takes hostage, chained as an
//! operator meets it:
//! - `latest` without `--name` in a repository of several sources is refused, naming them;
//!   with `--name` the command says which snapshot it chose;
//! - a damaged snapshot manifest: the others still restore, `forget ID` removes it, then
//!   `prune` and `check` pass;
//! - a damaged key file: `key list` shows it, `key remove` removes it, `check` passes;
//! - a backup running on the host and a prune in another PID namespace (a container with
//!   the host's name): prune waits instead of taking the live lock over, the backup
//!   completes and restores.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbvault_tests::{bin, random_bytes, Repo, PASSWORD};

fn id_of(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

#[test]
fn latest_of_several_sources_is_refused_and_the_choice_is_said() {
    let repo = Repo::new();
    let dump = b"-- not a real dump, a stream\n".repeat(100);
    let a = repo.backup(&dump, &["--name", "shop"]);
    let app = random_bytes(5000, 1);
    repo.backup(&app, &["--name", "app"]);
    let r = repo.run(&["restore", "latest", "--to", "-"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("app, shop") && r.stderr.contains("--name"),
        "{}",
        r.stderr
    );
    let r = repo
        .run(&["restore", "latest", "--name", "shop", "--to", "-"], None)
        .ok();
    assert_eq!(r.stdout, dump);
    let short = &id_of(&a)[..8];
    assert!(
        r.stderr.contains("latest is snapshot") && r.stderr.contains(short),
        "{}",
        r.stderr
    );
}

#[test]
fn a_damaged_snapshot_is_forgotten_by_id_and_the_rest_restores() {
    let repo = Repo::new();
    let one = random_bytes(300_000, 2);
    let two = random_bytes(300_000, 4);
    let a = id_of(&repo.backup(&one, &["--name", "one"]));
    let b = id_of(&repo.backup(&two, &["--name", "two"]));
    std::fs::write(repo.path.join("snapshots").join(&b), b"garbage").expect("damage");
    // The intact one restores; prune refuses, naming the way out.
    assert_eq!(repo.restore(&a).ok().stdout, one);
    let r = repo.run(&["prune"], None);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("dbvault forget ID"), "{}", r.stderr);
    let r = repo.run(&["forget", &b[..10]], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.text().contains("damaged"), "{}", r.text());
    repo.run(&["prune"], None).ok();
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(c.code, Some(0), "{} {}", c.text(), c.stderr);
    assert_eq!(repo.restore(&a).ok().stdout, one);
}

#[test]
fn a_damaged_key_file_is_listed_and_removed() {
    let repo = Repo::new();
    let data = random_bytes(10_000, 4);
    let a = id_of(&repo.backup(&data, &["--name", "s"]));
    let bad = "ab".repeat(32);
    std::fs::write(repo.path.join("keys").join(&bad), b"{not a key").expect("damage");
    let c = repo.run(&["check"], None);
    assert_ne!(c.code, Some(0));
    assert!(
        format!("{}{}", c.text(), c.stderr).contains(&format!("dbvault key remove {bad}")),
        "{} {}",
        c.text(),
        c.stderr
    );
    let l = repo.run(&["key", "list"], None).ok().text();
    assert!(l.contains("DAMAGED") && l.contains(&bad[..8]), "{l}");
    repo.run(&["key", "remove", &bad[..12]], None).ok();
    assert_eq!(repo.run(&["check"], None).code, Some(0));
    // The last good key is never removed.
    let l = repo.run(&["key", "list", "--json"], None).ok().json();
    let only = l[0]["id"].as_str().expect("id").to_string();
    let r = repo.run(&["key", "remove", &only, "--force"], None);
    assert_eq!(r.code, Some(1));
    assert_eq!(repo.restore(&a).ok().stdout, data);
}

#[test]
fn a_prune_in_another_pid_namespace_waits_for_the_hosts_backup() {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "unshare --pid --fork --mount-proc needs root (util-linux's unshare): run the tests as root"
    );
    let repo = Repo::new();
    let data = random_bytes(2_000_000, 5);
    let src = repo.dir.path().join("src");
    std::fs::write(&src, &data).expect("src");
    // A backup whose producer takes a few seconds: its lock is live all along.
    let producer = format!("sleep 4; cat {}", src.display());
    let mut backup = repo.cmd(&["backup", "--command", &producer, "--name", "slow", "--json"]);
    backup.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = backup.spawn().expect("backup");
    std::thread::sleep(Duration::from_millis(1500));
    // The prune in its own PID namespace, where the backup's process id means nothing.
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .arg("--repo")
        .arg(&repo.path)
        .args(["--lock-wait", "1s", "prune"])
        .env("DBVAULT_PASSWORD", PASSWORD)
        .env("DBVAULT_CACHE_DIR", repo.dir.path().join("ns-client"))
        .output()
        .expect("unshare prune");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "prune took the live lock: {stderr}");
    assert!(
        !stderr.contains("taking over") && stderr.contains("backup"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it gave up after --lock-wait"
    );
    let done = child.wait_with_output().expect("backup");
    assert!(
        done.status.success(),
        "the backup died: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&done.stdout).expect("json");
    assert_eq!(repo.restore(&id_of(&snap)).ok().stdout, data);
    // Now prune runs.
    repo.run(&["prune"], None).ok();
}

/// Files a command left that it should not have: locks and temp files, anywhere under
/// `root`.
fn debris(root: &std::path::Path) -> Vec<String> {
    dbvault_tests::tree(root)
        .into_keys()
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with(".tmp-") || p.parent().is_some_and(|d| d.ends_with("locks"))
        })
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
#[allow(unsafe_code)]
fn ctrl_c_at_any_moment_leaves_no_lock_and_no_temp_file() {
    let repo = Repo::new();
    let other = Repo::new();
    let data = random_bytes(48 << 20, 6);
    let src = repo.dir.path().join("src");
    std::fs::write(&src, &data).expect("src");
    repo.backup(&random_bytes(8 << 20, 8), &["--name", "base"]);
    repo.backup(&data, &["--name", "big"]);
    // From the key derivation (about 60 ms) to the middle of the work.
    let delays = [30u64, 80, 120, 170];
    let sources: Vec<std::path::PathBuf> = (0..delays.len())
        .map(|i| {
            let p = repo.dir.path().join(format!("src{i}"));
            std::fs::write(&p, random_bytes(24 << 20, 100 + 2 * i as u64)).expect("src");
            p
        })
        .collect();
    let round = std::cell::Cell::new(0usize);
    let ops: Vec<(&str, Box<dyn Fn() -> Command>)> = vec![
        (
            "backup",
            Box::new(|| {
                // New data each time: a backup of what is stored already is quick.
                let mut c = repo.cmd(&["backup", "-", "--name", "big"]);
                let i = round.get();
                round.set(i + 1);
                c.stdin(std::fs::File::open(&sources[i % sources.len()]).expect("src"));
                c
            }),
        ),
        (
            "restore",
            Box::new(|| repo.cmd(&["restore", "latest", "--name", "big", "--to", "-"])),
        ),
        (
            "copy",
            Box::new(|| {
                let mut c = repo.cmd(&["copy", "--to-repo", &other.path.display().to_string()]);
                c.env("DBVAULT_TO_PASSWORD", PASSWORD);
                c
            }),
        ),
        (
            "prune",
            Box::new(|| {
                // Something to prune each time: forget all but the newest of each source.
                let _ = dbvault_tests::run_cmd(repo.cmd(&["forget", "--keep-last", "1"]), None);
                repo.cmd(&["prune", "--repack-unused", "0"])
            }),
        ),
    ];
    let mut interrupted = Vec::new();
    for (what, make) in &ops {
        for d in delays {
            let mut c = make();
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            let child = c.spawn().expect("spawn");
            std::thread::sleep(Duration::from_millis(d));
            // SAFETY: kill only sends a signal to our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let out = child.wait_with_output().expect("wait");
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            assert!(
                code == Some(130) || code == Some(0),
                "{what} after {d} ms: {code:?} {err}"
            );
            if code == Some(130) {
                assert!(err.contains("interrupted (SIGINT)"), "{what}: {err}");
                interrupted.push(format!("{what}@{d}ms"));
            }
            for r in [&repo, &other] {
                let left = debris(&r.path);
                assert!(left.is_empty(), "{what} after {d} ms left {left:?}");
            }
            // The next command starts at once.
            let t = Instant::now();
            let c = repo.run(&["--lock-wait", "1s", "check"], None);
            assert_eq!(
                c.code,
                Some(0),
                "{what} after {d} ms: {} {}",
                c.text(),
                c.stderr
            );
            assert!(t.elapsed() < Duration::from_secs(5));
        }
    }
    eprintln!("interrupted: {interrupted:?}");
    assert!(
        interrupted.len() >= 8,
        "too few commands were interrupted mid-way: {interrupted:?}"
    );
    // And the backup, uninterrupted, still works.
    let s = repo.backup(&data, &["--name", "big"]);
    assert_eq!(repo.restore(&id_of(&s)).ok().stdout, data);
}

fn index_files(repo: &Repo) -> std::collections::BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(repo.path.join("index")) else {
        return Default::default();
    };
    rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn a_damaged_index_file_blocks_nothing_and_repair_index_rebuilds_it() {
    let repo = Repo::new();
    let mut snaps = Vec::new();
    let mut files_of = Vec::new();
    for i in 0..3u64 {
        let before = index_files(&repo);
        let data = random_bytes(3_000_000, 40 + 2 * i);
        let id = id_of(&repo.backup(&data, &["--name", &format!("s{i}")]));
        let new: Vec<String> = index_files(&repo).difference(&before).cloned().collect();
        assert!(!new.is_empty(), "backup {i} wrote no index file");
        snaps.push((id, data));
        files_of.push(new);
    }
    // One of the second backup's index files, emptied.
    let victim = repo.path.join("index").join(&files_of[1][0]);
    std::fs::write(&victim, b"").expect("damage");
    // Every snapshot still restores, the damaged one's too (from the packs' trailers).
    for (id, data) in &snaps {
        let r = repo.restore(id);
        assert_eq!(r.code, Some(0), "{id}: {}", r.stderr);
        assert!(r.stdout == *data, "{id} differs");
    }
    // A backup works; prune refuses, naming the repair; check names it too.
    repo.backup(&random_bytes(100_000, 30), &["--name", "s3"]);
    let p = repo.run(&["prune"], None);
    assert_ne!(p.code, Some(0));
    assert!(p.stderr.contains("repair index"), "{}", p.stderr);
    let c = repo.run(&["check"], None);
    assert_ne!(c.code, Some(0));
    assert!(
        format!("{}{}", c.text(), c.stderr).contains("dbvault repair index"),
        "{} {}",
        c.text(),
        c.stderr
    );
    let dry = repo
        .run(&["repair", "index", "--dry-run"], None)
        .ok()
        .text();
    assert!(dry.contains("would re-index"), "{dry}");
    assert!(victim.exists(), "a dry run changed nothing");
    let r = repo.run(&["repair", "index"], None).ok().text();
    assert!(
        r.contains("re-indexed") && r.contains(&files_of[1][0]),
        "{r}"
    );
    assert!(!victim.exists());
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(c.code, Some(0), "{} {}", c.text(), c.stderr);
    repo.run(&["prune"], None).ok();
    for (id, data) in &snaps {
        assert!(repo.restore(id).ok().stdout == *data, "{id} after repair");
    }
}

/// Processes whose command line starts with `needle` (not dbvault's own, which names it).
fn running(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.starts_with(needle).then_some(cmd)
        })
        .collect()
}

#[test]
#[allow(unsafe_code)]
fn sigterm_during_a_command_backup_stops_the_command_too() {
    let repo = Repo::new();
    // A producer that writes, then lingers (as a pg_dump holding its connection would).
    let marker = "37.0251";
    let cmd = format!("head -c 3000000 /dev/urandom; sleep {marker}");
    let mut c = repo.cmd(&["backup", "--command", &cmd, "--name", "c"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    let t = Instant::now();
    while running(&format!("sleep {marker}")).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill only sends a signal to our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped the command it ran"), "{err}");
    let t = Instant::now();
    while !running(&format!("sleep {marker}")).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the command outlived dbvault: {:?}",
            running(&format!("sleep {marker}"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(debris(&repo.path).is_empty());
    assert!(repo.snapshot_ids().is_empty(), "no snapshot was recorded");
}
