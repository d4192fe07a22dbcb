//! PostgreSQL: pg_dump streams round-trip through dbvault into a database, tables come back
//! one at a time under a new name, and dumps that die mid-stream record nothing.

use std::path::Path;

use dbvault_tests::{sh, PgDb, Repo, PASSWORD};

fn fixture() -> PgDb {
    let db = PgDb::new("src");
    db.load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hard.sql"));
    db
}

fn repo_env(repo: &Repo) -> Vec<(&'static str, String)> {
    vec![
        ("DBVAULT_REPO", repo.path.display().to_string()),
        ("DBVAULT_PASSWORD", PASSWORD.to_string()),
    ]
}

fn pipe(repo: &Repo, cmd: &str) -> dbvault_tests::Run {
    let env = repo_env(repo);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sh(
        &format!("{cmd} | {} backup - --json", dbvault_tests::bin().display()),
        &env,
    )
}

#[test]
fn pg_dump_pipe_and_command_round_trip_into_a_database() {
    let src = fixture();
    let repo = Repo::new();
    let r = pipe(&repo, &src.dump_cmd()).ok();
    let b = r.json();
    let parts: Vec<String> = repo.run(&["snapshots", "--json"], None).ok().json()[0]["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(parts.first().map(String::as_str), Some("pre-data"));
    assert_eq!(parts.last().map(String::as_str), Some("post-data"));
    for t in [
        "app.big",
        "app.tricky",
        "Sales Dept.Kunden Ü",
        "app.events_2025",
        "app.empty_one",
        "public.customers",
    ] {
        assert!(parts.iter().any(|p| p == t), "no part {t} in {parts:?}");
    }
    // The stream comes back byte for byte.
    let dump = sh(&src.dump_cmd(), &[]).ok().stdout;
    let out = repo
        .restore(b["snapshot_id"].as_str().expect("id"))
        .ok()
        .stdout;
    let strip = |d: &[u8]| -> String {
        String::from_utf8_lossy(d)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&out), strip(&dump));

    // The same through --command, then into a fresh database.
    repo.run(
        &["backup", "--command", &src.dump_cmd(), "--name", "src"],
        None,
    )
    .ok();
    let dst = PgDb::new("dst");
    repo.run(
        &["restore", "latest", "--name", "src", "--to", &dst.url()],
        None,
    )
    .ok();
    assert_eq!(dst.fingerprint(), src.fingerprint());
    assert_eq!(dst.schema(), src.schema());
}

