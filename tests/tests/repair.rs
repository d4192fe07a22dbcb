//! `repair snapshots` after one damaged file, chained as an operator meets it: `check`
//! names the damage and the command; the repair names what is lost; `check` passes; every
//! snapshot that did not need the damaged bytes restores byte for byte (and a logical
//! dump that lost one table's data restores everything else into a real PostgreSQL).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dbvault_tests::{random_bytes, PgDb, Repo};

fn id_of(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().expect("snapshot_id").to_string()
}

fn packs(repo: &Repo) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in std::fs::read_dir(repo.path.join("data")).expect("data/") {
        let d = d.expect("entry").path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).expect("data/xx") {
                let f = f.expect("entry").path();
                if !f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    out.insert(f);
                }
            }
        }
    }
    out
}

fn largest(paths: impl IntoIterator<Item = PathBuf>) -> PathBuf {
    paths
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack")
}

/// Flips one byte at `at` (a fraction of the file's length).
fn flip(path: &Path, at: f64) {
    let mut b = std::fs::read(path).expect("read pack");
    let i = (b.len() as f64 * at) as usize;
    b[i] ^= 0xff;
    std::fs::write(path, b).expect("write pack");
}

/// The snapshots `check --read-data --json` calls damaged.
fn damaged_snapshots(repo: &Repo) -> BTreeSet<String> {
    let c = repo.run(&["check", "--read-data", "--json"], None);
    assert_eq!(
        c.code,
        Some(3),
        "check should find the damage: {}",
        c.stderr
    );
    c.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["snapshot"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_damaged_pack_and_a_damaged_manifest_are_repaired_losing_only_what_needed_them() {
    let repo = Repo::new();
    let d1 = random_bytes(2_000_000, 71);
    let s1 = id_of(&repo.backup(&d1, &["--name", "one"]));
    let before = packs(&repo);
    let d2 = random_bytes(3_000_000, 73);
    let s2 = id_of(&repo.backup(&d2, &["--name", "two"]));
    let victim = largest(packs(&repo).difference(&before).cloned());
    // Shares its first megabyte's chunks with `two`, so they live in the pack to damage.
    let twin = d2[..1_000_000].to_vec();
    let s3 = id_of(&repo.backup(&twin, &["--name", "twin"]));
    let d4 = random_bytes(500_000, 75);
    let s4 = id_of(&repo.backup(&d4, &["--name", "four"]));
    // One byte late in `two`'s pack (not its shared start), and `four`'s manifest.
    flip(&victim, 0.85);
    std::fs::write(repo.path.join("snapshots").join(&s4), b"garbage").expect("damage");

    let named = damaged_snapshots(&repo);
    assert!(named.contains(&s2), "{named:?}");
    assert!(!named.contains(&s1) && !named.contains(&s3), "{named:?}");
    let c = repo.run(&["check", "--read-data"], None);
    let all = format!("{}{}", c.text(), c.stderr);
    assert!(
        all.contains("repair: dbvault repair snapshots --read-data")
            && all.contains("repair: dbvault repair snapshots, which removes it"),
        "{all}"
    );

    let files = repo.files();
    let dry = repo
        .run(&["repair", "snapshots", "--read-data", "--dry-run"], None)
        .ok()
        .text();
    assert!(
        dry.contains(&s2[..8]) && dry.contains("would be removed"),
        "{dry}"
    );
    assert!(repo.files() == files, "a dry run changed the repository");

    let r = repo
        .run(&["repair", "snapshots", "--read-data"], None)
        .ok()
        .text();
    assert!(
        r.contains(&format!("lost: snapshot {}", &s2[..8]))
            && r.contains(&format!("lost: snapshot {}", &s4[..8]))
            && r.contains("damaged pack"),
        "{r}"
    );
    assert!(!victim.exists(), "the damaged pack stays");
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(c.code, Some(0), "{} {}", c.text(), c.stderr);
    // What did not need the damaged byte is all there: `twin`'s blobs were salvaged from
    // the removed pack.
    assert!(repo.restore(&s1).ok().stdout == d1);
    assert!(repo.restore(&s3).ok().stdout == twin);
    let left: BTreeSet<String> = repo.snapshot_ids().into_iter().collect();
    assert_eq!(left, BTreeSet::from([s1.clone(), s3.clone()]));
    // And the repository goes on: prune, a backup of the lost data, its restore.
    repo.run(&["prune"], None).ok();
    let again = id_of(&repo.backup(&d2, &["--name", "two"]));
    assert!(repo.restore(&again).ok().stdout == d2);
    assert!(repo.restore(&s3).ok().stdout == twin);
    let r = repo.run(&["repair", "snapshots"], None).ok().text();
    assert!(r.contains("no snapshot or pack needs repair"), "{r}");
}

#[test]
fn a_dump_that_lost_one_tables_data_keeps_the_rest_and_restores_it() {
    let db = PgDb::new("repair");
    // Two tables of distinct text (hex, so it does not compress away), about 2 MB each.
    let rows = |t: &str, k: u32| {
        format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} SELECT g, \
             (SELECT string_agg(md5((g * 100 + i + {k})::text), '') FROM generate_series(1, 20) i) \
             FROM generate_series(1, 3000) g;"
        )
    };
    db.sql(&rows("t1", 0));
    db.sql(&rows("t2", 7_000_000));
    let before = db.fingerprint();
    let repo = Repo::new();
    let s = repo
        .run(
            &[
                "backup",
                "--command",
                &db.dump_cmd(),
                "--name",
                "shop",
                "--json",
            ],
            None,
        )
        .ok()
        .json();
    let s = id_of(&s);
    flip(&largest(packs(&repo)), 0.5);
    assert!(damaged_snapshots(&repo).contains(&s));
    let damaged_manifest = std::fs::read(repo.path.join("snapshots").join(&s)).expect("manifest");

    let r = repo
        .run(&["repair", "snapshots", "--read-data"], None)
        .ok()
        .text();
    assert!(
        r.contains(&format!("lost: from snapshot {}", &s[..8])),
        "{r}"
    );
    let (lost, kept) = if r.contains("public.t1") {
        ("public.t1", "public.t2")
    } else {
        ("public.t2", "public.t1")
    };
    assert!(r.contains(lost) && !r.contains(kept), "{r}");
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(c.code, Some(0), "{} {}", c.text(), c.stderr);
    // As if the repair had been killed after writing the replacement and before removing
    // the damaged one: run again, it only removes that one, writing no second replacement.
    let replacement = repo.snapshot_ids();
    std::fs::write(repo.path.join("snapshots").join(&s), &damaged_manifest).expect("put back");
    let again = repo
        .run(&["repair", "snapshots", "--read-data"], None)
        .ok()
        .text();
    assert!(again.contains("earlier, interrupted repair"), "{again}");
    assert_eq!(repo.snapshot_ids(), replacement);
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(c.code, Some(0), "{} {}", c.text(), c.stderr);

    // The rewritten snapshot is `latest`, says what it lacks, and restores the rest.
    let dst = PgDb::new("repaired");
    let r = repo
        .run(
            &["restore", "latest", "--name", "shop", "--to", &dst.url()],
            None,
        )
        .ok();
    assert!(r.stderr.contains("repair snapshots"), "{}", r.stderr);
    let after = dst.fingerprint();
    assert_eq!(after[kept], before[kept]);
    assert!(after[lost].starts_with("0:"), "{}", after[lost]);
    let notes = repo.run(&["snapshots"], None).ok().text();
    assert!(
        notes.contains("repair snapshots") && notes.contains(lost),
        "{notes}"
    );
    // One table by itself, from the same snapshot.
    let one = PgDb::new("repaired_one");
    repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "shop",
            "--table",
            kept,
            "--to",
            &one.url(),
        ],
        None,
    )
    .ok();
    assert_eq!(one.fingerprint()[kept], before[kept]);
}

