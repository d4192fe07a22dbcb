//! `ls` lists a snapshot's tables with rows and bytes; `diff` says which night a table lost
//! rows, for PostgreSQL and SQLite snapshots.

use dbvault_tests::{PgDb, Repo};

fn find<'a>(v: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    v[list]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {v}"))
}

#[test]
fn ls_and_diff_show_the_night_orders_lost_rows() {
    let db = PgDb::new("lsdiff");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 10200) g; \
         CREATE TABLE customers (id int); INSERT INTO customers VALUES (1), (2);",
    );
    let repo = Repo::new();
    let url = db.url();
    let monday = repo
        .run(&["backup", &url, "--name", "shop", "--json"], None)
        .ok()
        .json();
    db.sql("DELETE FROM orders WHERE id <= 1200");
    let tuesday = repo
        .run(&["backup", &url, "--name", "shop", "--json"], None)
        .ok()
        .json();
    let (a, b) = (
        monday["snapshot_id"].as_str().expect("id"),
        tuesday["snapshot_id"].as_str().expect("id"),
    );

    let ls = repo.run(&["ls", b, "--json"], None).ok().json();
    let orders = find(&ls, "entries", "public.orders");
    assert_eq!(orders["rows"], 9000);
    assert_eq!(orders["kind"], "table-data");
    assert!(orders["bytes"].as_u64().is_some_and(|b| b > 1_200_000));
    assert!(ls["entries"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x["kind"] == "pre-data")));
    let text = repo
        .run(&["ls", "latest", "--name", "shop"], None)
        .ok()
        .text();
    assert!(
        text.contains("public.customers") && text.contains("9000"),
        "{text}"
    );

    let d = repo.run(&["diff", a, b, "--json"], None).ok().json();
    let o = find(&d, "changes", "public.orders");
    assert_eq!(
        (o["rows_before"].clone(), o["rows_after"].clone()),
        (10200.into(), 9000.into())
    );
    assert_eq!(o["status"], "changed");
    // About the rows that went (and the chunks around them), far less than the table.
    // (Chunk boundaries depend on the repository's key: measured 0.2-0.4 MB of 1.4.)
    let changed = o["bytes_changed"].as_u64().expect("bytes_changed");
    assert!(changed > 0 && changed < 700_000, "{changed}");
    assert_eq!(find(&d, "changes", "public.customers")["status"], "same");
    let text = repo.run(&["diff", a, b], None).ok().text();
    assert!(
        text.contains("-1200") && text.contains("public.orders"),
        "{text}"
    );
    assert!(
        !text.contains("public.customers"),
        "unchanged tables listed: {text}"
    );
}

#[test]
fn ls_and_diff_read_the_tables_inside_an_sqlite_snapshot() {
    let repo = Repo::new();
    let path = repo.dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
         INSERT INTO items SELECT i, 'item ' || i FROM n;",
    )
    .expect("sql");
    let src = format!("sqlite:{}", path.display());
    repo.run(&["backup", &src, "--name", "app"], None).ok();
    conn.execute_batch("DELETE FROM items WHERE id > 450; CREATE TABLE extra (x);")
        .expect("sql");
    repo.run(&["backup", &src, "--name", "app"], None).ok();
    let ids = repo.snapshot_ids();
    let ls = repo.run(&["ls", &ids[1], "--json"], None).ok().json();
    assert_eq!(find(&ls, "entries", "items")["rows"], 450);
    let d = repo
        .run(&["diff", &ids[0], &ids[1], "--json"], None)
        .ok()
        .json();
    let items = find(&d, "changes", "items");
    assert_eq!(
        (items["rows_before"].clone(), items["rows_after"].clone()),
        (500.into(), 450.into())
    );
    assert_eq!(find(&d, "changes", "extra")["status"], "added");
}

/// `history` reads the snapshots' records only: a table's rows night after night, and the
/// night they went to zero (PostgreSQL), or the table vanished (SQLite).
#[test]
fn history_shows_the_night_a_table_lost_its_rows() {
    let db = PgDb::new("history");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 3120) g;",
    );
    let repo = Repo::new();
    let url = db.url();
    let night = |t: &str| {
        repo.run(
            &["backup", &url, "--name", "shop", "--time", t, "--json"],
            None,
        )
        .ok()
        .json()["snapshot_id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    night("2026-12-05 01:00");
    let before = night("2026-12-06 01:00");
    db.sql("DELETE FROM orders");
    let after = night("2026-12-07 01:00");
    let h = repo
        .run(
            &["history", "--name", "shop", "--table", "orders", "--json"],
            None,
        )
        .ok()
        .json();
    assert_eq!(h["table"], "public.orders", "{h}");
    let rows: Vec<u64> = h["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["rows"].as_u64().expect("rows"))
        .collect();
    assert_eq!(rows, [3120, 3120, 0], "{h}");
    let falls = h["falls"].as_array().expect("falls");
    assert_eq!(falls.len(), 1, "{h}");
    assert_eq!(falls[0]["before"].as_str(), Some(before.as_str()));
    assert_eq!(falls[0]["after"].as_str(), Some(after.as_str()));
    let text = repo
        .run(&["history", "--name", "shop", "--table", "orders"], None)
        .ok()
        .text();
    assert!(
        text.contains("3120 → 0 rows between the snapshots of 2026-12-06"),
        "{text}"
    );

    // SQLite: a table dropped between two snapshots is named as gone.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("app.db");
    dbvault_tests::sqlite3(
        &path,
        "CREATE TABLE notes (n int); INSERT INTO notes VALUES (1), (2), (3);",
    );
    let src = format!("sqlite:{}", path.display());
    repo.run(&["backup", &src, "--name", "app"], None).ok();
    dbvault_tests::sqlite3(&path, "DROP TABLE notes; CREATE TABLE other (x int);");
    repo.run(&["backup", &src, "--name", "app"], None).ok();
    let h = repo
        .run(
            &["history", "--name", "app", "--table", "notes", "--json"],
            None,
        )
        .ok()
        .json();
    assert_eq!(h["falls"][0]["gone"], true, "{h}");
    assert_eq!(h["falls"][0]["from_rows"], 3, "{h}");
    // A name no snapshot has is one line, exit 1.
    let r = repo.run(&["history", "--name", "app", "--table", "nope"], None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("no snapshot of \"app\" holds a table \"nope\""),
        "{}",
        r.stderr
    );
}
