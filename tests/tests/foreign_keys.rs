//! A restore into a database checks every foreign key, whichever plan the server uses for
//! the check: a key whose columns lead an index of its table is checked with hash joins
//! turned off (a merge of two index scans), the others as the server plans them.

use dbvault_tests::{PgDb, Repo};

/// Backs up `src` and restores it into a new database; returns the restore's run.
fn backup_and_restore(repo: &Repo, src: &PgDb, tag: &str) -> (dbvault_tests::Run, PgDb) {
    repo.run(&["backup", &src.url()], None).ok();
    let dst = PgDb::new(tag);
    let r = repo.run(&["restore", "latest", "--to", &dst.url()], None);
    (r, dst)
}

/// The restore failed on the foreign key `key`.
fn failed_on(r: &dbvault_tests::Run, key: &str) {
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains(key) && r.stderr.contains("violates foreign key"),
        "{}",
        r.stderr
    );
}

#[test]
fn rows_that_break_a_foreign_key_fail_the_restore_whatever_the_plan() {
    let src = PgDb::new("fk");
    src.sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY);
         CREATE TABLE items (order_id bigint NOT NULL REFERENCES orders(id), line int,
                             PRIMARY KEY (order_id, line));
         CREATE TABLE notes (order_id bigint REFERENCES orders(id), body text);
         INSERT INTO orders SELECT g FROM generate_series(1, 20000) g;
         INSERT INTO items SELECT g, l FROM generate_series(1, 20000) g, generate_series(1, 3) l;
         INSERT INTO notes SELECT g, 'note' FROM generate_series(1, 20000, 7) g;",
    );
    let repo = Repo::new();

    // An item whose order is gone, as rows written with the key's triggers off leave it
    // (`session_replication_role = replica`, a faulty replica). `items` is keyed by
    // (order_id, line): its foreign key is checked by the merge plan.
    src.sql("SET session_replication_role = replica; INSERT INTO items VALUES (999999, 1);");
    let (r, _) = backup_and_restore(&repo, &src, "fk_items");
    failed_on(&r, "items_order_id_fkey");

    // The same in `notes`, whose key no index leads with: the server's own plan.
    src.sql(
        "DELETE FROM items WHERE order_id = 999999;
         SET session_replication_role = replica; INSERT INTO notes VALUES (888888, 'lost');",
    );
    let (r, _) = backup_and_restore(&repo, &src, "fk_notes");
    failed_on(&r, "notes_order_id_fkey");

    // Consistent again: the restore succeeds with every key in place.
    src.sql("DELETE FROM notes WHERE order_id = 888888;");
    let (r, dst) = backup_and_restore(&repo, &src, "fk_ok");
    r.ok();
    assert_eq!(dst.fingerprint(), src.fingerprint());
    assert_eq!(dst.schema(), src.schema());
}
