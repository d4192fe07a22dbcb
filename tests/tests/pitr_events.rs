//! "When was the DROP?" against a real cluster: pgbench traffic archived through
//! `wal-push` after a base backup, and at moments the test does not tell dbvault, a
//! DELETE of 500 rows, a TRUNCATE, a DROP TABLE and an `ALTER TABLE … TYPE`. `events`
//! finds each (the right transaction, its commit time, nothing else), and the restore
//! command it prints brings the rows back as they were just before.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbvault_tests::cluster::pg_bin;
use dbvault_tests::physical::{self, Archive};
use dbvault_tests::{run_cmd, PgCluster, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}\n{}", r.stderr, r.text());
    r
}

/// A table's row count and an order-independent hash of its rows.
fn fingerprint(pg: &PgCluster, db: &str, table: &str) -> String {
    pg.sql(
        db,
        &format!(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {table} x"
        ),
    )
    .trim()
    .to_string()
}

/// Runs `sql` in one transaction and returns its transaction id.
fn xact(pg: &PgCluster, sql: &str) -> u64 {
    let out = pg.sql(
        "postgres",
        &format!("BEGIN; {sql}; SELECT txid_current(); COMMIT;"),
    );
    out.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no xid in {out:?}"))
}

/// A random pause of up to `ms` milliseconds (seeded by the clock: the moments are not
/// known in advance).
fn pause(ms: u64) {
    let r = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(u64::from(r) % ms.max(1)));
}

