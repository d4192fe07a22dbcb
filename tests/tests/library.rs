//! The library driven without the binary, as a second front end would drive it: a
//! repository made, an SQLite database (with writes going on) and a stream backed up,
//! both restored and compared, `check` with every blob read, a restore-test, a snapshot
//! forgotten and `prune`, then the rest still restores. (The nightly job, status and a
//! follower through `dbvault-jobs`: jobs_library.rs.)

use std::sync::Arc;
use std::time::Duration;

use dbvault_core::backend::local::LocalBackend;
use dbvault_core::check::ReadData;
use dbvault_core::keyfile::KdfParams;
use dbvault_core::lock::{LockKind, LockOptions, STALE_AFTER};
use dbvault_core::prune::PruneOptions;
use dbvault_core::{RepoConfig, Repository, SnapshotMeta, SourceInfo};
use dbvault_formats::sqlite;
use dbvault_formats::StreamFormat;
use dbvault_tests::random_bytes;

fn rows(path: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(path).expect("open");
    let mut st = c
        .prepare("SELECT id, v FROM orders ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows")
}

fn meta(name: &str, source: SourceInfo) -> SnapshotMeta {
    SnapshotMeta {
        time: chrono::Local::now().fixed_offset(),
        name: name.into(),
        tags: vec!["library".into()],
        source,
    }
}

#[test]
fn a_second_front_end_backs_up_restores_checks_and_prunes_through_the_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let kdf = KdfParams {
        m_kib: 8 * 1024,
        t: 1,
        p: 1,
    };
    let repo = Repository::init(backend.clone(), b"a passphrase", kdf, RepoConfig::default())
        .expect("init");
    drop(repo);
    let repo = Repository::open(backend, b"a passphrase").expect("open");
    let notes = Arc::new(|_: &str| {});
    repo.lock(
        LockKind::Shared,
        &LockOptions {
            command: "library test".into(),
            wait: Duration::from_secs(10),
            stale_after: STALE_AFTER,
            notify: notes.clone(),
        },
    )
    .expect("lock");

    // An SQLite database, copied online through SQLite's backup API.
    let app = dir.path().join("app.db");
    let c = rusqlite::Connection::open(&app).expect("create");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 5000)
         INSERT INTO orders SELECT i, 'order ' || i FROM s;",
    )
    .expect("fill");
    let want = rows(&app);
    let copy = sqlite::online_copy(&app, dir.path()).expect("online copy");
    let b = repo.start_backup().expect("start");
    sqlite::snapshot::backup_copy(&b, &copy).expect("backup");
    let source = sqlite::snapshot::source(app.display().to_string(), &copy.info);
    let first = b.finish(meta("app", source)).expect("finish");
    c.execute("DELETE FROM orders WHERE id > 10", [])
        .expect("the wrong rows");

    // A stream.
    let data = random_bytes(3_000_000, 7);
    let b = repo.start_backup().expect("start");
    dbvault_formats::backup_stream(&b, StreamFormat::Raw, &data[..]).expect("stream");
    let stream = b
        .finish(meta(
            "stream",
            SourceInfo {
                kind: "stdin".into(),
                identity: "-".into(),
                format: "raw".into(),
                ..SourceInfo::default()
            },
        ))
        .expect("finish");

    // Both restore as they were.
    let (id, snap) = repo
        .find_snapshot("latest", Some("app"))
        .expect("latest app");
    assert_eq!(id, first.id);
    let out = dir.path().join("restored.db");
    sqlite::snapshot::restore(
        &repo,
        &snap,
        &sqlite::snapshot::RestoreOptions::default(),
        sqlite::snapshot::Target::File(&out),
        &|_| {},
    )
    .expect("restore");
    assert!(rows(&out) == want, "the restored database differs");
    let mut back = Vec::new();
    dbvault_core::restore::restore_part(&repo, &stream.snapshot.parts[0], &mut back)
        .expect("restore stream");
    assert!(back == data, "the stream differs");

    // Verified as `check --read-data` and `restore-test` do.
    let report = dbvault_formats::check::check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.snapshots, 2);
    let tested = sqlite::verify::restore_test(&repo, &id, &snap, &|_| {}).expect("restore-test");
    assert!(tested.problems.is_empty(), "{:?}", tested.problems);
    assert!(tested.tables.iter().any(|t| t.name == "orders" && t.ok));

    // Forget the stream, prune (exclusive), and the database still restores.
    repo.forget_snapshots(&[stream.id]).expect("forget");
    repo.unlock();
    repo.lock(
        LockKind::Exclusive,
        &LockOptions {
            command: "library test prune".into(),
            wait: Duration::from_secs(10),
            stale_after: STALE_AFTER,
            notify: notes,
        },
    )
    .expect("exclusive lock");
    let pruned =
        dbvault_core::prune::prune(&repo, PruneOptions::default(), &|_| {}).expect("prune");
    assert!(pruned.bytes_freed > 2_000_000, "{pruned:?}");
    let out2 = dir.path().join("again.db");
    sqlite::snapshot::restore(
        &repo,
        &snap,
        &sqlite::snapshot::RestoreOptions::default(),
        sqlite::snapshot::Target::File(&out2),
        &|_| {},
    )
    .expect("restore after prune");
    assert!(rows(&out2) == want);
    let report = dbvault_formats::check::check(&repo, ReadData::All, &|_| {}).expect("check");
    assert!(report.ok, "{:?}", report.problems);
}