#[test]
fn one_table_comes_back_beside_the_live_one() {
    let src = fixture();
    let repo = Repo::new();
    repo.run(
        &["backup", "--command", &src.dump_cmd(), "--name", "src"],
        None,
    )
    .ok();
    let original = src.fingerprint();
    // The 3 a.m. accident.
    src.sql("DELETE FROM app.orders WHERE customer_id < 100");
    let after_delete = src.fingerprint();
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.orders",
            "--rename-table",
            "orders_restored",
            "--to",
            &src.url(),
        ],
        None,
    )
    .ok();
    let now = src.fingerprint();
    for (t, fp) in &after_delete {
        assert_eq!(now.get(t), Some(fp), "{t} changed");
    }
    assert_eq!(
        now.get("app.orders_restored"),
        original.get("app.orders"),
        "restored rows differ"
    );
    // Its own indexes, constraints, defaults and triggers came along, renamed.
    let idx = src.sql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'orders_restored'");
    assert!(
        idx.contains("orders_restored_pkey") && idx.contains("orders_restored_customer"),
        "{idx}"
    );
    let fk = src.sql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'app.orders_restored'::regclass AND contype = 'f'");
    assert_eq!(fk.trim(), "1");
    let trg = src.sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.orders_restored'::regclass AND NOT tgisinternal");
    assert_eq!(trg.trim(), "1");
    // The deleted rows go back with plain SQL.
    src.sql("INSERT INTO app.orders (id, customer_id, total, tags, doc, docb, blob, at) OVERRIDING SYSTEM VALUE \
             SELECT id, customer_id, total, tags, doc, docb, blob, at FROM app.orders_restored WHERE customer_id < 100");
    assert_eq!(
        src.fingerprint().get("app.orders"),
        original.get("app.orders")
    );
    // Quoted, mixed-case, unicode names.
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "\"Sales Dept\".\"Kunden Ü\"",
            "--rename-table",
            "Kunden alt",
            "--to",
            &src.url(),
        ],
        None,
    )
    .ok();
    assert_eq!(
        src.fingerprint().get("\"Sales Dept\".\"Kunden alt\""),
        original.get("\"Sales Dept\".\"Kunden Ü\"")
    );
    // The new name may carry the table's own schema; another schema is refused.
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.orders",
            "--rename-table",
            "app.orders_q",
            "--to",
            &src.url(),
        ],
        None,
    )
    .ok();
    assert_eq!(
        src.fingerprint().get("app.orders_q"),
        original.get("app.orders")
    );
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.orders",
            "--rename-table",
            "public.x",
            "--to",
            &src.url(),
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("its own schema app"), "{}", r.stderr);
    // Onto the live table: refused without --clean, and nothing changes.
    let before = src.fingerprint();
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.orders",
            "--to",
            &src.url(),
        ],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--rename-table"),
        "{}",
        r.stderr
    );
    assert_eq!(src.fingerprint(), before);
    // A table that is not in the snapshot.
    let r = repo.run(
        &["restore", "latest", "--table", "app.nope", "--to", "-"],
        None,
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no table \"app.nope\"") && r.stderr.contains("app.orders"),
        "{}",
        r.stderr
    );
    // --to - gives a script psql loads into an empty database.
    let script = repo
        .run(
            &[
                "restore",
                "latest",
                "--table",
                "public.customers",
                "--to",
                "-",
            ],
            None,
        )
        .ok()
        .stdout;
    let dst = PgDb::new("script");
    dst.sql("CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy')");
    let path = repo.dir.path().join("customers.sql");
    std::fs::write(&path, &script).expect("write");
    dst.load(&path);
    assert_eq!(
        dst.fingerprint().get("public.customers"),
        original.get("public.customers")
    );
}

#[test]
fn a_dump_that_dies_mid_stream_records_no_snapshot() {
    let src = fixture();
    let repo = Repo::new();
    repo.run(
        &["backup", "--command", &src.dump_cmd(), "--name", "good"],
        None,
    )
    .ok();
    let before = repo.snapshot_ids();
    // Plain pipe: the stream just ends.
    let r = pipe(&repo, &format!("{} | head -c 3000000", src.dump_cmd()));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    // --command: the dump dies part way (SIGKILL after 3 MB: a sleep-then-kill raced a
    // fast pg_dump that had already finished).
    let cmd = format!("{} | head -c 3000000; kill -9 $$", src.dump_cmd());
    let r = repo.run(&["backup", "--command", &cmd], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no snapshot recorded"), "{}", r.stderr);
    assert_eq!(repo.snapshot_ids(), before);
    let dst = PgDb::new("after");
    repo.run(
        &["restore", "latest", "--name", "good", "--to", &dst.url()],
        None,
    )
    .ok();
    assert_eq!(dst.fingerprint(), src.fingerprint());
}

#[test]
fn direct_backup_round_trips_into_a_database() {
    let src = fixture();
    let repo = Repo::new();
    let b = repo
        .run(&["backup", &src.url(), "--json"], None)
        .ok()
        .json();
    let list = repo.run(&["snapshots", "--json"], None).ok().json();
    let snap = &list[0];
    assert_eq!(snap["name"], src.name.as_str());
    assert_eq!(snap["source"]["kind"], "postgres");
    let parts = snap["parts"].as_array().expect("parts");
    assert_eq!(
        parts.first().map(|p| p["name"].clone()),
        Some("pre-data".into())
    );
    assert_eq!(
        parts.last().map(|p| p["name"].clone()),
        Some("post-data".into())
    );
    let big = parts
        .iter()
        .find(|p| p["name"] == "app.big")
        .expect("app.big");
    assert_eq!(big["rows"], 95000);
    let dst = PgDb::new("direct");
    repo.run(
        &[
            "restore",
            b["snapshot_id"].as_str().expect("id"),
            "--to",
            &dst.url(),
        ],
        None,
    )
    .ok();
    assert_eq!(dst.fingerprint(), src.fingerprint());
    assert_eq!(dst.schema(), src.schema());
    // One table out of a direct snapshot, beside the live one.
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "public.customers",
            "--rename-table",
            "customers_old",
            "--to",
            &src.url(),
        ],
        None,
    )
    .ok();
    let fp = src.fingerprint();
    assert_eq!(fp.get("public.customers_old"), fp.get("public.customers"));
}

