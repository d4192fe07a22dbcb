//! Backup selections (`--table`, `--exclude-table`, `--exclude-table-data`, `--schema`,
//! `--exclude-schema`, `--schema-only`) give what pg_dump gives with the same options: the
//! same tables with rows (as COPY parts of their own), the same schema and rows once
//! restored, and the snapshot says it is selective.

use std::collections::BTreeSet;
use std::path::Path;

use dbvault_tests::pgfixture::{conn, pg_dump_with};
use dbvault_tests::{PgDb, Repo};

/// `schema.table` of every TABLE DATA entry of a pg_dump script.
fn data_entries(script: &str) -> BTreeSet<String> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("-- Data for Name: "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once("; Type: TABLE DATA; Schema: ")?;
            let schema = rest.split_once("; Owner: ").map_or(rest, |(s, _)| s);
            Some(format!("{schema}.{name}"))
        })
        .collect()
}

fn table_parts(repo: &Repo, id: &str) -> BTreeSet<String> {
    let ls = repo.run(&["ls", id, "--json"], None).ok().json();
    ls["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "table-data")
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

/// Backs `src` up with `args`, restores it into one new database and pg_dump's dump with
/// the same `args` into another (each first given `setup`), and compares them.
fn same_as_pg_dump(repo: &Repo, src: &PgDb, args: &[&str], setup: &str) {
    let dump = pg_dump_with(&[args, &["-d", &conn(src)]].concat());
    let with_pg_dump = PgDb::new("selpg");
    let with_dbvault = PgDb::new("seldv");
    if !setup.is_empty() {
        with_pg_dump.sql(setup);
        with_dbvault.sql(setup);
    }
    let file = repo.dir.path().join("dump.sql");
    std::fs::write(&file, &dump).expect("write dump");
    with_pg_dump.load(&file);

    let mut backup = vec!["backup", "--json", "--name", "sel"];
    let url = src.url();
    backup.push(&url);
    backup.extend_from_slice(args);
    let snap = repo.run(&backup, None).ok().json();
    let id = snap["snapshot_id"].as_str().expect("id").to_string();
    let restored = repo
        .run(&["restore", &id, "--to", &with_dbvault.url()], None)
        .ok();

    assert_eq!(
        table_parts(repo, &id),
        data_entries(&dump),
        "{args:?}: the tables with rows differ from pg_dump's"
    );
    assert_eq!(
        with_dbvault.fingerprint(),
        with_pg_dump.fingerprint(),
        "{args:?}: rows differ from pg_dump's"
    );
    assert_eq!(
        with_dbvault.schema(),
        with_pg_dump.schema(),
        "{args:?}: schema differs from pg_dump's"
    );
    // It passes a restore-test (readied as a DBA would ready a database for such a dump).
    let tested = repo.run(&["restore-test", &id], None);
    assert_eq!(
        tested.code,
        Some(0),
        "{args:?}: restore-test: {}",
        tested.text()
    );
    assert!(
        tested.text().contains("holds only part of the database"),
        "{args:?}: restore-test does not say the snapshot is selective: {}",
        tested.text()
    );
    // The snapshot says what it is, and restore says so too.
    let ls = repo.run(&["ls", &id], None).ok().text();
    assert!(
        ls.contains("note: selective backup (") && ls.contains(args[0]),
        "{args:?}: ls does not say the snapshot is selective:\n{ls}"
    );
    assert!(
        restored.stderr.contains("holds only part of the database"),
        "{args:?}: restore did not say the snapshot is selective: {}",
        restored.stderr
    );
}

#[test]
fn selections_give_what_pg_dump_gives_with_the_same_options() {
    let src = PgDb::new("selsrc");
    src.load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hard.sql"));
    let repo = Repo::new();
    // Case folds outside quotes; `*` and `?` are wildcards.
    same_as_pg_dump(
        &repo,
        &src,
        &[
            "--table",
            "app.t*",
            "-t",
            "app.anima?",
            "--table",
            "APP.EMPTY_ONE",
        ],
        "CREATE SCHEMA app",
    );
    same_as_pg_dump(
        &repo,
        &src,
        &[
            "--exclude-table",
            "app.big",
            "-T",
            "app.events*",
            "--exclude-table-data",
            "app.tricky",
            "--exclude-table-data",
            "\"Sales Dept\".*",
        ],
        "",
    );
    // An unqualified pattern matches only what the search path shows: `ord*` is not
    // app.orders, so its rows stay.
    same_as_pg_dump(
        &repo,
        &src,
        &[
            "--exclude-schema",
            "\"Sales Dept\"",
            "--exclude-table-data",
            "ord*",
            "--exclude-table-data",
            "app.dog",
        ],
        "",
    );
    // A dump of schema public creates it: the targets start without one.
    same_as_pg_dump(
        &repo,
        &src,
        &["--schema", "public", "-n", "APP"],
        "DROP SCHEMA public CASCADE",
    );
    same_as_pg_dump(&repo, &src, &["--schema-only"], "");
}

#[test]
fn a_selection_that_matches_nothing_fails_as_pg_dump_does_and_stores_nothing() {
    let src = PgDb::new("selnone");
    src.sql("CREATE TABLE t (a int); INSERT INTO t VALUES (1)");
    let repo = Repo::new();
    let r = repo.run(&["backup", &src.url(), "--table", "nosuch*"], None);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no matching tables were found")
            && r.stderr.contains("no snapshot recorded"),
        "{}",
        r.stderr
    );
    assert!(repo.snapshot_ids().is_empty());
    let r = repo.run(&["backup", "-", "--table", "t"], Some(b"x"));
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("select from a postgres:// source"),
        "{}",
        r.stderr
    );
    let r = repo.run(&["backup", &src.url(), "--table", "\"open"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("unclosed double quote"), "{}", r.stderr);
}