#[test]
fn a_deleted_index_file_is_indexed_again_never_taken_for_loss() {
    let repo = Repo::new();
    let data = random_bytes(2_000_000, 77);
    let s = id_of(&repo.backup(&data, &["--name", "one"]));
    for f in std::fs::read_dir(repo.path.join("index")).expect("index/") {
        std::fs::remove_file(f.expect("entry").path()).expect("rm");
    }
    let r = repo.restore(&s);
    assert_eq!(r.code, Some(3));
    assert!(r.stderr.contains("dbvault repair index"), "{}", r.stderr);
    let c = repo.run(&["check"], None);
    assert_eq!(c.code, Some(3));
    assert!(
        c.text().contains("repair: dbvault repair index"),
        "{}",
        c.text()
    );
    // `repair snapshots` indexes the pack rather than remove the snapshot needing it.
    let r = repo.run(&["repair", "snapshots"], None).ok().text();
    assert!(r.contains("indexed from their trailers first"), "{r}");
    assert!(!r.contains("lost:"), "{r}");
    assert_eq!(repo.run(&["check", "--read-data"], None).code, Some(0));
    assert!(repo.restore(&s).ok().stdout == data);
}

#[test]
fn a_lost_delta_base_takes_its_deltas_and_one_repair_leaves_check_read_data_clean() {
    let repo = Repo::new();
    let keep = random_bytes(1_000_000, 91);
    let k = id_of(&repo.backup(&keep, &["--name", "other"]));
    let before = packs(&repo);
    // COPY-like lines (compressible, so deltas pay).
    let mut x: u64 = 93;
    let mut d1 = Vec::new();
    for i in 0..60_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        d1.extend_from_slice(
            format!(
                "{i}\t{}\tcustomer {}\t2024-01-{:02}\n",
                x >> 34,
                (x >> 20) % 99_999,
                i % 28 + 1
            )
            .as_bytes(),
        );
    }
    repo.backup(&d1, &["--name", "s"]);
    let first = largest(packs(&repo).difference(&before).cloned());
    // The next night: a few lines changed in every chunk, stored as deltas against it.
    let mut d2 = d1.clone();
    for i in (1000..d2.len()).step_by(40_000) {
        d2[i] = b'#';
    }
    let s2 = repo.backup(&d2, &["--name", "s"]);
    assert!(s2["snapshot_id"].is_string());
    // The first night's pack cut short: its blobs, and the deltas built on them, are lost.
    let len = std::fs::metadata(&first).expect("pack").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open");
    f.set_len(len / 3).expect("truncate");
    // As `check` (structure only) names it: no --read-data.
    let c = repo.run(&["check"], None);
    assert!(
        c.text()
            .contains("(repair: dbvault repair snapshots, which names"),
        "{}",
        c.text()
    );
    let r = repo.run(&["repair", "snapshots"], None).ok().text();
    assert!(r.contains("lost: snapshot"), "{r}");
    let c = repo.run(&["check", "--read-data"], None);
    assert_eq!(
        c.code,
        Some(0),
        "one repair leaves check clean: {} {}",
        c.text(),
        c.stderr
    );
    assert!(repo.restore(&k).ok().stdout == keep);
}

