//! The archive a `pg_dump | gzip` runbook left, brought in: a folder of dated `.sql.gz`
//! dumps (GNU gzip, which no zlib reproduces) and a zstd-compressed custom archive imported in
//! date order with their own dates, stored as the dumps inside (deduplicated against each
//! other, table parts), then one table restored from the third night into a live database
//! and compared row for row, and the third `.gz` given back byte for byte.

use std::path::Path;
use std::process::Command;

use dbvault_tests::{sh, PgDb, Repo};

fn gzip_bytes(data: &[u8], dst: &Path) {
    let src = dst.with_extension("raw");
    std::fs::write(&src, data).expect("write");
    gzip(&src, dst, "-6");
    std::fs::remove_file(src).expect("rm");
}

fn gzip(src: &Path, dst: &Path, level: &str) {
    let r = sh(
        &format!(
            "gzip {level} -c < '{}' > '{}'",
            src.display(),
            dst.display()
        ),
        &[],
    );
    assert_eq!(r.code, Some(0), "gzip: {}", r.stderr);
}

#[test]
fn a_folder_of_five_gzip_dumps_imported_with_their_dates_then_a_table_restored_from_the_third() {
    let db = PgDb::new("import");
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE TABLE customers (id int PRIMARY KEY, name text)");
    let repo = Repo::new();
    let dir = repo.dir.path().join("old-backups");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut fingerprints = Vec::new();
    let stamps = [
        "20250111_021500",
        "20250112_021500",
        "20250113_021502",
        "20250114_021500",
        "20250115_021459",
    ];
    for (night, stamp) in stamps.iter().enumerate() {
        let n = night as i64;
        db.sql(&format!(
            "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series({}, {}) g; \
             UPDATE orders SET note = 'night {n}' WHERE id % 997 = {n}; \
             INSERT INTO customers VALUES ({n}, 'customer {n}')",
            if n == 0 { 1 } else { 60_001 + n * 1_000 },
            60_000 + (n + 1) * 1_000
        ));
        fingerprints.push(db.fingerprint());
        let plain = dir.join(format!(".plain-{night}"));
        let r = sh(&format!("{} > '{}'", db.dump_cmd(), plain.display()), &[]);
        assert_eq!(r.code, Some(0), "pg_dump: {}", r.stderr);
        // Nights at different levels, as runbooks change over the years.
        let level = ["-6", "-9", "-6", "-1", "-6"][night];
        gzip(&plain, &dir.join(format!("backup_{stamp}.sql.gz")), level);
        std::fs::rename(&plain, repo.dir.path().join(format!("plain-{night}.sql"))).expect("mv");
    }
    // A truncated file among them fails alone, clearly, and records nothing.
    let whole = std::fs::read(dir.join("backup_20250115_021459.sql.gz")).expect("read");
    std::fs::write(
        dir.join("backup_20250116_021500.sql.gz"),
        &whole[..whole.len() / 2],
    )
    .expect("write");

    // Stray files are left alone, not imported as snapshots of their own.
    std::fs::write(dir.join("README.txt"), "nightly dumps, kept 30 days\n").expect("write");
    let noise = dbvault_tests::random_bytes(5000, 3);
    gzip_bytes(&noise, &dir.join("backup_20250117_021500.sql.gz"));
    let r = repo.run(
        &["import", dir.to_str().expect("utf-8"), "--tag", "imported"],
        None,
    );
    let out = r.text();
    assert_eq!(r.code, Some(1), "{out}{}", r.stderr);
    assert!(
        out.contains("backup_20250116_021500.sql.gz") && out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("is the file complete?"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("skipped: not a pg_dump dump"))
            .count(),
        2,
        "{out}"
    );

    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let snaps = list.as_array().expect("array");
    assert_eq!(snaps.len(), 5, "{list}");
    for (s, stamp) in snaps.iter().zip(stamps) {
        assert_eq!(s["name"], "backup", "{s}");
        let t = s["time"].as_str().expect("time");
        let want = format!(
            "{}-{}-{}T{}:{}:{}",
            &stamp[..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13],
            &stamp[13..15]
        );
        assert!(t.starts_with(&want), "{t} is not {want}");
        assert_eq!(s["tags"][0], "imported");
        // Stored as the dump inside: table parts, not one opaque stream.
        let parts = s["parts"].as_array().expect("parts");
        assert!(parts.iter().any(|p| p["name"] == "public.orders"), "{s}");
    }
    // Each night stored about what changed (deduplicated against the night before, the
    // gzip file recreated from it, not kept twice): well under the compressed file.
    for (s, stamp) in snaps.iter().zip(stamps).skip(1) {
        let gz = std::fs::metadata(dir.join(format!("backup_{stamp}.sql.gz")))
            .expect("gz")
            .len();
        let added = s["bytes_added"].as_u64().unwrap_or(u64::MAX);
        assert!(
            added < gz / 2,
            "{stamp}: {added} bytes added for a {gz}-byte file: {s}"
        );
        assert!(!s["notes"].to_string().contains("stored as well"), "{s}");
    }
    // Run again: everything already there is skipped.
    let again = repo.run(&["import", dir.to_str().expect("utf-8"), "--json"], None);
    let j = again.json();
    let already = j
        .as_array()
        .expect("array")
        .iter()
        .filter(|i| i["outcome"].get("already_imported").is_some())
        .count();
    assert_eq!(already, 5, "{j}");

    // 3 a.m.: the orders of the third night, beside the live table.
    let third = snaps[2]["id"].as_str().expect("id");
    db.sql("DELETE FROM orders WHERE id % 3 = 0");
    repo.run(
        &[
            "restore",
            third,
            "--table",
            "public.orders",
            "--rename-table",
            "orders_night3",
            "--to",
            &db.url(),
        ],
        None,
    )
    .ok();
    let restored = db.sql("SELECT count(*) || ':' || md5(string_agg(x::text, E'\\n' ORDER BY x::text)) FROM orders_night3 x");
    assert_eq!(
        restored.trim(),
        fingerprints[2]["public.orders"],
        "the third night's rows"
    );

    // The third file back byte for byte, and the plain dump with --plain.
    let gz = repo.run(&["restore", third, "--to", "-"], None).ok();
    let original = std::fs::read(dir.join("backup_20250113_021502.sql.gz")).expect("read");
    assert!(
        gz.stdout == original,
        "the .gz given back differs ({} bytes, {} original)",
        gz.stdout.len(),
        original.len()
    );
    let plain = repo
        .run(&["restore", third, "--to", "-", "--plain"], None)
        .ok();
    assert!(plain.stdout == std::fs::read(repo.dir.path().join("plain-2.sql")).expect("plain"));
    // And the repository stays sound.
    repo.run(&["check", "--read-data"], None).ok();
}

