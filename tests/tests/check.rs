//! `check` finds and names every kind of damage; `restore-test` passes on good PostgreSQL
//! and SQLite snapshots, fails (exit 3) naming the damaged table, and leaves no scratch
//! database; an intact table restores when another table's pack is gone.

use std::path::{Path, PathBuf};

use dbvault_tests::{dump_like, psql, random_bytes, PgDb, Repo, Run};

/// A repository with small packs (many of them) and two sources with several snapshots.
fn template() -> Repo {
    let repo = Repo::uninit();
    repo.run(&["init", "--pack-size", "64KiB"], None).ok();
    let mut v = dump_like(3 << 20, 41);
    for k in 0..3 {
        v[k * 100_000..k * 100_000 + 5].copy_from_slice(b"CHNGD");
        repo.backup(&v, &["--name", "db"]);
        repo.backup(&random_bytes(400_000, 50 + k as u64), &["--name", "blob"]);
    }
    repo
}

/// Pack files, oldest first (the order they were written).
fn packs(repo: &Repo) -> Vec<PathBuf> {
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = dbvault_tests::tree(&repo.path.join("data"))
        .into_keys()
        .map(|p| {
            (
                std::fs::metadata(&p)
                    .expect("meta")
                    .modified()
                    .expect("mtime"),
                p,
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn name_of(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).expect("read");
    let i = at.min(b.len() - 1);
    b[i] ^= 0x10;
    std::fs::write(p, b).expect("write");
}

fn check(repo: &Repo, args: &[&str]) -> (Run, serde_json::Value) {
    let mut a = vec!["check", "--json"];
    a.extend_from_slice(args);
    let r = repo.run(&a, None);
    let v = r.json();
    (r, v)
}

fn problems(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["problems"].as_array().expect("problems").clone()
}

/// A problem of `kind` naming `pack` (full id), and a part problem naming a snapshot, a
/// part and that pack.
fn assert_named(v: &serde_json::Value, kind: &str, pack: &str, what: &str) {
    let ps = problems(v);
    assert!(
        ps.iter().any(|p| p["kind"] == kind && p["pack"] == pack),
        "{what}: no {kind} problem naming pack {pack}: {v}"
    );
    assert!(
        ps.iter().any(|p| p["kind"] == "part"
            && p["pack"] == pack
            && p["snapshot"].is_string()
            && p["part"].is_string()),
        "{what}: no snapshot/part named for pack {pack}: {v}"
    );
}

#[test]
fn a_clean_repository_checks_clean() {
    let repo = template();
    for args in [
        vec![],
        vec!["--read-data"],
        vec!["--read-data-subset", "50%"],
    ] {
        let (r, v) = check(&repo, &args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(v["ok"], true);
        assert!(problems(&v).is_empty(), "{v}");
        assert!(v["warnings"].as_array().expect("w").is_empty(), "{v}");
    }
    let (_, all) = check(&repo, &["--read-data"]);
    assert_eq!(all["packs_read"], all["packs"]);
    // Three slices read every pack exactly once.
    let mut read = 0;
    for s in ["1/3", "2/3", "3/3"] {
        let (r, v) = check(&repo, &["--read-data-subset", s]);
        assert_eq!(r.code, Some(0));
        read += v["packs_read"].as_u64().expect("n");
    }
    assert_eq!(Some(read), all["packs_read"].as_u64());
    let human = repo.run(&["check"], None).ok().text();
    assert!(human.contains("no damage found"), "{human}");
    let bad = repo.run(&["check", "--read-data-subset", "7/3"], None);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("N/M"), "{}", bad.stderr);
}

#[test]
fn each_kind_of_damage_is_found_and_named() {
    let good = template();
    let mid = |r: &Repo| packs(r)[packs(r).len() / 2].clone();

    // A flipped bit inside a blob: found by reading the data, named by pack and part.
    let r = good.copy();
    let p = mid(&r);
    flip(&p, 100);
    let (run, v) = check(&r, &["--read-data"]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_named(&v, "data", &name_of(&p), "flipped bit");

    // Two damaged packs: both named (one does not stop the check of the other).
    let r = good.copy();
    let ps = packs(&r);
    let (a, b) = (ps[1].clone(), ps[ps.len() - 2].clone());
    flip(&a, 200);
    flip(&b, 200);
    let (_, v) = check(&r, &["--read-data"]);
    assert_named(&v, "data", &name_of(&a), "first of two");
    assert_named(&v, "data", &name_of(&b), "second of two");

    // A truncated pack: found without reading data.
    let r = good.copy();
    let p = mid(&r);
    let len = std::fs::metadata(&p).expect("m").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert_named(&v, "pack", &name_of(&p), "truncated");

    // A deleted pack.
    let r = good.copy();
    let p = mid(&r);
    std::fs::remove_file(&p).expect("rm");
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert_named(&v, "pack", &name_of(&p), "deleted pack");
    assert!(problems(&v)
        .iter()
        .any(|x| x["detail"].as_str().unwrap_or("").contains("is missing")));

    // A deleted index file: its packs are unknown (warnings), snapshots lack blobs.
    let r = good.copy();
    let idx = dbvault_tests::tree(&r.path.join("index"))
        .into_keys()
        .next()
        .expect("index");
    std::fs::remove_file(&idx).expect("rm");
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert!(
        problems(&v)
            .iter()
            .any(|p| p["kind"] == "part"
                && p["detail"].as_str().unwrap_or("").contains("in no index")),
        "{v}"
    );
    assert!(
        v["warnings"]
            .as_array()
            .expect("w")
            .iter()
            .any(|w| w["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no index names this pack")),
        "{v}"
    );

    // An altered index file.
    let r = good.copy();
    let idx = dbvault_tests::tree(&r.path.join("index"))
        .into_keys()
        .next()
        .expect("index");
    flip(&idx, 40);
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert!(
        problems(&v)
            .iter()
            .any(|p| p["kind"] == "index"
                && p["detail"].as_str().unwrap_or("").contains(&name_of(&idx))),
        "{v}"
    );

    // An altered snapshot.
    let r = good.copy();
    let ids = r.snapshot_ids();
    let snap = r.path.join("snapshots").join(&ids[2]);
    flip(&snap, 30);
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert!(
        problems(&v)
            .iter()
            .any(|p| p["kind"] == "snapshot" && p["snapshot"] == ids[2][..8]),
        "{v}"
    );

    // A pack the index does not know (and that is no pack at all).
    let r = good.copy();
    let stray = format!("{:0>64}", "ab");
    let dir = r.path.join("data").join(&stray[..2]);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(&stray), random_bytes(5000, 3)).expect("write");
    let (run, v) = check(&r, &[]);
    assert_eq!(run.code, Some(3));
    assert!(
        problems(&v).iter().any(|p| p["pack"] == stray.as_str()),
        "{v}"
    );

    // Human output names them too, and the good repository is still clean.
    let human = r.run(&["check"], None);
    assert_eq!(human.code, Some(3));
    assert!(human.text().contains(&stray[..8]), "{}", human.text());
    assert_eq!(check(&good, &["--read-data"]).0.code, Some(0));
}

fn scratch_left(id: &str) -> String {
    psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'dbvault_restore_test_{}%'",
            &id[..8]
        ),
    )
    .trim()
    .to_string()
}

fn scratch_url() -> String {
    let host = std::env::var("PGHOST").unwrap_or_else(|_| "/var/run/postgresql".into());
    format!("postgresql:///postgres?host={host}")
}

#[test]
fn restore_test_passes_fails_by_table_and_leaves_no_scratch_database() {
    let db = PgDb::new("rtest");
    db.sql(
        "CREATE TABLE small (id int PRIMARY KEY, v text);
         INSERT INTO small SELECT g, 'v' || g FROM generate_series(1, 500) g;
         CREATE TABLE big (id int PRIMARY KEY, s int REFERENCES small(id), pad text);
         INSERT INTO big SELECT g, 1 + g % 500, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 120000) g;
         CREATE TABLE tail (id int PRIMARY KEY);
         INSERT INTO tail SELECT generate_series(1, 100);",
    );
    let repo = Repo::uninit();
    repo.run(&["init", "--pack-size", "64KiB"], None).ok();
    let scratch = scratch_url();
    // Direct and piped backups both pass.
    repo.run(&["backup", &db.url(), "--name", "direct"], None)
        .ok();
    let cmd = db.dump_cmd();
    repo.run(&["backup", "--command", &cmd, "--name", "pipe"], None)
        .ok();
    for name in ["direct", "pipe"] {
        let r = repo.run(
            &[
                "restore-test",
                "latest",
                "--name",
                name,
                "--scratch",
                &scratch,
                "--json",
            ],
            None,
        );
        assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
        let v = r.json();
        assert_eq!(v["ok"], true, "{v}");
        let tables = v["tables"].as_array().expect("tables");
        assert_eq!(tables.len(), 3, "{v}");
        let big = tables
            .iter()
            .find(|t| t["name"] == "public.big")
            .expect("big");
        assert_eq!(big["rows_restored"], 120000);
        assert_eq!(scratch_left(v["snapshot"].as_str().expect("id")), "0");
    }
    // `snapshots` shows when each last passed.
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    for s in list.as_array().expect("a") {
        assert_eq!(s["restore_test"]["last_ok"], true, "{s}");
        assert!(s["restore_test"]["last_passed"].is_string());
    }
    let human = repo.run(&["snapshots"], None).ok().text();
    assert!(human.contains("passed 20"), "{human}");

    // Damage inside the big table's data, in a repository of its own: a piped backup is
    // written in dump order (pre-data, big, small, tail, post-data), so the middle pack
    // holds the big table's rows.
    let repo = Repo::uninit();
    repo.run(&["init", "--pack-size", "64KiB"], None).ok();
    repo.run(
        &[
            "backup",
            "--command",
            &format!("{cmd} | sed 's/^500\tv500$/500\tV500/'"),
            "--name",
            "pipe2",
        ],
        None,
    )
    .ok();
    let all = packs(&repo);
    assert!(all.len() >= 10, "{} packs", all.len());
    let victim = all[all.len() / 2].clone();
    flip(&victim, 1000);
    let r = repo.run(
        &[
            "restore-test",
            "latest",
            "--name",
            "pipe2",
            "--scratch",
            &scratch,
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["ok"], false);
    let ps = v["problems"].as_array().expect("p");
    assert!(
        ps.iter()
            .any(|p| p["part"] == "public.big" && p["pack"] == name_of(&victim).as_str()),
        "{v}"
    );
    assert!(!ps.iter().any(|p| p["part"] == "public.small"), "{v}");
    assert_eq!(scratch_left(v["snapshot"].as_str().expect("id")), "0");
    let human = repo.run(
        &[
            "restore-test",
            "latest",
            "--name",
            "pipe2",
            "--scratch",
            &scratch,
        ],
        None,
    );
    assert_eq!(human.code, Some(3));
    assert!(
        human.text().contains("public.big") && human.text().contains("FAILED"),
        "{}",
        human.text()
    );
    let list = repo
        .run(&["snapshots", "--name", "pipe2", "--json"], None)
        .ok()
        .json();
    assert_eq!(list[0]["restore_test"]["last_ok"], false);

    // The intact table still restores (with a warning naming the damaged one), while the
    // whole database refuses and says what to do.
    std::fs::remove_file(&victim).expect("rm");
    let t = repo.run(
        &[
            "restore", "latest", "--name", "pipe2", "--table", "small", "--to", "-",
        ],
        None,
    );
    assert_eq!(t.code, Some(0), "{}", t.stderr);
    assert!(String::from_utf8_lossy(&t.stdout).contains("V500"));
    assert!(
        t.stderr.contains("damaged elsewhere") && t.stderr.contains("public.big"),
        "{}",
        t.stderr
    );
    let target = PgDb::new("rtarget");
    let whole = repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "pipe2",
            "--to",
            &target.url(),
        ],
        None,
    );
    assert_eq!(whole.code, Some(3), "{}", whole.stderr);
    assert!(
        whole.stderr.contains("one by one with --table"),
        "{}",
        whole.stderr
    );
}

