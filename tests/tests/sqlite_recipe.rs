//! The SQLite 3 a.m. recipe of the README and docs/sqlite.md, as written, on a database
//! that holds foreign-key violations of its own (SQLite does not enforce keys unless asked,
//! so many do): the table comes back beside the live one with every row, as it was.

use dbvault_tests::{sqlite3, Repo};

#[test]
fn a_table_comes_back_beside_the_live_one_despite_the_databases_own_key_violations() {
    let repo = Repo::new();
    let app = repo.dir.path().join("app.db");
    sqlite3(
        &app,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY); \
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INT REFERENCES customers(id), v TEXT); \
         INSERT INTO customers VALUES (1); \
         INSERT INTO orders VALUES (1, 1, 'ok'), (2, 2, 'customer 2 was deleted long ago'), (3, 1, 'ok');",
    );
    let before = sqlite3(&app, "SELECT * FROM orders ORDER BY id");
    repo.run(
        &[
            "backup",
            &format!("sqlite:{}", app.display()),
            "--name",
            "app",
        ],
        None,
    )
    .ok();
    sqlite3(&app, "DELETE FROM orders WHERE id > 1");
    // As the docs write it.
    let r = repo
        .run(
            &[
                "restore",
                "latest",
                "--name",
                "app",
                "--table",
                "orders",
                "--rename-table",
                "orders_restored",
                "--to",
                &format!("sqlite:{}", app.display()),
            ],
            None,
        )
        .ok();
    assert!(r.stderr.contains("(3 rows)"), "{}", r.stderr);
    assert_eq!(
        sqlite3(&app, "SELECT * FROM orders_restored ORDER BY id"),
        before
    );
    assert_eq!(sqlite3(&app, "SELECT count(*) FROM orders").trim(), "1");
    assert_eq!(sqlite3(&app, "PRAGMA integrity_check").trim(), "ok");
}
