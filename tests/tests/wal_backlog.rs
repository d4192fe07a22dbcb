//! A WAL backlog drained fast: a server whose archiving failed for a while (its
//! `archive_command` broken) has 200 segments ready; once `wal-push` works again, each
//! call stores the ready segments after its own in one process and the calls for those
//! answer from their marks, without opening the repository. Every segment is stored
//! (the base backup recovers through all of them to the last row), no mark is left
//! behind, and a mark whose file changed is not trusted.

use std::time::Instant;

use dbvault_tests::physical::{pgdata, Archive, Restored};
use dbvault_tests::{run_cmd, PgCluster, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}\n{}", r.stderr, r.text());
    r
}

#[test]
fn a_backlog_of_ready_segments_is_pushed_in_few_processes() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    // Each push says what it did, into a log the test reads.
    let log = archive.dir.join("push.log");
    let command = archive.archive_command("main").replace(
        "wal-push --name main %p'",
        &format!("--json wal-push --name main %p >> {}'", log.display()),
    );
    let settings = format!("archive_mode = on\n{command}\n");
    // 1 MiB segments: 200 of them are a real backlog without 3 GiB of pg_wal.
    let pg = PgCluster::with_initdb(
        Some((&settings, "local replication all trust")),
        &["--wal-segsize=1"],
    );
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(
        dbv(&[
            "backup",
            &pg.url("postgres"),
            "--physical",
            "--name",
            "main",
        ]),
        "base backup",
    );
    // The store is unreachable for a while: archiving fails, segments pile up.
    sql("ALTER SYSTEM SET archive_command = 'false'");
    sql("SELECT pg_reload_conf()");
    for i in 0..200 {
        sql(&format!(
            "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series({}, {}) g; SELECT pg_switch_wal()",
            i * 100 + 1,
            (i + 1) * 100
        ));
    }
    let ready = std::fs::read_dir(pg.dir.join("data/pg_wal/archive_status"))
        .expect("archive_status")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert!(ready >= 200, "{ready} segments ready");
    // Back: the real command again, and the backlog drains.
    let t0 = Instant::now();
    sql("ALTER SYSTEM RESET archive_command");
    sql("SELECT pg_reload_conf()");
    dbvault_tests::physical::archive_now(&|q| pg.sql("postgres", q), &|| pg.log());
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "backlog of {ready} ready segments (1 MiB) pushed in {secs:.1} s: {:.0} segments/s",
        ready as f64 / secs
    );
    let stats = sql("SELECT archived_count, failed_count FROM pg_stat_archiver");
    eprintln!("pg_stat_archiver: {stats}");
    // Most calls answered from a mark; the others stored the files after theirs.
    let docs: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&std::fs::read_to_string(&log).expect("push log"))
            .into_iter()
            .map(|d| d.expect("json"))
            .collect();
    let from_marks = docs.iter().filter(|d| d["stored_ahead"] == true).count();
    let opened = docs.len() - from_marks;
    let ahead: u64 = docs.iter().filter_map(|d| d["ahead"].as_u64()).sum();
    eprintln!(
        "{} pushes: {opened} opened the repository, storing {ahead} files ahead",
        docs.len()
    );
    assert!(
        from_marks >= 150,
        "{from_marks} of {} answered from marks",
        docs.len()
    );
    assert!(
        ahead as usize >= from_marks,
        "{ahead} stored ahead, {from_marks} marks used"
    );
    // No mark left behind: PostgreSQL asked for every segment stored ahead.
    let marks = archive.dir.join("cache/wal-pushed");
    let left: Vec<_> = dbvault_tests::tree(&marks).into_keys().collect();
    assert!(left.is_empty(), "marks left: {left:?}");
    // Every row: the base backup recovers through the whole backlog.
    let rows = sql("SELECT count(*) FROM t");
    let r1 = archive.dir.join("r1");
    ok(
        dbv(&["restore", "latest", "--name", "main", "--to", &pgdata(&r1)]),
        "restore",
    );
    let s = Restored::start(&r1, "-c archive_mode=off", &archive.env);
    s.wait_promoted();
    assert_eq!(
        s.try_sql("postgres", "SELECT count(*) FROM t"),
        Ok(rows.trim().to_string()),
        "{}",
        s.log()
    );
}
