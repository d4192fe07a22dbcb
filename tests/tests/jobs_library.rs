//! The jobs library driven without the binary, as a second front end (a daemon, a web
//! page) would drive it: a configuration file loaded, a night run (one source backs up,
//! one fails, retention, check and metrics happen anyway), the status read, the snapshot
//! restored and compared, and a follower started, fed a change, and stopped by its handle.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbvault_core::backend::local::LocalBackend;
use dbvault_core::backup::BackupSummary;
use dbvault_core::keyfile::KdfParams;
use dbvault_core::{RepoConfig, Repository};
use dbvault_formats::sqlite;
use dbvault_jobs::access::Access;
use dbvault_jobs::events::{Events, Step};
use dbvault_jobs::follow::{follow, open_recent, Follow, Stop};

/// What the jobs told their front end.
#[derive(Default)]
struct Recorder {
    steps: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
    snapshots: Mutex<Vec<String>>,
}

struct Done;

impl Step for Done {
    fn finish(self: Box<Self>) {}
}

impl Events for Recorder {
    fn step(&self, label: &str, _: Arc<AtomicU64>) -> Box<dyn Step> {
        self.steps.lock().expect("steps").push(label.to_string());
        Box::new(Done)
    }
    fn note(&self, m: &str) {
        self.notes.lock().expect("notes").push(m.to_string());
    }
    fn warn(&self, m: &str) {
        self.notes
            .lock()
            .expect("notes")
            .push(format!("warning: {m}"));
    }
    fn snapshot(&self, s: &BackupSummary, _: Option<u64>) {
        self.snapshots.lock().expect("snaps").push(s.id.to_hex());
    }
}

/// This client's memory of repositories goes into one directory for the whole test
/// binary (the tests run in parallel and the variable is the process's), not the home.
fn private_cache() {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let d = DIR.get_or_init(|| tempfile::tempdir().expect("cache dir"));
    std::env::set_var("DBVAULT_CACHE_DIR", d.path());
}