#[test]
fn direct_backup_is_consistent_while_a_writer_commits() {
    let src = fixture();
    src.sql("CREATE TABLE public.parent (id int PRIMARY KEY); CREATE TABLE public.child (id serial PRIMARY KEY, parent_id int NOT NULL REFERENCES public.parent(id))");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (name, stop2) = (src.name.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut batch = String::new();
            for _ in 0..20 {
                i += 1;
                batch.push_str(&format!("BEGIN; INSERT INTO public.parent VALUES ({i}); INSERT INTO public.child (parent_id) VALUES ({i}); COMMIT; "));
            }
            dbvault_tests::psql(&name, &batch);
        }
        i
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let repo = Repo::new();
    let before: u64 = src
        .sql("SELECT count(*) FROM public.parent")
        .trim()
        .parse()
        .expect("n");
    repo.run(&["backup", &src.url()], None).ok();
    let after: u64 = src
        .sql("SELECT count(*) FROM public.parent")
        .trim()
        .parse()
        .expect("n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = writer.join().expect("writer");
    assert!(
        after > before && total as u64 >= after,
        "the writer made no commits during the backup"
    );
    let dst = PgDb::new("consistent");
    repo.run(&["restore", "latest", "--to", &dst.url()], None)
        .ok();
    let parents: u64 = dst
        .sql("SELECT count(*) FROM public.parent")
        .trim()
        .parse()
        .expect("n");
    let children: u64 = dst
        .sql("SELECT count(*) FROM public.child")
        .trim()
        .parse()
        .expect("n");
    let orphans = dst.sql("SELECT count(*) FROM public.child c LEFT JOIN public.parent p ON p.id = c.parent_id WHERE p.id IS NULL");
    assert_eq!(
        parents, children,
        "parent and child copied at different instants"
    );
    assert_eq!(orphans.trim(), "0");
    assert!(
        parents >= before && parents <= after,
        "{parents} not in [{before}, {after}]"
    );
}

#[test]
fn passwords_in_urls_stay_secret_and_schema_or_data_only_work() {
    let src = fixture();
    let secret = "Pw-9f3c-never-print-me";
    let role = format!("{}_user", src.name);
    src.sql(&format!(
        "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'"
    ));
    let url = format!("postgresql://{role}:{secret}@127.0.0.1:5432/{}", src.name);
    let repo = Repo::new();
    let check = |r: &dbvault_tests::Run| {
        assert!(
            !r.stderr.contains(secret) && !String::from_utf8_lossy(&r.stdout).contains(secret),
            "password printed: {}",
            r.stderr
        );
    };
    let r = repo.run(&["backup", &url, "--json"], None);
    check(&r);
    let r = r.ok();
    assert!(r.json()["snapshot_id"].is_string());
    let list = repo.run(&["snapshots", "--json"], None).ok();
    check(&list);
    // A wrong password: one clear line, no password in it, no snapshot.
    let bad = url.replace(secret, "wrong-Pw-00");
    let r = repo.run(&["backup", &bad], None);
    check(&r);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("password authentication failed") && !r.stderr.contains("wrong-Pw-00"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.snapshot_ids().len(), 1);
    // Restores through a password URL; --schema-only and --data-only narrow them.
    let original = src.fingerprint();
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.tricky",
            "--rename-table",
            "tricky_schema",
            "--schema-only",
            "--to",
            &url,
        ],
        None,
    );
    check(&r);
    r.ok();
    assert_eq!(
        src.sql("SELECT count(*) FROM app.tricky_schema").trim(),
        "0"
    );
    let r = repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.tricky",
            "--rename-table",
            "tricky_schema",
            "--data-only",
            "--to",
            &url,
        ],
        None,
    );
    check(&r);
    r.ok();
    assert_eq!(
        src.fingerprint().get("app.tricky_schema"),
        original.get("app.tricky")
    );
    // --clean replaces the live table (after someone emptied it).
    src.sql("DELETE FROM app.tricky");
    repo.run(
        &[
            "restore",
            "latest",
            "--table",
            "app.tricky",
            "--clean",
            "--to",
            &url,
        ],
        None,
    )
    .ok();
    assert_eq!(
        src.fingerprint().get("app.tricky"),
        original.get("app.tricky")
    );
    src.sql(&format!("DROP OWNED BY {role} CASCADE"));
    dbvault_tests::psql("postgres", &format!("DROP ROLE {role}"));
}

