#![allow(missing_docs)] // a benchmark program
//! SQLite churn benchmark: which chunking stores less per night for database files?
//!
//! Builds a database, then runs nights of churn (inserts, in-place updates, deletes, a
//! VACUUM) and backs the file up after each night with content-defined chunks and with
//! page-aligned fixed chunks of several sizes, beside `sqlite3 .backup | zstd`, restic and
//! borg (when installed). Prints bytes added per night and dbvault's backup/restore MB/s.
//!
//! `cargo bench -p dbvault-benches --bench sqlite_churn` (SCALE=rows, default 300000).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use dbvault_benches::bench_repo;
use dbvault_core::backup::{Chunking, PartInput, SnapshotMeta};
use dbvault_core::restore::restore_part;
use dbvault_core::{Repository, SourceInfo};
use rusqlite::Connection;

fn du(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().expect("meta");
            total += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    total
}

fn night(c: &Connection, n: u32, rows: i64) -> &'static str {
    let exec = |sql: &str| c.execute_batch(sql).expect("churn");
    match n % 4 {
        1 => {
            exec(&format!(
                "INSERT INTO events (ts, kind, payload) SELECT 'night {n}', 'view', hex(randomblob(40)) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {}) SELECT value FROM s);",
                rows / 50
            ));
            "inserts +2%"
        }
        2 => {
            exec(&format!(
                "UPDATE accounts SET balance = balance + 1 WHERE id IN (SELECT abs(random()) % {} + 1 FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {}) SELECT value FROM s));",
                rows / 10,
                rows / 500
            ));
            "updates 0.2% in place"
        }
        3 => {
            exec(&format!(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT {});",
                rows / 100
            ));
            "deletes 1% oldest"
        }
        _ => {
            exec("VACUUM;");
            "VACUUM"
        }
    }
}

fn tool(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sh(cmd: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("RESTIC_PASSWORD", "pw")
        .env("BORG_PASSPHRASE", "pw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh");
    assert!(st.success(), "failed: {cmd}");
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // cargo test --benches asks for a list; there is nothing to test here
    }
    let rows: i64 = std::env::var("SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let nights: u32 = std::env::var("NIGHTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("app.db");
    let c = Connection::open(&db).expect("open");
    c.execute_batch(&format!(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER, note TEXT);
         CREATE TABLE events (id INTEGER PRIMARY KEY, ts TEXT, kind TEXT, payload TEXT);
         CREATE INDEX events_ts ON events(ts);
         INSERT INTO accounts SELECT value, 'owner ' || value, 0, hex(randomblob(30)) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {}) SELECT value FROM s);
         INSERT INTO events (ts, kind, payload) SELECT 'day 0', 'click', hex(randomblob(40)) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {rows}) SELECT value FROM s);",
        rows / 10
    ))
    .expect("init");

    let variants: Vec<(&str, Chunking)> = vec![
        ("cdc 64k", Chunking::ContentDefined),
        ("fixed 4k", Chunking::Fixed(4096)),
        ("fixed 16k", Chunking::Fixed(16384)),
        ("fixed 64k", Chunking::Fixed(65536)),
    ];
    let repos: Vec<(String, Repository)> = variants
        .iter()
        .map(|(n, _)| {
            let p = dir.path().join(n.replace(' ', "_"));
            (p.display().to_string(), bench_repo(&p))
        })
        .collect();
    let (have_restic, have_borg, have_zstd) = (
        tool("restic"),
        tool("borg"),
        tool("zstd") && tool("sqlite3"),
    );
    let restic = dir.path().join("restic");
    let borg = dir.path().join("borg");
    if have_restic {
        sh(&format!("restic -q -r {} init", restic.display()));
    }
    if have_borg {
        sh(&format!("borg init -e repokey-blake2 {}", borg.display()));
    }
    print!("| night | churn | db MiB |");
    for (n, _) in &variants {
        print!(" dbvault {n} |");
    }
    println!(" sqlite3 .backup + zstd | restic | borg |");
    println!("|---|---|---|{}---|---|---|", "---|".repeat(variants.len()));
    let (mut backup_s, mut backup_bytes) = (0f64, 0u64);
    for n in 0..=nights {
        let what = if n == 0 {
            "initial"
        } else {
            night(&c, n, rows)
        };
        let size = std::fs::metadata(&db).expect("meta").len();
        print!("| {n} | {what} | {:.1} |", size as f64 / 1048576.0);
        for ((_, chunking), (path, repo)) in variants.iter().zip(&repos) {
            let before = du(Path::new(path));
            let t = Instant::now();
            let b = repo.start_backup().expect("start");
            let f = std::fs::File::open(&db).expect("open");
            b.add_part(
                PartInput {
                    name: "db".into(),
                    kind: "sqlite-db".into(),
                    chunking: *chunking,
                    ..Default::default()
                },
                f,
            )
            .expect("part");
            b.finish(SnapshotMeta {
                time: chrono::Local::now().fixed_offset(),
                name: "db".into(),
                tags: vec![],
                source: SourceInfo::default(),
            })
            .expect("finish");
            if *chunking == Chunking::Fixed(4096) {
                backup_s += t.elapsed().as_secs_f64();
                backup_bytes += size;
            }
            print!(" {} |", du(Path::new(path)) - before);
        }
        if have_zstd {
            let out = dir.path().join(format!("night{n}.db.zst"));
            sh(&format!(
                "sqlite3 {} '.backup {}/copy.db' && zstd -3 -q -f -o {} {}/copy.db",
                db.display(),
                dir.path().display(),
                out.display(),
                dir.path().display()
            ));
            print!(" {} |", std::fs::metadata(&out).expect("zst").len());
        } else {
            print!(" - |");
        }
        for (have, repo, cmd) in [
            (
                have_restic,
                &restic,
                format!(
                    "restic -q -r {} backup --stdin --stdin-filename app.db < {}",
                    restic.display(),
                    db.display()
                ),
            ),
            (
                have_borg,
                &borg,
                format!(
                    "borg create --compression zstd,3 {}::n{n} - < {}",
                    borg.display(),
                    db.display()
                ),
            ),
        ] {
            if have {
                let before = du(repo);
                sh(&cmd);
                print!(" {} |", du(repo) - before);
            } else {
                print!(" - |");
            }
        }
        println!();
    }
    // Restore speed of the last snapshot (one-page chunks, the choice dbvault makes).
    let repo = &repos[1].1;
    let (_, snap) = repo.find_snapshot("latest", None).expect("latest");
    let t = Instant::now();
    let mut sink = std::io::sink();
    let rep = restore_part(repo, &snap.parts[0], &mut sink).expect("restore");
    let rs = t.elapsed().as_secs_f64();
    println!(
        "\ndbvault fixed 4k (one page): backup {:.0} MB/s over all nights, restore {:.0} MB/s ({} bytes)",
        backup_bytes as f64 / 1e6 / backup_s,
        rep.bytes as f64 / 1e6 / rs,
        rep.bytes
    );
}