#[test]
fn restore_test_of_sqlite_snapshots() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(
            "PRAGMA foreign_keys=ON;
             CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id), w BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO a SELECT i, printf('row %d %s', i, hex(randomblob(20))) FROM n;
             INSERT INTO b SELECT id, id, randomblob(50) FROM a WHERE id <= 3000;",
        )
        .expect("fill");
    }
    let src = format!("sqlite:{}", path.display());
    repo.run(&["backup", &src], None).ok();
    let r = repo.run(&["restore-test", "latest", "--json"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["ok"], true);
    let t = v["tables"].as_array().expect("t");
    assert!(
        t.iter()
            .any(|x| x["name"] == "a" && x["rows_restored"] == 20000),
        "{v}"
    );
    let scratch = v["scratch"].as_str().expect("s").to_string();
    let file = scratch.trim_start_matches("temporary file ");
    assert!(!Path::new(file).exists(), "{file} left behind");
    // Damage: the only pack, in a blob.
    let p = packs(&repo)[0].clone();
    flip(&p, 5000);
    let r = repo.run(&["restore-test", "latest", "--json"], None);
    assert_eq!(r.code, Some(3));
    let v = r.json();
    assert!(
        v["problems"]
            .as_array()
            .expect("p")
            .iter()
            .any(|x| x["part"] == "database" && x["pack"] == name_of(&p).as_str()),
        "{v}"
    );
}

