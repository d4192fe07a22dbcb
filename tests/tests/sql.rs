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

/// `sql --table` on PostgreSQL snapshots: the tables' rows loaded into SQLite answer as
/// PostgreSQL does, with the types mapped as the README says, for a direct backup and for
/// a piped pg_dump.
#[test]
fn postgres_tables_load_into_sqlite_and_answer_as_postgres_does() {
    let src = dbvault_tests::PgDb::new("sqlpg");
    src.sql(
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id bigint PRIMARY KEY, qty integer, paid boolean,
             amount numeric(12,2), ratio double precision, note text, raw bytea,
             at timestamptz, tags text[], \"Odd, name\" varchar(20));
         INSERT INTO sales.orders
             SELECT i, i % 7, i % 2 = 0, i * 1.25, i / 3.0,
                    CASE WHEN i % 5 = 0 THEN NULL ELSE E'line\\tone\\nrow ' || i || E' \\\\ ü' END,
                    CASE WHEN i % 4 = 0 THEN NULL ELSE decode(lpad(to_hex(i), 8, '0'), 'hex') END,
                    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',
                    ARRAY['a', 'b' || i], 'o' || i
             FROM generate_series(1, 5000) i;
         CREATE TABLE public.orders (id int);  -- the same name in another schema
         INSERT INTO public.orders VALUES (1), (2);",
    );
    let repo = Repo::new();
    repo.run(&["backup", &src.url(), "--name", "shop"], None)
        .ok();
    let piped = format!("pg_dump --no-owner {}", src.url());
    repo.run(&["backup", "--command", &piped, "--name", "piped"], None)
        .ok();
    let pg = |q: &str| src.sql(q).trim().to_string();
    for name in ["shop", "piped"] {
        let sql = |args: &[&str]| {
            let mut v = vec!["sql", "latest", "--name", name, "-t", "sales.orders"];
            v.extend_from_slice(args);
            repo.run(&v, None)
        };
        let r = sql(&["--csv", "SELECT count(*), sum(qty), sum(paid), sum(amount), count(note), count(raw) FROM orders"]).ok();
        let want = pg("SELECT count(*), sum(qty), sum(paid::int), sum(amount), count(note), count(raw) FROM sales.orders");
        let got = r.text();
        let line = got.lines().nth(1).expect("row");
        // A REAL is written so that it reads back as a REAL (`15628125.0`, as sqlite3).
        assert_eq!(
            line.replace(',', "|").replace(".0|", "|"),
            want.replace(".00", ""),
            "{name}: {got}"
        );
        assert!(
            r.stderr
                .contains("loaded sales.orders as orders: 5000 row(s)"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("amount numeric(12,2)→REAL"),
            "{}",
            r.stderr
        );
        // Text with escapes, bytea, timestamps, arrays, a quoted column name: as PostgreSQL prints them.
        let r = sql(&[
            "--json",
            "SELECT note, hex(raw) AS raw, at, tags, \"Odd, name\" AS odd FROM orders WHERE id = 13",
        ])
        .ok()
        .json();
        let row = &r[0];
        assert_eq!(row["note"], "line\tone\nrow 13 \\ ü");
        assert_eq!(row["raw"], "0000000D");
        assert_eq!(
            row["at"].as_str().expect("at"),
            pg("SELECT at FROM sales.orders WHERE id = 13")
        );
        assert_eq!(row["tags"], "{a,b13}");
        assert_eq!(row["odd"], "o13");
        let nulls = sql(&["--json", "SELECT note, raw FROM orders WHERE id = 20"])
            .ok()
            .json();
        assert!(
            nulls[0]["note"].is_null() && nulls[0]["raw"].is_null(),
            "{nulls}"
        );
        // Two tables of one name: the second is named with its schema.
        let r = repo
            .run(
                &[
                    "sql",
                    "latest",
                    "--name",
                    name,
                    "-t",
                    "sales.orders",
                    "-t",
                    "public.orders",
                    "--csv",
                    "SELECT count(*) FROM \"public.orders\"",
                ],
                None,
            )
            .ok();
        assert_eq!(r.text().lines().nth(1), Some("2"), "{}", r.stderr);
    }
    // Without --table, or a table the snapshot lacks: clear errors.
    let r = repo.run(&["sql", "latest", "--name", "shop", "SELECT 1"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("give --table NAME"), "{}", r.stderr);
    let r = repo.run(
        &[
            "sql", "latest", "--name", "shop", "-t", "nosuch", "SELECT 1",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("nosuch") && r.stderr.contains("sales.orders"),
        "{}",
        r.stderr
    );
    // Writes are refused.
    let r = repo.run(
        &[
            "sql",
            "latest",
            "--name",
            "shop",
            "-t",
            "sales.orders",
            "DELETE FROM orders",
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("readonly")
            || r.stderr.contains("read-only")
            || r.stderr.contains("query_only"),
        "{}",
        r.stderr
    );
}
