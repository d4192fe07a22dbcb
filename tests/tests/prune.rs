//! Prune and locks: kept snapshots restore byte for byte after `forget --prune`, a backup
//! and a prune never overlap (whichever starts first), a prune killed at any moment loses
//! nothing and the next one cleans up, stale locks are taken over and live ones waited for.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dbvault_tests::{dump_like, random_bytes, Repo, Run};

/// Bytes of the packs in a repository.
fn data_bytes(repo: &Repo) -> u64 {
    dbvault_tests::tree(&repo.path.join("data"))
        .values()
        .map(|v| v.len() as u64)
        .sum()
}

/// Version `k` of a changing stream: small edits everywhere (chunks become deltas) and a
/// few rewritten regions (whole new chunks).
fn versions(n: usize, size: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut v = dump_like(size, seed);
    let mut out = vec![v.clone()];
    for k in 1..n {
        let r = random_bytes(4096, seed + k as u64);
        for e in 0..120 {
            let at = (u32::from_le_bytes([r[4 * e], r[4 * e + 1], r[4 * e + 2], r[4 * e + 3]])
                as usize)
                % (v.len() - 16);
            v[at..at + 6].copy_from_slice(b"EDITED");
        }
        for e in 0..3 {
            let at = (u32::from_le_bytes([r[600 + 4 * e], r[601 + 4 * e], r[602 + 4 * e], 0])
                as usize)
                % (v.len() - 300_000);
            let fresh = random_bytes(200_000, seed * 31 + (k * 7 + e) as u64);
            v[at..at + 200_000].copy_from_slice(&fresh);
        }
        out.push(v.clone());
    }
    out
}

/// A repository with `data.len()` daily snapshots of source `db`.
fn repo_with(data: &[Vec<u8>], pack_size: &str) -> Repo {
    let repo = Repo::uninit();
    repo.run(&["init", "--pack-size", pack_size], None).ok();
    for (k, d) in data.iter().enumerate() {
        let t = format!("2026-10-{:02}T02:00:00+00:00", k + 1);
        repo.backup(d, &["--name", "db", "--time", &t]);
    }
    repo
}

/// Every snapshot restores to the version its time says.
fn assert_all_restore(repo: &Repo, data: &[Vec<u8>], context: &str) {
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    for s in list.as_array().expect("array") {
        let day: usize = s["time"].as_str().expect("time")[8..10]
            .parse()
            .expect("day");
        let id = s["id"].as_str().expect("id");
        let out = repo.restore(id);
        assert_eq!(out.code, Some(0), "{context}: restore {id}: {}", out.stderr);
        assert!(
            out.stdout == data[day - 1],
            "{context}: snapshot of day {day} restores wrong bytes"
        );
    }
}

fn prune_json(repo: &Repo) -> serde_json::Value {
    repo.run(&["prune", "--json"], None).ok().json()
}

fn assert_nothing_to_do(repo: &Repo) {
    let r = prune_json(repo);
    for k in ["packs_deleted", "packs_repacked", "index_files_removed"] {
        assert_eq!(r[k], 0, "second prune still had work: {r}");
    }
}

/// Complete lock files (not the temporary file of a lock being written).
fn lock_files(repo: &Repo) -> usize {
    std::fs::read_dir(repo.path.join("locks")).map_or(0, |d| {
        d.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
            .count()
    })
}