#[test]
fn a_damaged_newest_manifest_stops_latest_and_a_deleted_one_is_recorded_lost() {
    let repo = Repo::new();
    let old = random_bytes(200_000, 95);
    let o = id_of(&repo.backup(&old, &["--name", "shop"]));
    let new = random_bytes(200_000, 97);
    let n = id_of(&repo.backup(&new, &["--name", "shop"]));
    // The newest manifest damaged: `latest` would be older data, so it is refused.
    std::fs::write(repo.path.join("snapshots").join(&n), b"garbage").expect("damage");
    let r = repo.run(&["restore", "latest", "--name", "shop", "--to", "-"], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains(&n[..8]) && r.stderr.contains("repair snapshots"),
        "{}",
        r.stderr
    );
    // By id, the older one restores; after the repair `latest` is it, said so.
    assert!(repo.restore(&o).ok().stdout == old);
    repo.run(&["repair", "snapshots"], None).ok();
    let r = repo
        .run(&["restore", "latest", "--name", "shop", "--to", "-"], None)
        .ok();
    assert!(r.stdout == old);
    // A snapshot deleted by hand: check names the way out, repair records it as lost.
    let third = id_of(&repo.backup(&new, &["--name", "shop"]));
    std::fs::remove_file(repo.path.join("snapshots").join(&third)).expect("rm");
    let c = repo.run(&["check"], None);
    assert_eq!(c.code, Some(3));
    assert!(
        c.text()
            .contains("repair: dbvault repair snapshots, which records it as lost"),
        "{}",
        c.text()
    );
    let r = repo.run(&["repair", "snapshots"], None).ok().text();
    assert!(
        r.contains(&third[..8]) && r.contains("recorded as lost"),
        "{r}"
    );
    assert_eq!(repo.run(&["check", "--read-data"], None).code, Some(0));
    let r = repo.run(&["snapshots"], None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn a_key_file_with_one_byte_changed_is_called_damaged_not_a_wrong_passphrase() {
    let repo = Repo::new();
    let data = random_bytes(100_000, 99);
    let s = id_of(&repo.backup(&data, &["--name", "one"]));
    let key = std::fs::read_dir(repo.path.join("keys"))
        .expect("keys/")
        .next()
        .expect("a key")
        .expect("entry")
        .path();
    let good = std::fs::read(&key).expect("read key");
    // A flip in the middle may leave the file parseable (then it does not open) or not
    // (the first byte breaks the JSON): either way the answer names the damage.
    for at in [good.len() / 2, 0] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        std::fs::write(&key, &bad).expect("damage");
        let r = repo.restore(&s);
        assert_eq!(r.code, Some(3), "byte {at}: {}", r.stderr);
        assert!(
            r.stderr.contains("does not match its name") && !r.stderr.contains("wrong passphrase"),
            "byte {at}: {}",
            r.stderr
        );
    }
    // With a second passphrase's key, the damaged one is listed, removed, and all is well.
    std::fs::write(&key, &good).expect("put back");
    let pw2 = repo.dir.path().join("pw2");
    std::fs::write(&pw2, "a second passphrase\n").expect("pw2");
    repo.run(
        &[
            "key",
            "add",
            "--new-password-file",
            &pw2.display().to_string(),
        ],
        None,
    )
    .ok();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;
    std::fs::write(&key, &bad).expect("damage");
    let second = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env("DBVAULT_PASSWORD", "a second passphrase");
        dbvault_tests::run_cmd(c, None)
    };
    let l = second(&["key", "list"]).ok().text();
    let name = key
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        l.lines()
            .any(|x| x.contains(&name[..8]) && x.contains("DAMAGED")),
        "{l}"
    );
    second(&["key", "remove", &name[..12]]).ok();
    assert_eq!(second(&["check"]).code, Some(0));
    assert!(second(&["restore", &s, "--to", "-"]).ok().stdout == data);
}
