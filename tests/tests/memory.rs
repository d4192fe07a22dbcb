//! Every command works in a fixed memory budget, whatever the size of the data (SPEC: below
//! 64 MiB): measured as each process's peak resident size, on 96 MiB of random bytes
//! (incompressible, so sealed batches are as large as plain ones) and on a table of about
//! 110 MB backed up and restored into a database. The key derivation (48 MiB) is most
//! commands' peak, so a batch or a buffer that grows past the budget shows here (16 MiB
//! batches for `copy` did: 65.8 MiB).
//!
//! The test process itself stays small: a child started with vfork (as `Command` does)
//! counts its parent's resident pages in its peak until it execs, so big buffers here would
//! show up as dbvault's. The input is written and compared a MiB at a time.

use std::io::{Read, Write};
use std::path::Path;

use dbvault_tests::{random_bytes, run_peak, PgDb, Repo, PASSWORD};

const BUDGET_MIB: f64 = 64.0;

/// Writes `mib` MiB of random bytes to `path`, a MiB at a time.
fn write_random(path: &Path, mib: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("input file"));
    for i in 0..mib {
        f.write_all(&random_bytes(1 << 20, 20 + i))
            .expect("write input");
    }
    f.flush().expect("flush input");
}

/// Whether two files hold the same bytes, read a MiB at a time.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| std::io::BufReader::new(std::fs::File::open(p).expect("open"));
    let (mut a, mut b) = (open(a), open(b));
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut x);
        if n != read_full(&mut b, &mut y) || x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn under_budget(what: &str, p: &dbvault_tests::Peak) {
    assert!(p.ok, "{what} failed: {}", p.stderr);
    eprintln!("{what}: peak {:.1} MiB", p.mib);
    assert!(
        p.mib < BUDGET_MIB,
        "{what} peaked at {:.1} MiB, over the {BUDGET_MIB} MiB budget",
        p.mib
    );
}

#[test]
fn backup_restore_copy_and_check_of_a_large_stream_stay_under_the_budget() {
    let repo = Repo::new();
    let input = repo.dir.path().join("input.bin");
    write_random(&input, 96);
    let out = repo.dir.path().join("out");

    let p = run_peak(
        repo.cmd(&["backup", "-", "--name", "big"]),
        Some(&input),
        &out,
    );
    under_budget("backup", &p);

    let p = run_peak(repo.cmd(&["restore", "latest", "--to", "-"]), None, &out);
    under_budget("restore --to -", &p);
    assert!(
        same_bytes(&out, &input),
        "the restored stream differs from what was backed up"
    );

    let offsite = Repo::new();
    let mut c = repo.cmd(&["copy", "--to-repo"]);
    c.arg(&offsite.path).env("DBVAULT_TO_PASSWORD", PASSWORD);
    under_budget("copy", &run_peak(c, None, &out));
    let p = run_peak(offsite.cmd(&["restore", "latest", "--to", "-"]), None, &out);
    under_budget("restore of the copy", &p);
    assert!(same_bytes(&out, &input), "the copy restores other bytes");

    let p = run_peak(repo.cmd(&["check", "--read-data"]), None, &out);
    under_budget("check --read-data", &p);
}

#[test]
fn a_backup_and_restore_of_a_large_table_stay_under_the_budget() {
    let src = PgDb::new("memory");
    // A whole table held in memory anywhere (a part read into a buffer, a COPY gathered
    // before it is sent) would show here.
    src.sql(
        "CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL); \
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) \
         || md5((g * 17)::text) FROM generate_series(1, 800000) g",
    );
    let repo = Repo::new();
    let out = repo.dir.path().join("out");
    let p = run_peak(
        repo.cmd(&["backup", &src.url(), "--name", "pg"]),
        None,
        &out,
    );
    under_budget("backup of the database", &p);

    let dst = PgDb::new("memory_r");
    let p = run_peak(
        repo.cmd(&["restore", "latest", "--name", "pg", "--to", &dst.url()]),
        None,
        &out,
    );
    under_budget("restore into a database", &p);
    assert_eq!(dst.fingerprint(), src.fingerprint());

    let p = run_peak(
        repo.cmd(&["restore", "latest", "--name", "pg", "--to", "-"]),
        None,
        &out,
    );
    under_budget("restore of the database as a script", &p);
}

/// A row wider than any chunk: one 100 MiB bytea (200 MiB as COPY text). A piped backup
/// passes the row on as it comes (under 96 MiB); a direct backup holds at most the one
/// row the server sends as one message (README: 64 MiB plus 1.25x the row's text); the
/// restore streams it back, and it comes back intact.
#[test]
fn a_100_mib_row_keeps_memory_within_the_stated_bound() {
    let src = PgDb::new("wide");
    src.sql(
        "CREATE TABLE wide (id int, b bytea); \
         INSERT INTO wide SELECT 1, decode(string_agg(md5(g::text), '' ORDER BY g), 'hex') \
         FROM generate_series(1, 6553600) g; \
         INSERT INTO wide VALUES (2, '\\x00ff');",
    );
    let want = src.sql("SELECT id, length(b), md5(b) FROM wide ORDER BY id");
    assert!(want.contains("|104857600|"), "{want}");
    let repo = Repo::new();
    let out = repo.dir.path().join("out");
    let dump = repo.dir.path().join("dump.sql");
    let st = std::process::Command::new("pg_dump")
        .arg("-f")
        .arg(&dump)
        .arg("-d")
        .arg(dbvault_tests::pgfixture::conn(&src))
        .status()
        .expect("pg_dump");
    assert!(st.success());
    let p = run_peak(
        repo.cmd(&["backup", "-", "--name", "piped"]),
        Some(&dump),
        &out,
    );
    eprintln!("piped backup of a 100 MiB row: peak {:.1} MiB", p.mib);
    assert!(p.ok, "{}", p.stderr);
    assert!(p.mib < 96.0, "piped backup peaked at {:.1} MiB", p.mib);

    let p = run_peak(
        repo.cmd(&["backup", &src.url(), "--name", "direct"]),
        None,
        &out,
    );
    eprintln!("direct backup of a 100 MiB row: peak {:.1} MiB", p.mib);
    assert!(p.ok, "{}", p.stderr);
    let bound = 64.0 + 1.25 * 200.0;
    assert!(p.mib < bound, "direct backup peaked at {:.1} MiB", p.mib);

    for name in ["piped", "direct"] {
        let dst = PgDb::new("wide_r");
        let p = run_peak(
            repo.cmd(&["restore", "latest", "--name", name, "--to", &dst.url()]),
            None,
            &out,
        );
        eprintln!("restore of the {name} snapshot: peak {:.1} MiB", p.mib);
        assert!(p.ok, "{}", p.stderr);
        assert!(p.mib < 96.0, "restore peaked at {:.1} MiB", p.mib);
        assert_eq!(
            dst.sql("SELECT id, length(b), md5(b) FROM wide ORDER BY id"),
            want
        );
    }
    let p = run_peak(
        repo.cmd(&["restore", "latest", "--name", "piped", "--to", "-"]),
        None,
        &out,
    );
    assert!(p.ok, "{}", p.stderr);
    assert!(
        same_bytes(&out, &dump),
        "the piped dump comes back byte for byte"
    );
}
