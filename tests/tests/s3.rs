//! S3 repositories against a real S3-compatible server (Garage): the backend contract, and
//! backup/restore round trips through `s3://`.

use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_tests::garage::Garage;
use std::path::Path;

use dbvault_tests::{dump_like, run_cmd, sqlite3_dump, PgDb};

fn options(g: &Garage) -> S3Options {
    S3Options {
        endpoint: Some(g.endpoint.clone()),
        region: Some("garage".into()),
        path_style: true,
        credentials: Some((g.key_id.clone(), g.secret.clone())),
        attempt_timeout: None,
        spool_dir: None,
    }
}

#[test]
fn the_backend_contract_holds_on_garage() {
    let g = Garage::start();
    let b = S3Backend::new(&g.url("conformance"), &options(&g)).expect("backend");
    dbvault_core::backend::conformance::run(&b).unwrap_or_else(|e| panic!("{e}\n{}", g.log()));
    // Large objects go up in parts.
    let big = dump_like(40 << 20, 3);
    dbvault_core::backend::Backend::create(&b, "data/ab/big", &big).expect("multipart");
    assert!(dbvault_core::backend::Backend::read(&b, "data/ab/big").expect("read") == big);
}

#[test]
fn packs_spooled_to_local_files_keep_the_contract_and_their_checksums() {
    use dbvault_core::backend::Backend;
    let g = Garage::start();
    let spool = tempfile::tempdir().expect("tempdir");
    let b = S3Backend::new(
        &g.url("spooled"),
        &S3Options {
            spool_dir: Some(spool.path().to_path_buf()),
            ..options(&g)
        },
    )
    .expect("backend");
    dbvault_core::backend::conformance::run(&b).unwrap_or_else(|e| panic!("{e}\n{}", g.log()));
    let files = || std::fs::read_dir(spool.path()).expect("ls").count();
    // A spool directory that cannot be made (here under a file): packs go up from memory.
    let blocked = spool.path().join("a-file");
    std::fs::write(&blocked, b"x").expect("file");
    let mem = S3Backend::new(
        &g.url("spool-blocked"),
        &S3Options {
            spool_dir: Some(blocked.join("spool")),
            ..options(&g)
        },
    )
    .expect("backend");
    assert!(
        mem.spool().expect("spool").is_none(),
        "no spool where none can be made"
    );
    dbvault_core::backend::conformance::run(&mem).unwrap_or_else(|e| panic!("{e}\n{}", g.log()));
    std::fs::remove_file(&blocked).expect("rm");
    assert_eq!(files(), 0, "finished and dropped spools leave no files");
    // A spooled object larger than one request goes up in parts, each checksummed.
    let big = dump_like(40 << 20, 4);
    let mut sp = b.spool().expect("spool").expect("a spool");
    for piece in big.chunks(3 << 20) {
        sp.write(piece).expect("write");
    }
    sp.finish_unique("data/ab/bigspool")
        .expect("multipart from a file");
    assert!(b.read("data/ab/bigspool").expect("read") == big);
    // Bytes that change on the local disk between spooling and upload are refused by the
    // store (the CRC32 was taken as they were written), and nothing is stored.
    for (len, name) in [
        (1 << 20, "data/ab/damaged"),
        (40 << 20, "data/ab/damagedbig"),
    ] {
        let mut sp = b.spool().expect("spool").expect("a spool");
        sp.write(&big[..len]).expect("write");
        let file = std::fs::read_dir(spool.path())
            .expect("ls")
            .next()
            .expect("the spool file")
            .expect("entry")
            .path();
        let mut bytes = std::fs::read(&file).expect("read spool file");
        bytes[len / 2] ^= 1;
        std::fs::write(&file, &bytes).expect("damage");
        let e = sp
            .finish_unique(name)
            .expect_err("a damaged spool file must be refused");
        assert!(e.to_string().contains(name), "{e}");
        assert!(
            matches!(b.read(name), Err(dbvault_core::Error::NotFound { .. })),
            "nothing stored at {name}"
        );
        assert_eq!(files(), 0, "a failed upload removes its spool file");
    }
}

