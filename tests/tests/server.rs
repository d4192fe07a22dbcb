//! Whole-server PostgreSQL backups: every database and the roles in one snapshot; one
//! chosen database restored into an empty server, with its roles and owners.

use dbvault_tests::{PgCluster, Repo};

#[test]
fn one_database_of_a_server_backup_restores_into_an_empty_server_with_its_roles() {
    let src = PgCluster::new();
    src.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN; CREATE ROLE reporting NOLOGIN;",
    );
    src.sql("postgres", "CREATE DATABASE shop OWNER app_owner");
    src.sql("postgres", "CREATE DATABASE other");
    src.sql(
        "shop",
        "SET ROLE app_owner; CREATE TABLE orders (id int PRIMARY KEY, amount numeric); \
         INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 2000) g; \
         GRANT SELECT ON orders TO reporting;",
    );
    src.sql(
        "other",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);",
    );
    let repo = Repo::new();
    let b = repo
        .run(
            &["backup", &src.url("postgres"), "--all-databases", "--json"],
            None,
        )
        .ok()
        .json();
    let parts: Vec<String> = b["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    for want in [
        "globals",
        "shop/pre-data",
        "shop/public.orders",
        "other/public.t",
        "postgres/pre-data",
    ] {
        assert!(
            parts.iter().any(|p| p == want),
            "{want} missing from {parts:?}"
        );
    }
    // Without --database the restore says which databases there are.
    let r = repo.run(&["restore", "latest", "--to", "-"], None);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("--database") && r.stderr.contains("shop"),
        "{}",
        r.stderr
    );
    let r = repo.run(
        &["restore", "latest", "--database", "nope", "--to", "-"],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no database \"nope\""), "{}", r.stderr);

    let dst = PgCluster::new();
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--database",
            "shop",
            "--to",
            &dst.url("shop"),
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'reporting')"
        )
        .trim(),
        "2"
    );
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        )
        .trim(),
        "app_owner"
    );
    let fp = "SELECT count(*) || ':' || md5(string_agg(id || ',' || amount, ';' ORDER BY id)) FROM orders";
    assert_eq!(dst.sql("shop", fp), src.sql("shop", fp));
    assert_eq!(
        dst.sql(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"
        )
        .trim(),
        "app_owner"
    );
    assert_eq!(
        dst.sql(
            "shop",
            "SELECT has_table_privilege('reporting', 'orders', 'SELECT')"
        )
        .trim(),
        "t"
    );
    // restore-test covers every database of the snapshot (on the source server).
    let r = repo.run(
        &[
            "restore-test",
            "latest",
            "--scratch",
            &src.url("postgres"),
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = r.json();
    let names: Vec<&str> = v["tables"]
        .as_array()
        .expect("t")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"shop/public.orders") && names.contains(&"other/public.t"),
        "{v}"
    );
    assert_eq!(
        src.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'dbvault_restore_test_%'"
        )
        .trim(),
        "0"
    );
    // Only the chosen database came over.
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'other'"
        )
        .trim(),
        "0"
    );
}