fn rows(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).expect("open");
    c.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_second_front_end_runs_a_configured_night_reads_status_and_stops_a_follower() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_cache();
    let repo_dir = dir.path().join("repo");
    let kdf = KdfParams {
        m_kib: 8 * 1024,
        t: 1,
        p: 1,
    };
    Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        b"night passphrase",
        kdf,
        RepoConfig::default(),
    )
    .expect("init");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "night passphrase\n").expect("pw");
    let app = dir.path().join("app.db");
    let c = rusqlite::Connection::open(&app).expect("create");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
         INSERT INTO orders SELECT i, 'order ' || i FROM s;",
    )
    .expect("fill");
    let metrics = dir.path().join("dbvault.prom");
    let cfg_path = dir.path().join("dbvault.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[repository.main]\nurl = {:?}\npassword_file = {:?}\n\n\
             [retention]\nkeep_last = 2\n\n[check]\nread_data_subset = \"100%\"\n\n\
             [metrics]\ntextfile = {:?}\n\n\
             [[source]]\nname = \"app\"\nsqlite = {:?}\n\n\
             [[source]]\nname = \"broken\"\ncommand = \"echo half a dump; exit 3\"\n",
            repo_dir.display().to_string(),
            pw.display().to_string(),
            metrics.display().to_string(),
            app.display().to_string(),
        ),
    )
    .expect("config");
    let cfg = dbvault_jobs::config::load(&cfg_path).expect("load");
    let access = Access::default();
    let ev = Recorder::default();

    // Three nights: every source tried, the failing one reported, retention keeps 2.
    let mut last = None;
    for _ in 0..3 {
        let night = dbvault_jobs::run::run_night(&access, &ev, &cfg, None).expect("night");
        assert!(!night.ok, "a source failed: the night is not ok");
        let app_r = night.sources.iter().find(|r| r.name == "app").expect("app");
        assert!(app_r.ok, "{:?}", app_r.error);
        let broken = night
            .sources
            .iter()
            .find(|r| r.name == "broken")
            .expect("broken");
        assert!(
            !broken.ok
                && broken
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("exited with status 3")),
            "{:?}",
            broken.error
        );
        assert!(
            night
                .maintenance
                .iter()
                .any(|s| s.step == "check" && s.ok && s.detail.contains("no damage")),
            "{:?}",
            night.maintenance
        );
        last = app_r.snapshot_id.clone();
    }
    assert!(ev
        .steps
        .lock()
        .expect("steps")
        .iter()
        .any(|s| s.contains("backing up")));
    let prom = std::fs::read_to_string(&metrics).expect("metrics");
    assert!(
        prom.contains("dbvault_backup_success{source=\"app\"} 1")
            && prom.contains("dbvault_backup_success{source=\"broken\"} 0"),
        "{prom}"
    );

    // Status: the backed-up source is ok, the other never backed up.
    let st = dbvault_jobs::status::status(&access, &ev, &cfg).expect("status");
    let state = |n: &str| {
        st.iter()
            .find(|s| s.name == n)
            .map(|s| (s.state.clone(), s.snapshots))
    };
    assert_eq!(state("app"), Some(("ok".into(), 2)), "retention kept 2");
    assert_eq!(state("broken").map(|s| s.0), Some("NEVER".into()));

    // The newest snapshot restores with every row.
    let pass = "night passphrase";
    let repo = access
        .open(Arc::new(LocalBackend::new(&repo_dir)), pass)
        .expect("open");
    let (id, snap) = repo.find_snapshot("latest", Some("app")).expect("latest");
    assert_eq!(Some(id.to_hex()), last);
    let out = dir.path().join("restored.db");
    dbvault_jobs::restore::restore(
        &repo,
        &id,
        &snap,
        &dbvault_jobs::restore::Request::default(),
        dbvault_jobs::restore::Destination::SqliteFile(&out),
        &|_| {},
    )
    .expect("restore");
    assert_eq!(rows(&out), 3000);
    drop(repo);

    // A follower: a snapshot at start, another after a change, then stopped by its handle.
    let source = cfg.source.iter().find(|s| s.name == "app").expect("app");
    let f = Follow {
        path: app.clone(),
        job: dbvault_jobs::run::job_of(source).expect("job"),
        interval: Duration::from_secs(1),
        compact: None,
    };
    let stop = Stop::new();
    let repo = open_recent(&access, Arc::new(LocalBackend::new(&repo_dir)), pass).expect("open");
    let snaps = || ev.snapshots.lock().expect("snaps").len();
    std::thread::scope(|s| {
        let h = s.spawn(|| follow(&access, &ev, &repo, &f, &stop));
        let wait_for = |n: usize| {
            let t = Instant::now();
            while snaps() < n {
                assert!(t.elapsed() < Duration::from_secs(60), "no snapshot {n}");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        wait_for(1);
        c.execute("INSERT INTO orders VALUES (3001, 'late order')", [])
            .expect("insert");
        wait_for(2);
        let t = Instant::now();
        stop.stop();
        h.join().expect("follower thread").expect("follower");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    });
    let newest = ev.snapshots.lock().expect("snaps").last().cloned();
    let (id, snap) = repo.find_snapshot("latest", Some("app")).expect("latest");
    assert_eq!(Some(id.to_hex()), newest);
    let out = dir.path().join("followed.db");
    sqlite::snapshot::restore(
        &repo,
        &snap,
        &sqlite::snapshot::RestoreOptions::default(),
        sqlite::snapshot::Target::File(&out),
        &|_| {},
    )
    .expect("restore followed");
    assert_eq!(rows(&out), 3001);
}

/// A new local repository in `dir`, opened through the jobs library and locked (shared).
fn locked_repo(dir: &std::path::Path) -> Repository {
    let backend = Arc::new(LocalBackend::new(dir.join("repo")));
    let kdf = KdfParams {
        m_kib: 8 * 1024,
        t: 1,
        p: 1,
    };
    Repository::init(backend.clone(), b"pw", kdf, RepoConfig::default()).expect("init");
    let access = Access::default();
    let repo = access.open(backend, "pw").expect("open");
    access
        .lock(&repo, dbvault_core::lock::LockKind::Shared, "test")
        .expect("lock");
    repo
}

#[test]
fn a_postgresql_error_reaches_the_front_end_with_its_kind_and_sqlstate() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_cache();
    let repo = locked_repo(dir.path());
    let job = dbvault_jobs::job::Job {
        source: Some("postgresql:///dbv_jobs_no_such_database".into()),
        command: None,
        name: Some("gone".into()),
        tags: Vec::new(),
        jobs: Some(1),
        all_databases: false,
        enable_row_security: false,
        selection: Default::default(),
        physical: None,
        pgdata: None,
        allow_empty: false,
    };
    let e =
        dbvault_jobs::backup::backup_into(&dbvault_jobs::events::Quiet, &repo, &job, None, None)
            .expect_err("no such database");
    // The chain holds the library's own error: its SQLSTATE (3D000, invalid_catalog_name)
    // and its kind, as the binary reads them for its exit code.
    let pg = e
        .chain()
        .find_map(|c| c.downcast_ref::<dbvault_formats::FormatError>())
        .unwrap_or_else(|| panic!("no FormatError in {e:#}"));
    assert_eq!(pg.sqlstate(), Some("3D000"), "{e:#}");
    assert_eq!(
        pg.failure_kind(),
        dbvault_core::error::FailureKind::Failure,
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("no snapshot recorded"), "{e:#}");
    assert!(repo.snapshot_ids().expect("ids").is_empty());
}