#[test]
fn events_find_each_change_of_a_table_and_their_restore_brings_it_back() {
    let archive = Archive::local();
    let dbv = |args: &[&str]| run_cmd(archive.dbvault(args), None);
    ok(dbv(&["init"]), "init");
    let settings = format!(
        "archive_mode = on\ntrack_commit_timestamp = on\n{}\n",
        archive.archive_command("pg")
    );
    let pg = PgCluster::with_tcp(Some((&settings, "local replication all trust")));
    let sql = |q: &str| pg.sql("postgres", q);
    sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 3000) i");
    sql("CREATE TABLE u (id int, v text); INSERT INTO u SELECT i, 'u' || i FROM generate_series(1, 800) i");
    sql("CREATE TABLE v (id int, v text); INSERT INTO v SELECT i, repeat('v', 40) FROM generate_series(1, 1200) i");
    sql("CREATE TABLE w (c int, d text); INSERT INTO w SELECT i, 'w' FROM generate_series(1, 900) i");
    let init = Command::new(pg_bin("pgbench"))
        .args(["-i", "-s", "2", "-q", &pg.url("postgres")])
        .output()
        .expect("pgbench");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    ok(
        dbv(&["backup", &pg.url("postgres"), "--physical", "--name", "pg"]),
        "base backup",
    );
    let fp = |table: &str| fingerprint(&pg, "postgres", table);
    // A day's traffic in a minute, and the four changes at moments of their own.
    let mut bench = Command::new(pg_bin("pgbench"))
        .args(["-c", "2", "-T", "40", "-n", &pg.url("postgres")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgbench");
    let mut truth: BTreeMap<&str, u64> = BTreeMap::new();
    pause(6000);
    let t_before = fp("t");
    truth.insert("t", xact(&pg, "DELETE FROM t WHERE id % 6 = 0"));
    sql("INSERT INTO t SELECT i, 'after' FROM generate_series(5001, 5007) i");
    // A second base backup after the DELETE: `events` without --since still searches from
    // the first (the whole archive), with --since from the newest before it.
    pause(3000);
    ok(
        dbv(&["backup", &pg.url("postgres"), "--physical", "--name", "pg"]),
        "second base backup",
    );
    let after_second = sql("SELECT to_char(clock_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')");
    let after_second = format!("{}:00", after_second.trim());
    pause(3000);
    let u_before = fp("u");
    truth.insert("u", xact(&pg, "TRUNCATE u"));
    pause(6000);
    let v_before = fp("v");
    truth.insert("v", xact(&pg, "DROP TABLE v"));
    pause(6000);
    truth.insert("w", xact(&pg, "ALTER TABLE w ALTER c TYPE bigint"));
    let _ = bench.wait();
    physical::archive_now(&|q| pg.sql("postgres", q), &|| pg.log());
    let commit_time = |xid: u64| {
        let t = sql(&format!(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp('{xid}'::xid))"
        ));
        t.trim().parse::<f64>().expect("commit time")
    };

    let expect = [
        ("t", "rows"),
        ("u", "truncate"),
        ("v", "drop"),
        ("w", "rewrite"),
    ];
    let mut found = BTreeMap::new();
    let mut segments = BTreeMap::new();
    for (table, change) in expect {
        let t0 = Instant::now();
        let r = ok(
            dbv(&["events", "--name", "pg", "--table", table, "--json"]),
            "events",
        );
        let j = r.json();
        eprintln!(
            "events of {table}: {} segment(s) in {:.1} s",
            j["segments"],
            t0.elapsed().as_secs_f64()
        );
        segments.insert(table, j["segments"].as_u64().expect("segments"));
        let events = j["events"].as_array().expect("events");
        assert_eq!(
            events.len(),
            1,
            "{table}: one event, and none that did not happen: {j}"
        );
        let e = &events[0];
        assert_eq!(e["change"], change, "{table}: {e}");
        assert_eq!(e["xid"].as_u64(), Some(truth[table]), "{table}: {e}");
        let at = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().expect("time"))
            .expect("rfc3339");
        let secs = at.timestamp_micros() as f64 / 1e6;
        assert!(
            (secs - commit_time(truth[table])).abs() < 1.0,
            "{table}: {e} against {}",
            commit_time(truth[table])
        );
        if table == "t" {
            assert_eq!(e["deleted"].as_u64(), Some(500), "{e}");
        }
        found.insert(table, e.clone());
    }
    // From the second base backup on, the DELETE is before the search: nothing, and the
    // answer says where the archive ends.
    let r = ok(
        dbv(&[
            "events",
            "--name",
            "pg",
            "--table",
            "t",
            "--since",
            &after_second,
            "--json",
        ]),
        "events --since",
    );
    let j = r.json();
    assert_eq!(j["events"].as_array().map(Vec::len), Some(0), "{j}");
    assert!(j["segments"].as_u64() < Some(segments["t"]), "{j}");
    let r = ok(
        dbv(&[
            "events",
            "--name",
            "pg",
            "--table",
            "t",
            "--min-rows",
            "501",
            "--json",
        ]),
        "events --min-rows",
    );
    assert_eq!(r.json()["events"].as_array().map(Vec::len), Some(0));
    // Human output says the same, newest first, with the command.
    let r = ok(
        dbv(&["events", "--name", "pg", "--table", "t"]),
        "events text",
    );
    assert!(r.text().contains("DELETE 500 rows"), "{}", r.text());
    assert!(
        r.text().contains(&format!("--before-xid {}", truth["t"])),
        "{}",
        r.text()
    );

    // The printed commands, run as printed, give back t before the DELETE (not the
    // rows inserted after it) and v whole, although v is gone from the server.
    for (table, before) in [("t", &t_before), ("v", &v_before)] {
        let cmd = found[table]["restore"].as_str().expect("restore command");
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "dbvault", "{cmd}");
        let script = ok(run_cmd(archive.dbvault(&words[1..]), None), cmd);
        let db = format!("back_{table}");
        sql(&format!("CREATE DATABASE {db}"));
        let load = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &pg.url(&db)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(&script.stdout)?;
                c.wait_with_output()
            })
            .expect("psql");
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        // Under a name of its own, so the script can go into the live database as it is.
        let renamed = format!("{table}_before_{}", truth[table]);
        assert!(cmd.contains(&format!("--rename-table {renamed}")), "{cmd}");
        let got = fingerprint(&pg, &db, &renamed);
        assert_eq!(&got, before, "{table} restored with `{cmd}`");
    }
    // `--before-lsn` with the commit record's LSN: u as it was before the TRUNCATE, into a
    // database directly.
    let u = &found["u"];
    let base = u["base"].as_str().expect("base");
    sql("CREATE DATABASE back_u");
    ok(
        dbv(&[
            "restore",
            base,
            "--table",
            "public.u",
            "--database",
            "postgres",
            "--before-lsn",
            u["lsn"].as_str().expect("lsn"),
            "--to",
            &pg.url("back_u"),
        ]),
        "restore --before-lsn",
    );
    assert_eq!(
        fingerprint(&pg, "back_u", "u"),
        u_before,
        "u before its TRUNCATE"
    );
    assert!(u_before.starts_with("800 "), "{u_before}");
    // A logical source is told where its table history is.
    let r = dbv(&["events", "--name", "nope", "--table", "t"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("no base backups of \"nope\""),
        "{}",
        r.stderr
    );
}
