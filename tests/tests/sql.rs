//! `dbvault sql`: queries on an SQLite snapshot without restoring it. A primary-key lookup
//! on a 1 GB snapshot reads a few pages from the repository, locally and on S3 (Garage),
//! and answers what the database itself answers.

use dbvault_tests::garage::Garage;
use dbvault_tests::{run_cmd, Repo, Run};

/// Bytes `dbvault sql` says it read from the repository.
fn bytes_read(r: &Run) -> (u64, String) {
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("from the repository"))
        .unwrap_or_else(|| panic!("no read summary: {}", r.stderr))
        .to_string();
    let chunks: u64 = line
        .split("read ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (chunks, line)
}

#[test]
fn a_lookup_on_a_1_gb_snapshot_reads_a_few_pages_locally_and_on_s3() {
    let repo = Repo::new();
    let db = repo.dir.path().join("big.db");
    {
        let c = rusqlite::Connection::open(&db).expect("create");
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, pad BLOB);")
            .expect("schema");
        let tx = c.unchecked_transaction().expect("tx");
        {
            let mut st = tx
                .prepare("INSERT INTO t VALUES (?1, ?2, randomblob(900))")
                .expect("prepare");
            for i in 1..=1_100_000i64 {
                st.execute(rusqlite::params![i, format!("row {i}")])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let size = std::fs::metadata(&db).expect("size").len();
    assert!(size > 1_000_000_000, "the database is only {size} bytes");
    let src = format!("sqlite:{}", db.display());
    repo.run(&["backup", &src, "--name", "big"], None).ok();

    let q = "SELECT id, name FROM t WHERE id = 765432";
    let r = repo
        .run(&["sql", "latest", q, "--name", "big", "--json"], None)
        .ok();
    let rows = r.json();
    assert_eq!(rows[0]["id"], 765_432);
    assert_eq!(rows[0]["name"], "row 765432");
    let (chunks, line) = bytes_read(&r);
    eprintln!("local: {line}");
    assert!(chunks <= 16, "a lookup read {chunks} chunks: {line}");
    assert!(line.contains(" KiB") || line.contains(" B "), "{line}");

    // Table and CSV output, and a query the database refuses.
    let t = repo
        .run(
            &["sql", "latest", "SELECT count(*) AS n FROM t WHERE id < 11"],
            None,
        )
        .ok();
    assert!(
        t.text().contains("n ") && t.text().contains("10") && t.text().contains("(1 row)"),
        "{}",
        t.text()
    );
    let c = repo
        .run(
            &[
                "sql",
                "latest",
                "SELECT id, name FROM t WHERE id IN (1, 2)",
                "--csv",
            ],
            None,
        )
        .ok();
    assert_eq!(c.text(), "id,name\n1,row 1\n2,row 2\n");
    let w = repo.run(&["sql", "latest", "DELETE FROM t"], None);
    assert_eq!(w.code, Some(1), "a write was not refused");

    // The same on S3: copied there, then looked up with few requests.
    let g = Garage::start();
    run_cmd(g.dbvault(&g.endpoint, "sql", &["init"]), None).ok();
    let mut cp = repo.cmd(&["--s3-path-style", "copy", "--to-repo", &g.url("sql")]);
    cp.env("DBVAULT_TO_PASSWORD", dbvault_tests::PASSWORD);
    for (k, v) in g.env() {
        cp.env(k, v);
    }
    run_cmd(cp, None).ok();
    let r = run_cmd(
        g.dbvault(
            &g.endpoint,
            "sql",
            &["--no-cache", "sql", "latest", q, "--json"],
        ),
        None,
    )
    .ok();
    assert_eq!(r.json()[0]["name"], "row 765432");
    let (chunks, line) = bytes_read(&r);
    eprintln!("s3: {line}");
    assert!(chunks <= 16, "a lookup on S3 read {chunks} chunks: {line}");
}