#[test]
fn backup_and_restore_through_s3_are_byte_identical() {
    let g = Garage::start();
    let cmd = |args: &[&str]| g.dbvault(&g.endpoint, "repo", args);
    run_cmd(cmd(&["init"]), None).ok();
    let data = dump_like(12 << 20, 5);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&data)).ok();
    let out = run_cmd(cmd(&["restore", "latest", "--to", "-"]), None).ok();
    assert!(out.stdout == data, "restore through S3 differs");
    // Again with an empty cache: everything comes from the store.
    let cold = run_cmd(cmd(&["--no-cache", "restore", "latest", "--to", "-"]), None).ok();
    assert!(cold.stdout == data, "restore without the cache differs");
    run_cmd(cmd(&["check", "--read-data"]), None).ok();
}

fn make_sqlite(path: &Path, rows: i64) {
    let c = rusqlite::Connection::open(path).expect("open");
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB);\
         CREATE INDEX IF NOT EXISTS t_name ON t(name);",
    )
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..rows {
        tx.execute(
            "INSERT INTO t (name, blob) VALUES (?1, ?2)",
            rusqlite::params![
                format!("row {i} ünïcödé"),
                vec![(i % 251) as u8; (i % 700) as usize]
            ],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

#[test]
fn databases_round_trip_through_s3_and_an_unchanged_one_costs_few_requests() {
    let g = Garage::start();
    let cmd = |args: &[&str]| g.dbvault(&g.endpoint, "db", args);
    run_cmd(cmd(&["init"]), None).ok();

    // PostgreSQL, read directly, into a new database.
    let src = PgDb::new("s3src");
    src.load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hard.sql"));
    run_cmd(cmd(&["backup", &src.url(), "--name", "pg"]), None).ok();
    let dst = PgDb::new("s3dst");
    run_cmd(
        cmd(&["restore", "latest", "--name", "pg", "--to", &dst.url()]),
        None,
    )
    .ok();
    assert_eq!(dst.fingerprint(), src.fingerprint());
    assert_eq!(dst.schema(), src.schema());

    // SQLite.
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("app.db");
    make_sqlite(&db, 20_000);
    let first = run_cmd(
        cmd(&["backup", &format!("sqlite:{}", db.display()), "--json"]),
        None,
    )
    .ok()
    .json();
    let out = dir.path().join("restored.db");
    run_cmd(
        cmd(&[
            "restore",
            "latest",
            "--name",
            "app",
            "--to",
            &format!("sqlite:{}", out.display()),
        ]),
        None,
    )
    .ok();
    assert_eq!(sqlite3_dump(&out), sqlite3_dump(&db));

    // The nightly backup of an unchanged database: almost nothing goes up, and the keys,
    // index and snapshots come from the cache.
    let mut traced = cmd(&["backup", &format!("sqlite:{}", db.display()), "--json"]);
    traced.env("DBVAULT_TRACE_S3", "1");
    let again = run_cmd(traced, None).ok();
    let trace = again.stderr.clone();
    let again = again.json();
    let (reqs, added) = (
        again["requests"].as_u64().expect("requests"),
        again["bytes_added"].as_u64().expect("bytes_added"),
    );
    eprintln!(
        "first SQLite backup: {} requests, {} bytes added; unchanged: {reqs} requests, {added} bytes added",
        first["requests"], first["bytes_added"]
    );
    assert!(
        reqs <= 16,
        "{reqs} requests for an unchanged database:\n{trace}"
    );
    assert!(
        added < 64 << 10,
        "{added} bytes added for an unchanged database"
    );
    let uncached = run_cmd(
        cmd(&[
            "--no-cache",
            "backup",
            &format!("sqlite:{}", db.display()),
            "--json",
        ]),
        None,
    )
    .ok()
    .json();
    eprintln!("unchanged, no cache: {} requests", uncached["requests"]);
    assert!(uncached["requests"].as_u64().expect("requests") > reqs);
    let stats = run_cmd(cmd(&["stats", "--json"]), None).ok().json();
    assert!(stats["requests"].as_u64().expect("requests") > 0, "{stats}");
    // The cache is private.
    let cache = g.cache_dir();
    let mode = std::fs::metadata(&cache).expect("cache dir").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
}
