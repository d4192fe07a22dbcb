//! `pg_restore --list` / `pg_restore -L`, as a DBA uses them: list every archive entry of
//! a snapshot (views, sequences, functions, indexes, constraints, triggers with their
//! owners), keep the lines wanted in a list file, restore those into an empty database, and
//! the table, its rows, its index and its trigger are there; then `diff` picks snapshots
//! by tag.

use dbvault_tests::{PgDb, Repo};

#[test]
fn a_list_file_restores_the_chosen_entries_with_what_they_need() {
    let db = PgDb::new("entries");
    db.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text); \
         CREATE TABLE audit (id serial PRIMARY KEY, what text); \
         INSERT INTO orders SELECT g, g * 1.5, 'n' || g FROM generate_series(1, 5000) g; \
         CREATE INDEX orders_total ON orders (total); \
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100; \
         CREATE SEQUENCE invoice_no START 42; \
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END$$; \
         CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();",
    );
    let want = db.fingerprint();
    let repo = Repo::new();
    repo.run(
        &[
            "backup",
            &db.url(),
            "--name",
            "shop",
            "--tag",
            "before-0042",
        ],
        None,
    )
    .ok();

    let listed = repo
        .run(&["ls", "latest", "--name", "shop", "--entries"], None)
        .ok();
    let text = listed.text();
    for kind in [
        "TABLE public orders",
        "VIEW public big_orders",
        "SEQUENCE public invoice_no",
        "FUNCTION public touch()",
        "INDEX public orders_total",
        "CONSTRAINT public orders orders_pkey",
        "TRIGGER public orders orders_touch",
        "TABLE DATA public orders",
        "SEQUENCE SET public invoice_no",
    ] {
        assert!(text.contains(kind), "{kind} not listed:\n{text}");
    }
    assert!(text.contains("5000 rows"), "{text}");
    let json = repo
        .run(
            &["ls", "latest", "--name", "shop", "--entries", "--json"],
            None,
        )
        .ok()
        .json();
    let entries = json["entries"].as_array().expect("entries");
    assert!(entries
        .iter()
        .all(|e| e["id"].as_u64().is_some() && e["owner"].is_string()));

    // Keep the function, the orders' data, its index, key and trigger: comment out the rest.
    let keep = [
        "FUNCTION public touch()",
        "TABLE DATA public orders",
        "INDEX public orders_total",
        "CONSTRAINT public orders orders_pkey",
        "TRIGGER public orders orders_touch",
    ];
    let list: String = text
        .lines()
        .map(|l| {
            if l.starts_with(';') || keep.iter().any(|k| l.contains(k)) {
                format!("{l}\n")
            } else {
                format!(";{l}\n")
            }
        })
        .collect();
    let file = repo.dir.path().join("chosen.list");
    std::fs::write(&file, list).expect("write");
    let target = PgDb::new("entries_to");
    let restore_list = |name: &str, to: &str| {
        let list = file.to_str().expect("utf-8");
        repo.run(
            &[
                "restore",
                "latest",
                "--name",
                name,
                "--list-file",
                list,
                "--to",
                to,
            ],
            None,
        )
    };
    let r = restore_list("shop", &target.url()).ok();
    // The data's table came along (the target had none), and said so.
    assert!(
        r.stderr.contains("TABLE public.orders) added"),
        "{}",
        r.stderr
    );
    let got = target.fingerprint();
    assert_eq!(got.get("public.orders"), want.get("public.orders"));
    assert!(
        !got.contains_key("public.audit"),
        "audit was not chosen: {got:?}"
    );
    let objects = target.sql(
        "SELECT string_agg(name, ',' ORDER BY name) FROM (SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public' \
         UNION ALL SELECT tgname FROM pg_trigger WHERE NOT tgisinternal \
         UNION ALL SELECT relname FROM pg_class WHERE relkind IN ('v', 'S') AND relnamespace = 'public'::regnamespace) x",
    );
    assert_eq!(
        objects.trim(),
        "orders_pkey,orders_total,orders_touch",
        "only what was chosen"
    );
    // The trigger works: the function came too.
    target.sql("UPDATE orders SET note = note WHERE id = 1");
    assert_eq!(
        target.sql("SELECT note FROM orders WHERE id = 1").trim(),
        "n1!"
    );
    let got = target.fingerprint();

    // Again into the same database: all or nothing, and it says why.
    let again = restore_list("shop", &target.url());
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(target.fingerprint(), got, "nothing changed");

    // A list file that is not one.
    std::fs::write(&file, "orders\n").expect("write");
    let bad = restore_list("shop", "-");
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("line 1") && bad.stderr.contains("entry id"),
        "{}",
        bad.stderr
    );

    // diff by tag: the tagged night against the newest.
    db.sql("DELETE FROM orders WHERE id > 4000");
    repo.run(&["backup", &db.url(), "--name", "shop"], None)
        .ok();
    let before = repo
        .run(
            &[
                "diff",
                "latest",
                "latest",
                "--name",
                "shop",
                "--tag",
                "before-0042",
                "--json",
            ],
            None,
        )
        .ok()
        .json();
    assert!(
        before["a"] == before["b"],
        "both ends the tagged snapshot: {before}"
    );
    let tagged = before["a"].as_str().expect("id").to_string();
    let d = repo
        .run(
            &["diff", &tagged, "latest", "--name", "shop", "--json"],
            None,
        )
        .ok()
        .json();
    let orders = d["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["name"] == "public.orders")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            orders["rows_before"].as_u64(),
            orders["rows_after"].as_u64()
        ),
        (Some(5000), Some(4000)),
        "{d}"
    );

    // An id with a tag it does not have is not taken for the tagged one.
    let newest = d["b"].as_str().expect("id").to_string();
    let wrong = repo.run(
        &["restore", &newest[..8], "--tag", "before-0042", "--to", "-"],
        None,
    );
    assert_eq!(wrong.code, Some(1), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("with tag before-0042"),
        "{}",
        wrong.stderr
    );

    // A custom-format archive keeps its dump ids: `pg_restore -l` of it is a list file.
    let archive = repo.dir.path().join("shop.dump");
    let dumped = dbvault_tests::sh(
        &format!("{} -Fc > '{}'", db.dump_cmd(), archive.display()),
        &[],
    );
    assert_eq!(dumped.code, Some(0), "{}", dumped.stderr);
    let bytes = std::fs::read(&archive).expect("archive");
    repo.run(&["backup", "-", "--name", "shopfc"], Some(&bytes))
        .ok();
    let pg_list = dbvault_tests::sh(&format!("pg_restore -l '{}'", archive.display()), &[]);
    assert_eq!(pg_list.code, Some(0), "{}", pg_list.stderr);
    let ours = repo
        .run(&["ls", "latest", "--name", "shopfc", "--entries"], None)
        .ok()
        .text();
    let pg_text = pg_list.text();
    let table_data = pg_text
        .lines()
        .find(|l| l.contains("TABLE DATA public orders"))
        .expect("pg_restore lists the data");
    let dump_id = table_data.split(';').next().expect("id");
    assert!(
        ours.lines()
            .any(|l| l.starts_with(&format!("{dump_id}; TABLE DATA public orders"))),
        "the same dump id as pg_restore -l ({table_data}):\n{ours}"
    );
    let keep: String = pg_text
        .lines()
        .filter(|l| {
            l.starts_with(';')
                || l.contains("TABLE DATA public orders")
                || l.contains("FUNCTION public touch()")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, keep).expect("write");
    let third = PgDb::new("entries_fc");
    restore_list("shopfc", &third.url()).ok();
    assert_eq!(
        third.fingerprint().get("public.orders"),
        db.fingerprint().get("public.orders")
    );
}
