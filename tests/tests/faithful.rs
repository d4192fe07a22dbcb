//! A direct PostgreSQL backup holds what pg_dump holds, or fails as pg_dump fails.
//!
//! The proof is equivalence: the fixture (tables of every awkward kind, large objects, an
//! unlogged table, an extension's configuration data, row-level security, values whose
//! text depends on session settings) restored from a direct snapshot and from pg_dump's
//! own dump gives the same `pg_dump`, schema, data and large objects alike.

use dbvault_tests::pgfixture::{
    conn, copy_with_pg_dump, faithful_db, large_objects, load_faithful, pg_dump,
};
use dbvault_tests::{PgCluster, PgDb, Repo};

/// The first differing line of two dumps, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| format!("line {}: {x:?} vs {y:?}", i + 1))
        .unwrap_or_else(|| {
            format!(
                "lengths {} vs {} lines",
                a.lines().count(),
                b.lines().count()
            )
        })
}

#[test]
fn a_direct_snapshot_restores_to_what_pg_dump_restores() {
    let src = faithful_db("faithful");
    let repo = Repo::new();
    let b = repo
        .run(&["backup", &src.url(), "--json"], None)
        .ok()
        .json();
    let parts = b["parts"].as_array().expect("parts");
    let lo = parts
        .iter()
        .find(|p| p["name"] == "large-objects")
        .unwrap_or_else(|| panic!("no large-objects part in {parts:?}"));
    assert_eq!(lo["rows"], 4, "{lo}");
    let settings = parts
        .iter()
        .find(|p| p["name"] == "public.dbv_settings")
        .expect("the extension's configuration table");
    assert_eq!(settings["rows"], 2, "only the rows users added: {settings}");
    assert!(
        parts.iter().all(|p| p["name"] != "public.dbv_cache"),
        "an extension member that is not configuration has no data part"
    );

    let from_snapshot = PgDb::new("faithful_direct");
    repo.run(
        &[
            "restore",
            b["snapshot_id"].as_str().expect("id"),
            "--to",
            &from_snapshot.url(),
        ],
        None,
    )
    .ok();
    let from_pg_dump = PgDb::new("faithful_pgdump");
    copy_with_pg_dump(&conn(&src), &conn(&from_pg_dump));

    let (a, b) = (
        pg_dump(&conn(&from_snapshot)),
        pg_dump(&conn(&from_pg_dump)),
    );
    assert!(a == b, "pg_dump differs: {}", first_difference(&a, &b));
    assert!(
        a.contains("COMMENT ON LARGE OBJECT") && a.contains("lowrite"),
        "the fixture's large objects are in the dump"
    );
    let los = large_objects(&conn(&src));
    assert_eq!(los.lines().count(), 4);
    assert_eq!(large_objects(&conn(&from_snapshot)), los);
    assert_eq!(from_snapshot.fingerprint(), src.fingerprint());

    // restore-test counts and hashes the large objects, and reads every table back as
    // pg_dump would (regclass values and all).
    let t = repo
        .run(&["restore-test", "latest", "--json"], None)
        .ok()
        .json();
    assert_eq!(t["ok"], true, "{t}");
    let lo_row = t["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|r| r["name"] == "large objects")
        .unwrap_or_else(|| panic!("no large objects in {t}"));
    assert_eq!(lo_row["rows_restored"], 4);
    assert_eq!(lo_row["rows_recorded"], 4);

    // A table restore reads only that table's parts (never the large objects).
    let r = repo.run(
        &["restore", "latest", "--table", "app.files", "--to", "-"],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.text().contains("lowrite"));

    // The next night, one more small large object: the 3 MB ones are not stored again.
    src.sql("SELECT lo_from_bytea(0, 'one more')");
    let next = repo
        .run(&["backup", &src.url(), "--json"], None)
        .ok()
        .json();
    let added = next["bytes_added"].as_u64().expect("bytes_added");
    assert!(
        added < 100_000,
        "{added} bytes added for one small large object"
    );
    let lo = next["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|p| p["name"] == "large-objects")
        .expect("large-objects");
    assert_eq!(lo["rows"], 5);
}

#[test]
fn row_level_security_stops_the_backup_unless_asked_for() {
    let c = PgCluster::new();
    c.sql("postgres", "CREATE ROLE dbv_reader LOGIN");
    c.sql("postgres", "CREATE DATABASE rls");
    c.sql(
        "rls",
        "CREATE TABLE secret (id int PRIMARY KEY, owner text NOT NULL, body text); \
         INSERT INTO secret SELECT g, CASE WHEN g % 2 = 0 THEN 'dbv_reader' ELSE 'someone' END, 'b' || g \
           FROM generate_series(1, 1000) g; \
         ALTER TABLE secret ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY own_rows ON secret USING (owner = current_user); \
         CREATE TABLE open (x int); INSERT INTO open VALUES (1); \
         GRANT SELECT ON secret, open TO dbv_reader;",
    );
    let url = format!(
        "postgresql://dbv_reader@/rls?host={}&port={}",
        c.dir.display(),
        c.port
    );
    let repo = Repo::new();
    let before = repo.files();
    let r = repo.run(&["backup", &url], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let line = r.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    for want in [
        "no snapshot recorded",
        "public.secret",
        "row-level security",
        "\"dbv_reader\"",
        "BYPASSRLS",
        "--enable-row-security",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
    assert!(repo.snapshot_ids().is_empty());
    let snapshots_now: Vec<_> = repo
        .files()
        .into_keys()
        .filter(|p| p.starts_with("snapshots"))
        .collect();
    assert!(snapshots_now.is_empty(), "{snapshots_now:?}");
    assert!(before.keys().all(|k| repo.files().contains_key(k)));

    // Asked for: the visible rows, and the snapshot says it was filtered.
    repo.run(&["backup", &url, "--enable-row-security"], None)
        .ok();
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let snap = &list[0];
    let notes = snap["source"]["notes"].to_string();
    assert!(notes.contains("row-level security"), "{snap}");
    let secret = snap["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|p| p["name"] == "public.secret")
        .expect("secret");
    assert_eq!(secret["rows"], 500);
    let human = repo.run(&["snapshots"], None).ok().text();
    assert!(
        human.contains("note: backed up with --enable-row-security"),
        "{human}"
    );

    // As the owner (a superuser here) nothing is filtered and no note is written.
    repo.run(&["backup", &c.url("rls"), "--json"], None).ok();
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let last = &list[1];
    assert!(last["source"].get("notes").is_none(), "{last}");
    let secret = last["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|p| p["name"] == "public.secret")
        .expect("secret");
    assert_eq!(secret["rows"], 1000);
}

#[test]
fn a_whole_server_snapshot_holds_the_same() {
    let src = PgCluster::new();
    src.sql("postgres", "CREATE DATABASE shop");
    load_faithful(&src, "shop");
    let repo = Repo::new();
    repo.run(&["backup", &src.url("postgres"), "--all-databases"], None)
        .ok();
    let dst = PgCluster::new();
    repo.run(
        &[
            "restore",
            "latest",
            "--database",
            "shop",
            "--to",
            &dst.url("shop"),
        ],
        None,
    )
    .ok();
    dst.sql("postgres", "CREATE DATABASE shop_pg_dump");
    copy_with_pg_dump(&src.url("shop"), &dst.url("shop_pg_dump"));
    let (a, b) = (pg_dump(&dst.url("shop")), pg_dump(&dst.url("shop_pg_dump")));
    assert!(a == b, "pg_dump differs: {}", first_difference(&a, &b));
    assert_eq!(
        large_objects(&dst.url("shop")),
        large_objects(&src.url("shop"))
    );
    let t = repo
        .run(
            &[
                "restore-test",
                "latest",
                "--scratch",
                &dst.url("postgres"),
                "--json",
            ],
            None,
        )
        .ok()
        .json();
    assert_eq!(t["ok"], true, "{t}");
    assert!(
        t["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .any(|r| r["name"] == "shop/large objects" && r["rows_restored"] == 4),
        "{t}"
    );
}

/// A database whose encoding is not UTF-8: COPY must send the bytes in the encoding the
/// dump declares, or every non-ASCII character is converted twice.
fn latin1_db(tag: &str) -> PgDb {
    let db = PgDb::new(tag);
    dbvault_tests::psql("postgres", &format!("DROP DATABASE {}", db.name));
    dbvault_tests::psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            db.name
        ),
    );
    db
}

#[test]
fn a_latin1_database_round_trips() {
    let src = latin1_db("latin1");
    // Code points spelled out: the text does not depend on psql's client encoding.
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, s text); \
         INSERT INTO t VALUES (1, U&'Gr\\00F6\\00DFe caf\\00E9 \\00F1'), (2, 'plain');",
    );
    let utf8 =
        "SELECT length(s) || ':' || encode(convert_to(s, 'UTF8'), 'escape') FROM t WHERE id = 1";
    assert_eq!(
        src.sql(utf8).trim(),
        "12:Gr\\303\\266\\303\\237e caf\\303\\251 \\303\\261"
    );
    let repo = Repo::new();
    repo.run(&["backup", &src.url()], None).ok();
    let dst = latin1_db("latin1_restored");
    repo.run(&["restore", "latest", "--to", &dst.url()], None)
        .ok();
    assert_eq!(dst.sql(utf8), src.sql(utf8));
    assert_eq!(pg_dump(&conn(&dst)), pg_dump(&conn(&src)));
    let t = repo
        .run(&["restore-test", "latest", "--json"], None)
        .ok()
        .json();
    assert_eq!(t["ok"], true, "{t}");
}