/// Foreign keys are added while other tables still load (as soon as both their tables are
/// in): a web of keys, a table with two, one onto itself, one onto a partitioned table
/// (left to the end), comes back whole and validated with one session and with several.
#[test]
fn a_web_of_foreign_keys_comes_back_validated_with_any_number_of_sessions() {
    let src = PgDb::new("fkweb");
    src.sql(
        "CREATE TABLE public.a (id int PRIMARY KEY);
         CREATE TABLE public.b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES public.a(id));
         CREATE TABLE public.c (id int PRIMARY KEY, a_id int REFERENCES public.a(id),
           b_id int REFERENCES public.b(id), parent int REFERENCES public.c(id));
         CREATE TABLE public.p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
         CREATE TABLE public.p1 PARTITION OF public.p FOR VALUES FROM (0) TO (1000000);
         CREATE TABLE public.d (id int PRIMARY KEY, p_id int, p_k int,
           FOREIGN KEY (p_id, p_k) REFERENCES public.p(id, k));
         INSERT INTO public.a SELECT g FROM generate_series(1, 20000) g;
         INSERT INTO public.b SELECT g, 1 + g % 20000 FROM generate_series(1, 30000) g;
         INSERT INTO public.c SELECT g, 1 + g % 20000, 1 + g % 30000, NULLIF(g - 1, 0)
           FROM generate_series(1, 40000) g;
         INSERT INTO public.p SELECT g, g FROM generate_series(1, 5000) g;
         INSERT INTO public.d SELECT g, g, g FROM generate_series(1, 5000) g;",
    );
    let repo = Repo::new();
    repo.run(&["backup", &src.url()], None).ok();
    let keys = "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) \
                FROM pg_constraint WHERE contype = 'f'";
    let want = src.sql(keys);
    // The key onto the partitioned table is also one per partition.
    assert_eq!(want.matches(":true").count(), 6, "{want}");
    for jobs in ["1", "4"] {
        let dst = PgDb::new(&format!("fkweb{jobs}"));
        repo.run(
            &["restore", "latest", "--to", &dst.url(), "--jobs", jobs],
            None,
        )
        .ok();
        assert_eq!(dst.sql(keys), want, "--jobs {jobs}");
        assert_eq!(dst.fingerprint(), src.fingerprint(), "--jobs {jobs}");
        assert_eq!(dst.schema(), src.schema(), "--jobs {jobs}");
    }
    // Not a number of sessions: refused before anything is read.
    let bad = repo.run(
        &["restore", "latest", "--to", &src.url(), "--jobs", "0"],
        None,
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--jobs"), "{}", bad.stderr);
}