fn wait_for_lock(repo: &Repo, child: &mut Child) {
    let t = Instant::now();
    while lock_files(repo) == 0 {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished before locking"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "no lock appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(child: &Child, sig: &str) {
    // The shell's built-in kill: no dependency on procps.
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("kill {sig} {}", child.id()))
        .status()
        .expect("kill");
    assert!(st.success());
}

fn spawn(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = repo.cmd(args);
    c.envs(env.iter().copied());
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn done(child: Child) -> Run {
    dbvault_tests::finish(child.wait_with_output().expect("wait"))
}

#[test]
fn forget_prune_keeps_every_kept_snapshot_exact() {
    let data = versions(12, 6 << 20, 5);
    let repo = repo_with(&data, "256KiB");
    let before = data_bytes(&repo);
    let v = repo
        .run(
            &[
                "forget",
                "--keep-last",
                "2",
                "--keep-weekly",
                "3",
                "--prune",
                "--json",
            ],
            None,
        )
        .ok()
        .json();
    let kept = v["keep"].as_array().expect("keep").len();
    assert_eq!(kept, 3, "{v}");
    assert_eq!(v["forget"].as_array().expect("forget").len(), 9);
    let p = &v["prune"];
    assert!(p["packs_deleted"].as_u64() > Some(0), "{p}");
    assert!(
        p["packs_repacked"].as_u64() > Some(0),
        "no pack was repacked: {p}"
    );
    let after = data_bytes(&repo);
    assert!(after < before, "{after} >= {before}");
    assert_eq!(p["bytes_after"].as_u64(), Some(after));
    assert_eq!(p["bytes_freed"].as_u64(), Some(before - after));
    assert_all_restore(&repo, &data, "after forget --prune");
    assert_nothing_to_do(&repo);
    // New backups dedup against what is left and restore too.
    repo.backup(
        &data[4],
        &["--name", "db", "--time", "2026-10-30T02:00:00+00:00"],
    );
    let mut more = data.clone();
    more.resize(30, Vec::new());
    more[29] = data[4].clone();
    assert_all_restore(&repo, &more, "after a backup following the prune");
    assert_eq!(lock_files(&repo), 0, "a lock was left behind");
}

/// A process killed while writing its report leaves `reports/.tmp-…`; the next prune must
/// remove it even when there is no garbage to collect.
#[test]
fn a_prune_with_nothing_to_do_still_removes_temporary_files() {
    let data = versions(2, 1_000_000, 11);
    let repo = repo_with(&data, "64KiB");
    repo.run(&["prune"], None).ok();
    let reports = repo.path.join("reports");
    std::fs::create_dir_all(&reports).expect("reports/");
    let stray = reports.join(".tmp-0123456789abcdef");
    std::fs::write(&stray, b"half a report").expect("stray temp file");
    assert_nothing_to_do(&repo);
    assert!(!stray.exists(), "{} is still there", stray.display());
    assert_all_restore(&repo, &data, "after removing a temporary file");
}

#[test]
fn killed_prune_loses_nothing_and_the_next_one_cleans_up() {
    let data = versions(12, 8 << 20, 9);
    let template = repo_with(&data, "64KiB");
    template.run(&["forget", "--keep-last", "3"], None).ok();
    // When a prune here takes its lock and when it ends, to spread the kills over the
    // time it works (Argon2 and start-up come first).
    let probe = template.copy();
    let t = Instant::now();
    let mut child = spawn(&probe, &["prune"], &[]);
    wait_for_lock(&probe, &mut child);
    let locked = t.elapsed();
    assert_eq!(done(child).code, Some(0));
    let full = t.elapsed();
    assert_all_restore(&probe, &data, "uninterrupted prune");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    eprintln!("prune kill seed: {seed}, lock after {locked:?}, done after {full:?}");
    let r = random_bytes(64, seed);
    let mut took_over = 0;
    let mut killed_alive = 0;
    let files = |p: &Path| std::fs::read_dir(p).map_or(0, |d| d.count());
    let (index_before, index_after) = (
        files(&template.path.join("index")),
        files(&probe.path.join("index")),
    );
    for round in 0..7 {
        let repo = template.copy();
        let frac = f64::from(r[round]) / 255.0;
        let mut child = spawn(&repo, &["prune"], &[]);
        // Rounds 0-2 kill at a random time (0: from the start; 1, 2: once it holds its
        // lock); 3-6 when the index files show it in a given phase: new index written,
        // old ones being removed, all old ones removed (packs being deleted).
        let what = match round {
            0 => {
                std::thread::sleep(full.mul_f64(frac));
                format!("after {:?}", full.mul_f64(frac))
            }
            1 | 2 => {
                wait_for_lock(&repo, &mut child);
                std::thread::sleep((full - locked).mul_f64(frac));
                format!("{:?} after locking", (full - locked).mul_f64(frac))
            }
            _ => {
                let idx = repo.path.join("index");
                let mut most = 0;
                loop {
                    let n = files(&idx);
                    most = most.max(n);
                    let hit = match round {
                        3 => n > index_before,
                        4 => n < most && n > index_after,
                        _ => most > index_before && n <= index_after,
                    };
                    if hit || child.try_wait().expect("wait").is_some() {
                        break;
                    }
                }
                if round == 6 {
                    // Into the deletions.
                    std::thread::sleep(Duration::from_micros(500 + (3000.0 * frac) as u64));
                }
                format!(
                    "in phase {round} (index files: {}, most {most})",
                    files(&idx)
                )
            }
        };
        if child.try_wait().expect("wait").is_none() {
            killed_alive += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let ctx = format!("round {round}, killed {what}");
        eprintln!(
            "{ctx}: {} packs, {} index files left (clean prune: {} -> {} index files)",
            dbvault_tests::tree(&repo.path.join("data")).len(),
            files(&repo.path.join("index")),
            index_before,
            index_after,
        );
        if lock_files(&repo) > 0 {
            // Killed holding its lock: the next command takes it over and says so.
            let r = repo.restore("latest");
            assert_eq!(r.code, Some(0), "{ctx}: {}", r.stderr);
            assert!(
                r.stderr
                    .contains("taking over a stale lock: prune (exclusive lock)")
                    && r.stderr.contains("is gone"),
                "{ctx}: {}",
                r.stderr
            );
            took_over += 1;
        }
        assert_all_restore(&repo, &data, &ctx);
        let out = repo.run(&["prune", "--json"], None);
        assert_eq!(out.code, Some(0), "{ctx}: {}", out.stderr);
        assert_all_restore(&repo, &data, &ctx);
        // Blobs copied by an interrupted repack exist twice until one copy's pack goes:
        // that may take one more prune, never more.
        if prune_json(&repo)["packs_deleted"] != 0 {
            eprintln!("{ctx}: a further prune removed duplicate copies");
            assert_all_restore(&repo, &data, &ctx);
        }
        assert_nothing_to_do(&repo);
        let dry = repo
            .run(&["prune", "--dry-run", "--json"], None)
            .ok()
            .json();
        assert_eq!(dry["packs_unindexed"], 0, "{ctx}: {dry}");
        let temps = dbvault_tests::tree(&repo.path)
            .into_keys()
            .filter(|p| {
                p.to_string_lossy().contains("/.tmp-") && !p.starts_with(repo.path.join("locks"))
            })
            .collect::<Vec<_>>();
        assert!(temps.is_empty(), "{ctx}: temporary files left: {temps:?}");
        // Interrupted repacks may group blobs differently; the size must still match.
        let (got, want) = (data_bytes(&repo), data_bytes(&probe));
        assert!(
            got <= want + want / 20,
            "{ctx}: {got} bytes left, {want} after a clean prune"
        );
    }
    assert!(
        took_over > 0,
        "no kill landed while the prune held its lock"
    );
    assert!(
        killed_alive >= 4,
        "only {killed_alive} kills landed before the prune ended"
    );
}

#[test]
fn prune_waits_for_a_running_backup() {
    let data = versions(4, 3 << 20, 13);
    let repo = repo_with(&data, "256KiB");
    repo.run(&["forget", "--keep-last", "1"], None).ok();
    // The running backup stores day 1's bytes again: it dedups against blobs that only a
    // forgotten snapshot references, exactly what the prune would delete.
    let f = repo.dir.path().join("day1");
    std::fs::write(&f, &data[0]).expect("write");
    let cmd = format!("cat {}; sleep 3", f.display());
    let mut backup = spawn(
        &repo,
        &[
            "backup",
            "--command",
            &cmd,
            "--name",
            "db",
            "--time",
            "2026-10-01T03:00:00+00:00",
        ],
        &[],
    );
    wait_for_lock(&repo, &mut backup);
    let t = Instant::now();
    let quick = repo.run(&["prune", "--lock-wait", "1s"], None);
    // Worth retrying later: 75 (docs/exit-codes.md).
    assert_eq!(quick.code, Some(75));
    assert!(
        quick
            .stderr
            .contains("the repository is in use: backup (shared lock) by process"),
        "{}",
        quick.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    let prune = repo.run(&["prune", "--json"], None);
    assert_eq!(prune.code, Some(0), "{}", prune.stderr);
    assert!(
        prune
            .stderr
            .contains("waiting for the repository: in use by backup"),
        "{}",
        prune.stderr
    );
    let b = done(backup);
    assert_eq!(b.code, Some(0), "{}", b.stderr);
    assert_all_restore(&repo, &data, "backup before prune");
    assert_eq!(repo.snapshot_ids().len(), 2);
    assert_nothing_to_do(&repo);
}

#[test]
fn backup_waits_for_a_running_prune_and_restore_says_why() {
    let data = versions(6, 4 << 20, 17);
    let repo = repo_with(&data, "64KiB");
    repo.run(&["forget", "--keep-last", "1"], None).ok();
    let mut prune = spawn(&repo, &["prune"], &[]);
    wait_for_lock(&repo, &mut prune);
    signal(&prune, "-STOP");
    assert!(prune.try_wait().expect("wait").is_none());
    assert!(
        lock_files(&repo) > 0,
        "the prune finished before it could be paused"
    );
    // Day 1's bytes again: their blobs are what the paused prune is about to delete.
    let f = repo.dir.path().join("day1");
    std::fs::write(&f, &data[0]).expect("write");
    let cmd = format!("cat {}", f.display());
    let backup = spawn(
        &repo,
        &[
            "backup",
            "--command",
            &cmd,
            "--name",
            "db",
            "--time",
            "2026-10-01T03:00:00+00:00",
        ],
        &[],
    );
    let restore = repo.run(
        &["restore", "latest", "--to", "-", "--lock-wait", "1s"],
        None,
    );
    assert_eq!(restore.code, Some(75));
    assert!(
        restore.stderr.contains("in use: prune (exclusive lock)"),
        "{}",
        restore.stderr
    );
    std::thread::sleep(Duration::from_millis(500));
    signal(&prune, "-CONT");
    let p = done(prune);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    let b = done(backup);
    assert_eq!(b.code, Some(0), "{}", b.stderr);
    assert!(
        b.stderr
            .contains("waiting for the repository: in use by prune (exclusive lock)"),
        "{}",
        b.stderr
    );
    assert_all_restore(&repo, &data, "prune before backup");
    assert_nothing_to_do(&repo);
}

#[test]
fn stale_locks_are_taken_over_and_a_stalled_backup_records_nothing() {
    let data = versions(3, 2 << 20, 23);
    let repo = repo_with(&data, "256KiB");
    let f = repo.dir.path().join("new");
    std::fs::write(&f, random_bytes(3 << 20, 99)).expect("write");
    // A backup killed while it holds its lock: the next prune takes the lock over.
    let cmd = format!("cat {}; sleep 30", f.display());
    let mut killed = spawn(&repo, &["backup", "--command", &cmd, "--name", "k"], &[]);
    wait_for_lock(&repo, &mut killed);
    std::thread::sleep(Duration::from_millis(300));
    let _ = killed.kill();
    let _ = killed.wait();
    let p = repo.run(&["prune"], None).ok();
    assert!(
        p.stderr
            .contains("taking over a stale lock: backup (shared lock)")
            && p.stderr.contains("is gone"),
        "{}",
        p.stderr
    );
    // A backup stalled (SIGSTOP) past the staleness limit: the prune takes over, and the
    // backup, resumed, notices and records nothing.
    let cmd = format!("cat {}; sleep 2", f.display());
    let mut stalled = spawn(&repo, &["backup", "--command", &cmd, "--name", "s"], &[]);
    wait_for_lock(&repo, &mut stalled);
    std::thread::sleep(Duration::from_millis(300));
    signal(&stalled, "-STOP");
    let mut c = repo.cmd(&["prune"]);
    c.env("DBVAULT_LOCK_STALE", "2s");
    let p = dbvault_tests::run_cmd(c, None).ok();
    assert!(
        p.stderr.contains("taking over a stale lock: backup") && p.stderr.contains("not refreshed"),
        "{}",
        p.stderr
    );
    signal(&stalled, "-CONT");
    let s = done(stalled);
    assert_eq!(s.code, Some(75), "{}", s.stderr);
    assert!(
        s.stderr.contains("lost the repository lock"),
        "{}",
        s.stderr
    );
    let names: Vec<String> = repo
        .run(&["snapshots", "--json"], None)
        .ok()
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, vec!["db", "db", "db"]);
    assert_all_restore(&repo, &data, "after a stalled backup");
    // Whatever the stalled backup left is garbage the next prune removes; later backups work.
    repo.run(&["prune"], None).ok();
    assert_nothing_to_do(&repo);
    let again = repo.backup(&std::fs::read(&f).expect("read"), &["--name", "s"]);
    assert!(again["snapshot_id"].is_string());
    let out = repo
        .run(&["restore", "latest", "--name", "s", "--to", "-"], None)
        .ok();
    assert!(out.stdout == std::fs::read(&f).expect("read"));
    assert!(!Path::new(&repo.path.join("locks")).exists() || lock_files(&repo) == 0);
}