/// A script restore goes through psql: its error keeps the SQLSTATE too. The table's
/// owner at backup time no longer exists: `ALTER TABLE … OWNER TO` fails with 42704,
/// undefined_object, and the restore stops there.
#[test]
fn a_script_restore_failing_in_psql_keeps_its_sqlstate() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_cache();
    let src = dbvault_tests::PgDb::new("jobs_psql_src");
    src.sql("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 3)");
    let role = format!("dbv_gone_{}", std::process::id());
    src.sql(&format!(
        "CREATE ROLE {role}; ALTER TABLE t OWNER TO {role}"
    ));
    let dst = dbvault_tests::PgDb::new("jobs_psql_dst");
    let repo = locked_repo(dir.path());
    let job = dbvault_jobs::job::Job {
        source: None,
        command: Some(src.dump_cmd()),
        name: Some("script".into()),
        tags: Vec::new(),
        jobs: Some(1),
        all_databases: false,
        enable_row_security: false,
        selection: Default::default(),
        physical: None,
        pgdata: None,
        allow_empty: false,
    };
    dbvault_jobs::backup::backup_into(&dbvault_jobs::events::Quiet, &repo, &job, None, None)
        .expect("backup");
    let (id, snap) = repo
        .find_snapshot("latest", Some("script"))
        .expect("latest");
    src.sql(&format!(
        "ALTER TABLE t OWNER TO CURRENT_USER; DROP ROLE {role}"
    ));
    let target = dbvault_formats::postgres::PgSource::parse(&dst.url()).expect("url");
    let e = dbvault_jobs::restore::restore(
        &repo,
        &id,
        &snap,
        &dbvault_jobs::restore::Request::default(),
        dbvault_jobs::restore::Destination::Postgres(&target),
        &|_| {},
    )
    .expect_err("the owner is gone");
    let pg = e
        .chain()
        .find_map(|c| c.downcast_ref::<dbvault_formats::FormatError>())
        .unwrap_or_else(|| panic!("no FormatError in {e:#}"));
    assert_eq!(pg.sqlstate(), Some("42704"), "{e:#}");
    assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
}