/// One pack that every snapshot needs goes missing: the human report names the first few
/// problems and counts the rest by kind; `--json` lists every one.
#[test]
fn a_pack_every_snapshot_needs_gives_a_short_report() {
    let repo = Repo::new();
    // Large enough that the repository's keyed chunker always cuts it before the end, so
    // its first chunks are shared by all (100 kB was sometimes one chunk with the tail).
    let shared = random_bytes(2_000_000, 77);
    for i in 0..14 {
        let mut v = shared.clone();
        v.extend_from_slice(format!("night {i}").as_bytes());
        repo.backup(&v, &["--name", &format!("n{i}")]);
    }
    let all = dbvault_tests::tree(&repo.path.join("data"));
    let (big, _) = all.iter().max_by_key(|(_, b)| b.len()).expect("a pack");
    std::fs::remove_file(big).expect("remove");
    let r = repo.run(&["check"], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(text.lines().count() <= 14, "not summarised:\n{text}");
    assert!(
        text.contains("more: ") && text.contains("--json lists them all"),
        "{text}"
    );
    let v = repo.run(&["check", "--json"], None);
    let problems = v.json()["problems"].as_array().map_or(0, Vec::len);
    assert!(problems >= 14, "--json has {problems} problems");
}

#[test]
fn read_data_pins_a_damaged_delta_base_on_the_deltas_too() {
    // The bases of a pack's deltas are read together; when that read fails, each delta is
    // opened alone so that the damage is named where it is.
    let repo = Repo::new();
    let data = dump_like(2 << 20, 43);
    repo.backup(&data, &["--name", "db"]);
    let first = packs(&repo);
    let mut edited = data.clone();
    edited[1_000_000] ^= 1;
    let b = repo.backup(&edited, &["--name", "db"]);
    assert!(
        b["bytes_added"].as_u64().expect("n") < 20_000,
        "the edit was not stored as a delta"
    );
    let second: Vec<PathBuf> = packs(&repo)
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!(
        second.len(),
        1,
        "one new pack: the delta and its chunk lists"
    );
    let (r, v) = check(&repo, &["--read-data"]);
    assert_eq!(r.code, Some(0), "{v}");
    // Every blob of the first pack damaged, the delta's base among them.
    let len = std::fs::metadata(&first[0]).expect("m").len() as usize;
    for at in (0..len.saturating_sub(4096)).step_by(4096) {
        flip(&first[0], at);
    }
    let (r, v) = check(&repo, &["--read-data"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    let named = |pack: &Path| {
        problems(&v)
            .iter()
            .any(|p| p["kind"] == "data" && p["pack"] == name_of(pack).as_str())
    };
    assert!(named(&first[0]), "the base's pack: {v}");
    assert!(named(&second[0]), "the delta's pack: {v}");
}
