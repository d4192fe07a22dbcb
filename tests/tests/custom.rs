//! pg_dump custom-format archives (`pg_dump -Fc`): the hard-case fixture round-trips with
//! default compression and with `-Z0` (into a database, and as the archive itself, byte for
//! byte, read by pg_restore); one table comes back beside the live one; a second night
//! costs what changed; an archive cut anywhere is refused; an old archive keeps its date.

use std::path::Path;
use std::process::Command;

use dbvault_tests::pgfixture::conn;
use dbvault_tests::{PgDb, Repo};

fn archive(src: &PgDb, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .arg("-Fc")
        .args(extra)
        .arg("-d")
        .arg(conn(src))
        .output()
        .expect("pg_dump: apt-get install postgresql-client");
    assert!(
        out.status.success(),
        "pg_dump -Fc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hard() -> PgDb {
    let src = PgDb::new("fcsrc");
    src.load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hard.sql"));
    src
}

/// `pg_restore ARGS FILE`, which must succeed; its stdout.
fn pg_restore(args: &[&str], file: &Path) -> String {
    let out = Command::new("pg_restore")
        .args(args)
        .arg(file)
        .output()
        .expect("pg_restore");
    assert!(
        out.status.success(),
        "pg_restore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn archives_round_trip_into_a_database_and_byte_for_byte() {
    let src = hard();
    let repo = Repo::new();
    for extra in [&[][..], &["-Z0"][..]] {
        let arch = archive(&src, extra);
        let snap = repo
            .run(&["backup", "-", "--json", "--name", "fc"], Some(&arch))
            .ok()
            .json();
        let id = snap["snapshot_id"].as_str().expect("id").to_string();
        let notes = snap["notes"].to_string();
        assert!(
            notes.contains("byte for byte") && notes.contains(", 0 stored as they came"),
            "{extra:?}: {notes}"
        );
        // Per-table parts, as for a plain dump.
        let tables = snap["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .filter(|p| p["kind"] == "table-data")
            .count();
        assert!(tables >= 9, "{extra:?}: {tables} table parts");

        let back = repo.run(&["restore", &id, "--to", "-"], None).ok().stdout;
        assert!(
            back == arch,
            "{extra:?}: the archive does not come back byte for byte"
        );
        let file = repo.dir.path().join("back.dump");
        std::fs::write(&file, &back).expect("write");
        let list = pg_restore(&["--list"], &file);
        assert!(list.contains("TABLE DATA app orders"), "{list}");

        let into = PgDb::new("fcdst");
        repo.run(&["restore", &id, "--to", &into.url()], None).ok();
        assert_eq!(
            into.fingerprint(),
            src.fingerprint(),
            "{extra:?}: rows differ"
        );
        assert_eq!(into.schema(), src.schema(), "{extra:?}: schema differs");
        let with_pg_restore = PgDb::new("fcpgr");
        pg_restore(&["-d", &conn(&with_pg_restore)], &file);
        assert_eq!(with_pg_restore.fingerprint(), src.fingerprint());

        // The SQL script on request, as pg_restore writes it.
        let plain = repo
            .run(&["restore", &id, "--to", "-", "--plain"], None)
            .ok()
            .text();
        assert!(plain.contains("COPY app.orders"), "--plain gave no script");
    }
    // restore-test reads it as it reads a plain dump.
    let t = repo.run(&["restore-test", "latest", "--name", "fc"], None);
    assert_eq!(t.code, Some(0), "{}", t.text());
}

#[test]
fn one_table_comes_back_beside_the_live_one_and_a_night_costs_what_changed() {
    let src = hard();
    let repo = Repo::new();
    let first = archive(&src, &[]);
    let one = repo
        .run(&["backup", "-", "--json", "--name", "fc"], Some(&first))
        .ok()
        .json();
    src.sql("UPDATE app.big SET filler = 'changed' WHERE id % 1000 = 0");
    let second = archive(&src, &[]);
    let two = repo
        .run(&["backup", "-", "--json", "--name", "fc"], Some(&second))
        .ok()
        .json();
    let added = two["bytes_added"].as_u64().expect("added");
    assert!(
        added < 400_000,
        "a night that changed 95 rows added {added} bytes (the archive is {} bytes)",
        second.len()
    );
    let _ = one;

    let before = src.fingerprint();
    src.sql("DELETE FROM app.orders WHERE id % 3 = 0");
    let damaged = src.fingerprint();
    repo.run(
        &[
            "restore",
            "latest",
            "--name",
            "fc",
            "--table",
            "app.orders",
            "--rename-table",
            "orders_back",
            "--to",
            &src.url(),
        ],
        None,
    )
    .ok();
    let now = src.fingerprint();
    assert_eq!(
        now.get("app.orders_back"),
        before.get("app.orders"),
        "the table did not come back whole"
    );
    for (t, fp) in &damaged {
        assert_eq!(now.get(t), Some(fp), "{t} was touched");
    }
    // Its indexes and constraints came along, renamed.
    let idx = src.sql(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'app' AND tablename = 'orders_back'",
    );
    assert!(idx.trim() != "0", "no index on the restored table");
}

/// Where the header and TOC end, and where each data block ends (int size 4, offset 8,
/// archive 1.14 as this machine's pg_dump writes).
fn boundaries(a: &[u8]) -> (usize, Vec<usize>) {
    let mut p = 5 + 3 + 3;
    let int = |p: &mut usize| {
        let v = u32::from_le_bytes([a[*p + 1], a[*p + 2], a[*p + 3], a[*p + 4]]) as i64;
        let neg = a[*p] != 0;
        *p += 5;
        if neg {
            -v
        } else {
            v
        }
    };
    let string = |p: &mut usize| -> bool {
        let n = int(p);
        if n >= 0 {
            *p += n as usize;
        }
        n >= 0
    };
    int(&mut p); // compression
    for _ in 0..7 {
        int(&mut p);
    }
    for _ in 0..3 {
        string(&mut p);
    }
    let n = int(&mut p);
    for _ in 0..n {
        int(&mut p);
        int(&mut p);
        string(&mut p);
        string(&mut p);
        string(&mut p);
        string(&mut p);
        int(&mut p);
        for _ in 0..8 {
            string(&mut p); // defn, drop, copy, namespace, tablespace, tableam, owner, oids
        }
        while string(&mut p) {}
        p += 9;
    }
    let toc_end = p;
    let mut ends = Vec::new();
    while p < a.len() {
        let kind = a[p];
        p += 1;
        int(&mut p);
        loop {
            if kind == 3 && int(&mut p) == 0 {
                break;
            }
            loop {
                let len = int(&mut p);
                if len == 0 {
                    break;
                }
                p += len as usize;
            }
            if kind != 3 {
                break;
            }
        }
        ends.push(p);
    }
    (toc_end, ends)
}

#[test]
fn an_archive_cut_anywhere_is_refused_and_stores_nothing() {
    let src = hard();
    let repo = Repo::new();
    let arch = archive(&src, &[]);
    let (toc_end, ends) = boundaries(&arch);
    assert!(ends.len() >= 9 && *ends.last().expect("end") == arch.len());
    for (what, cut) in [
        ("in the header", 20),
        ("in the TOC", toc_end / 2),
        ("right after the TOC", toc_end),
        ("mid-block", ends[ends.len() / 2] - 100),
        ("at a block boundary", ends[ends.len() / 2]),
        ("one byte short", arch.len() - 1),
    ] {
        let r = repo.run(&["backup", "-", "--name", "cut"], Some(&arch[..cut]));
        assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains("truncated") && r.stderr.contains("no snapshot recorded"),
            "{what}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "{what}: {}", r.stderr);
    }
    assert!(repo.snapshot_ids().is_empty(), "a cut archive was recorded");
    // Forced to the custom format, a stream that is not one says so.
    let r = repo.run(
        &["backup", "-", "--format", "custom"],
        Some(b"not an archive"),
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("not a pg_dump custom-format archive"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_imported_archive_keeps_its_date_and_commands_work_too() {
    let src = hard();
    let repo = Repo::new();
    let arch = archive(&src, &[]);
    // The header's creation time (local time, seven ints after the compression int).
    let at = |k: usize| {
        let p = 11 + 5 + 5 * k;
        i64::from(u32::from_le_bytes([
            arch[p + 1],
            arch[p + 2],
            arch[p + 3],
            arch[p + 4],
        ]))
    };
    let (min, hour, mday) = (at(1), at(2), at(3));
    let snap = repo
        .run(&["backup", "-", "--json", "--name", "old"], Some(&arch))
        .ok()
        .json();
    let time = snap["time"].as_str().expect("time").to_string();
    let local = chrono::DateTime::parse_from_rfc3339(&time)
        .expect("rfc3339")
        .with_timezone(&chrono::Local);
    use chrono::Timelike;
    assert_eq!(
        (
            i64::from(chrono::Datelike::day(&local)),
            i64::from(local.hour()),
            i64::from(local.minute())
        ),
        (mday, hour, min),
        "the snapshot's time {time} is not the archive's"
    );
    // --time still wins.
    let given = repo
        .run(
            &[
                "backup",
                "-",
                "--json",
                "--name",
                "old",
                "--time",
                "2026-01-08T12:00:00+00:00",
            ],
            Some(&arch),
        )
        .ok()
        .json();
    assert_eq!(given["time"], "2026-01-08T12:00:00+00:00");
    // pg_dump -Fc as the command.
    let cmd = format!("pg_dump -Fc -d '{}'", conn(&src));
    let c = repo
        .run(
            &["backup", "--command", &cmd, "--name", "cmd", "--json"],
            None,
        )
        .ok()
        .json();
    let id = c["snapshot_id"].as_str().expect("id").to_string();
    let back = repo.run(&["restore", &id, "--to", "-"], None).ok().stdout;
    assert!(back.starts_with(b"PGDMP"), "not an archive");
}
