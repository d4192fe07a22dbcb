//! Damage met while restoring into a database: the restore fails (exit 1) naming it, and
//! nothing of the damaged part is committed, whether the part goes through COPY or, as a
//! dump of INSERT statements does, through psql.

use dbvault_tests::pgfixture::{conn, pg_dump_with};
use dbvault_tests::{PgDb, Repo};

/// Flips a bit at `at` (a fraction) of the repository's only pack.
fn damage_pack(repo: &Repo, at: f64) {
    let packs: Vec<_> = repo
        .files()
        .into_keys()
        .filter(|p| p.to_string_lossy().contains("/data/"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut bytes = std::fs::read(&packs[0]).expect("pack");
    let pos = (bytes.len() as f64 * at) as usize;
    bytes[pos] ^= 0x10;
    let _ = std::fs::remove_file(&packs[0]);
    std::fs::write(&packs[0], &bytes).expect("write");
}

#[test]
fn a_damaged_table_part_commits_none_of_its_rows() {
    let src = PgDb::new("dmgsrc");
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, pad text); \
         INSERT INTO t SELECT g, md5(g::text) || repeat('x', 200) FROM generate_series(1, 40000) g",
    );
    for (how, extra) in [("COPY", &[][..]), ("INSERT", &["--inserts"][..])] {
        let repo = Repo::new();
        let dump = pg_dump_with(&[extra, &["-d", &conn(&src)]].concat());
        repo.backup(dump.as_bytes(), &["--name", "shop"]);
        // Late in the pack: the table's first rows are sent before the damage is met.
        damage_pack(&repo, 0.8);
        let dst = PgDb::new("dmgdst");
        let r = repo.run(&["restore", "latest", "--to", &dst.url()], None);
        assert_eq!(r.code, Some(3), "{how}: {}", r.stderr);
        assert!(
            r.stderr.contains("part \"public.t\" is damaged"),
            "{how}: {}",
            r.stderr
        );
        // It says what the target now holds and the way on.
        assert!(
            r.stderr.contains("restore again with --clean")
                && r.stderr.contains("one by one with --table"),
            "{how}: {}",
            r.stderr
        );
        let rows = dst.sql("SELECT count(*) FROM t");
        assert_eq!(
            rows.trim(),
            "0",
            "{how}: rows of a damaged part were committed"
        );
    }
}

#[test]
fn damage_to_the_schema_says_no_table_restores_from_that_snapshot() {
    let src = PgDb::new("dmgpre");
    src.sql(
        "CREATE TABLE t (id int PRIMARY KEY, pad text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
    );
    let repo = Repo::new();
    let dump = pg_dump_with(&["-d", &conn(&src)]);
    repo.backup(dump.as_bytes(), &["--name", "shop"]);
    // Early in the pack: the pre-data part's bytes (it is stored first).
    damage_pack(&repo, 0.005);
    let dst = PgDb::new("dmgpredst");
    let r = repo.run(&["restore", "latest", "--to", &dst.url()], None);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("pre-data")
            && r.stderr.contains("no table of this snapshot restores")
            && !r.stderr.contains("one by one with --table"),
        "{}",
        r.stderr
    );
    // And so it is: a table restore fails on the same damage.
    let t = repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "public.t",
            "--to",
            &dst.url(),
        ],
        None,
    );
    assert_eq!(t.code, Some(3), "{}", t.stderr);
}