#[test]
fn zstd_files_and_piped_gzip_come_back_byte_for_byte() {
    let db = PgDb::new("importz");
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, repeat('x', g % 50) FROM generate_series(1, 30000) g");
    let repo = Repo::new();
    let dir = repo.dir.path().join("in");
    std::fs::create_dir(&dir).expect("mkdir");
    let archive = dir.join(".shop.dump");
    let r = sh(
        &format!("{} -Fc > '{}'", db.dump_cmd(), archive.display()),
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let bytes = std::fs::read(&archive).expect("read");
    // One made by the zstd library at level 3 (what `zstd` of the same version writes):
    // recreated from the dump, nothing stored twice.
    let z = zstd::stream::encode_all(&bytes[..], 3).expect("zstd");
    std::fs::write(dir.join("shop.dump.zst"), &z).expect("write");
    let r = repo
        .run(
            &[
                "import",
                dir.join("shop.dump.zst").to_str().expect("utf-8"),
                "--json",
            ],
            None,
        )
        .ok();
    let j = r.json();
    let item = &j[0];
    // A custom archive's date is its header's.
    assert_eq!(item["date_from"], "header", "{j}");
    assert_eq!(item["name"], "shop", "{j}");
    let notes = item["outcome"]["saved"]["notes"].to_string();
    assert!(
        notes.contains("zstd-compressed") && !notes.contains("stored as well"),
        "{notes}"
    );
    let id = item["outcome"]["saved"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let back = repo.run(&["restore", &id, "--to", "-"], None).ok();
    assert!(back.stdout == z, "the .zst given back differs");
    // The archive inside restores as one.
    let plain = repo
        .run(&["restore", &id, "--to", "-", "--plain"], None)
        .ok();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("CREATE TABLE public.t"));

    // `pg_dump | gzip | dbvault backup -`: the same, from a pipe.
    let piped = sh(
        &format!(
            "{} | gzip | {} --repo '{}' backup - --name piped --json",
            db.dump_cmd(),
            dbvault_tests::bin().display(),
            repo.path.display()
        ),
        &[("DBVAULT_PASSWORD", dbvault_tests::PASSWORD)],
    );
    assert_eq!(piped.code, Some(0), "{}", piped.stderr);
    let s = repo
        .run(&["snapshots", "--name", "piped", "--json"], None)
        .ok()
        .json();
    assert!(
        s[0]["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .any(|p| p["name"] == "public.t"),
        "{s}"
    );
    let gz = repo
        .run(&["restore", "latest", "--name", "piped", "--to", "-"], None)
        .ok();
    let out = Command::new("gzip")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("gzip");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &gz.stdout).expect("write");
    drop(child.stdin.take());
    assert!(
        child.wait().expect("gzip -t").success(),
        "the restored stream is a sound gzip file"
    );
}
