//! Custom-format archives of version 1.15, written by PostgreSQL 16's pg_dump (the
//! programs of the pgserver wheel, which `.ci/run` fetches: Debian here has 15), come back
//! byte for byte and restore a table into the PostgreSQL 15 server. Archives with LZ4 and
//! zstd blocks (built by hand from its `-Z0` output: the header names the algorithm and
//! each block is compressed by the real `lz4` tool or the zstd library), which that
//! pg_restore (built without either) cannot read, come back byte for byte too: dbvault
//! decompresses them on their way to pg_restore and stores the blocks as they came.

use std::io::Write;
use std::process::{Command, Stdio};

use dbvault_tests::pgfixture::conn;
use dbvault_tests::{run_cmd, PgDb, Repo};

/// Reads pg_dump's ints, strings and offsets from an archive.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    int_size: usize,
    off_size: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        self.at += 1;
        self.b[self.at - 1]
    }

    fn int(&mut self) -> i64 {
        let neg = self.byte() != 0;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            v |= i64::from(self.byte()) << (8 * i);
        }
        if neg {
            -v
        } else {
            v
        }
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        let n = self.int();
        if n < 0 {
            return None;
        }
        self.at += n as usize;
        Some(self.b[self.at - n as usize..self.at].to_vec())
    }
}

fn write_int(out: &mut Vec<u8>, v: i64, int_size: usize) {
    out.push(u8::from(v < 0));
    let a = v.unsigned_abs();
    for i in 0..int_size {
        out.push((a >> (8 * i)) as u8);
    }
}

/// The 1.15 archive `plain` (made with `-Z0`) with `algorithm` (2 lz4, 3 zstd).
fn rebuilt(plain: &[u8], algorithm: u8, compress: &dyn Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    assert_eq!(&plain[..5], b"PGDMP");
    assert_eq!(
        (plain[5], plain[6]),
        (1, 15),
        "PostgreSQL 16's pg_dump writes 1.15"
    );
    assert_eq!(plain[11], 0, "made with -Z0");
    let mut c = Cursor {
        b: plain,
        at: 12,
        int_size: usize::from(plain[8]),
        off_size: usize::from(plain[9]),
    };
    let mut out = plain[..11].to_vec();
    out.push(algorithm);
    let rest_of_header = c.at;
    for _ in 0..7 {
        c.int();
    }
    for _ in 0..3 {
        c.string();
    }
    // The table of contents, as it is.
    let entries = c.int();
    for _ in 0..entries {
        c.int();
        c.int();
        // Table oid, oid, tag, description.
        for _ in 0..4 {
            c.string();
        }
        c.int(); // section
                 // Definition, drop, COPY statement, schema, tablespace, table access method.
        for _ in 0..6 {
            c.string();
        }
        c.string(); // owner
        c.string(); // "false" (once WITH OIDS)
        while c.string().is_some() {}
        c.at += 1 + c.off_size;
    }
    out.extend_from_slice(&plain[rest_of_header..c.at]);
    // Each block's data, compressed as one stream, written as chunks of at most 4 KiB.
    let chunks = |c: &mut Cursor<'_>, out: &mut Vec<u8>| {
        let mut data = Vec::new();
        loop {
            let n = c.int();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&c.b[c.at..c.at + n as usize]);
            c.at += n as usize;
        }
        for piece in compress(&data).chunks(4096) {
            write_int(out, piece.len() as i64, c.int_size);
            out.extend_from_slice(piece);
        }
        write_int(out, 0, c.int_size);
    };
    let mut blocks = 0;
    while c.at < plain.len() {
        let kind = c.byte();
        out.push(kind);
        let id = c.int();
        write_int(&mut out, id, c.int_size);
        match kind {
            1 => chunks(&mut c, &mut out),
            3 => loop {
                let oid = c.int();
                write_int(&mut out, oid, c.int_size);
                if oid == 0 {
                    break;
                }
                chunks(&mut c, &mut out);
            },
            k => panic!("block type {k}"),
        }
        blocks += 1;
    }
    assert!(blocks >= 3, "only {blocks} data blocks");
    out
}

fn lz4(data: &[u8]) -> Vec<u8> {
    let mut p = Command::new("lz4")
        .args(["-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("lz4: apt-get install lz4");
    let mut stdin = p.stdin.take().expect("stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = p.wait_with_output().expect("lz4");
    feeder.join().expect("feeder").expect("feed lz4");
    assert!(out.status.success());
    out.stdout
}

/// The directory of PostgreSQL 16's client programs.
fn pg16() -> String {
    let dir = std::env::var("DBVAULT_PG16_BIN").unwrap_or_default();
    assert!(
        std::path::Path::new(&dir).join("pg_restore").is_file(),
        "PostgreSQL 16's pg_dump and pg_restore are needed: set DBVAULT_PG16_BIN to their \
         directory (.ci/run unpacks the pgserver wheel from PyPI and sets it)"
    );
    dir
}

/// PATH with PostgreSQL 16's programs first.
fn path16() -> String {
    format!("{}:{}", pg16(), std::env::var("PATH").unwrap_or_default())
}

fn pg_dump16(db: &PgDb, args: &[&str]) -> Vec<u8> {
    let out = Command::new(format!("{}/pg_dump", pg16()))
        .args(args)
        .args(["-d", &conn(db)])
        .output()
        .expect("pg_dump 16");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn shop() -> PgDb {
    let db = PgDb::new("fc115");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v text); \
         INSERT INTO a SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 3000) g; \
         CREATE TABLE b (x int); INSERT INTO b VALUES (1), (2); \
         SELECT lo_from_bytea(0, 'a large object');",
    );
    db
}

#[test]
fn pg_dump_16_archives_come_back_byte_for_byte_and_restore_a_table() {
    let db = shop();
    let repo = Repo::new();
    for args in [
        &["-Fc"][..],
        &["-Fc", "-Z0"][..],
        &["-Fc", "--compress=gzip:9"][..],
        &["-Fc", "--inserts"][..],
    ] {
        let arch = pg_dump16(&db, args);
        assert_eq!((arch[5], arch[6]), (1, 15), "{args:?}");
        let mut c = repo.cmd(&["backup", "-", "--name", "fc16", "--json"]);
        c.env("PATH", path16());
        let s = run_cmd(c, Some(&arch)).ok().json();
        let id = s["snapshot_id"].as_str().expect("id").to_string();
        let back = repo.restore(&id);
        assert_eq!(back.code, Some(0), "{args:?}: {}", back.stderr);
        assert!(back.stdout == arch, "{args:?}: the archive differs");
        // Its tables listed; rows counted where they are COPY data, else not called 0.
        let ls = repo.run(&["ls", &id], None).ok().text();
        let a = ls
            .lines()
            .find(|l| l.starts_with("public.a "))
            .unwrap_or_else(|| panic!("{args:?}: {ls}"));
        let rows = a.split_whitespace().nth(2).unwrap_or_default();
        let want = if args.contains(&"--inserts") {
            "-"
        } else {
            "3000"
        };
        assert_eq!(rows, want, "{args:?}: {ls}");
    }
    // `pg_dump -Fc > file`: PostgreSQL 16 opens its standard output for appending, so the
    // table of contents it rewrites with the data offsets lands after the data. pg_restore
    // reads such a file; so must a backup, and give it back with those bytes.
    let file = repo.dir.path().join("redirected.dump");
    let st = Command::new(format!("{}/pg_dump", pg16()))
        .args(["-Fc", "-d", &conn(&db)])
        .stdout(std::fs::File::create(&file).expect("create"))
        .status()
        .expect("pg_dump 16");
    assert!(st.success());
    let redirected = std::fs::read(&file).expect("read");
    let piped = pg_dump16(&db, &["-Fc"]);
    assert!(
        redirected.len() > piped.len(),
        "{} vs {}: no second table of contents",
        redirected.len(),
        piped.len()
    );
    let mut c = repo.cmd(&["backup", "-", "--name", "redirected", "--json"]);
    c.env("PATH", path16());
    let s = run_cmd(c, Some(&redirected)).ok().json();
    let id = s["snapshot_id"].as_str().expect("id").to_string();
    assert!(
        repo.restore(&id).ok().stdout == redirected,
        "the file differs"
    );
    let chk = repo.run(&["check", "--read-data"], None);
    assert_eq!(chk.code, Some(0), "{}", chk.stderr);
    // One table of the newest, into the PostgreSQL 15 server.
    let dst = PgDb::new("fc115_dst");
    let mut c = repo.cmd(&[
        "restore",
        "latest",
        "--name",
        "redirected",
        "--table",
        "public.a",
        "--to",
        &dst.url(),
    ]);
    c.env("PATH", path16());
    run_cmd(c, None).ok();
    assert_eq!(dst.fingerprint()["public.a"], db.fingerprint()["public.a"]);
}

#[test]
fn lz4_and_zstd_archives_come_back_byte_for_byte_though_pg_restore_reads_neither() {
    let db = shop();
    let plain = pg_dump16(&db, &["-Fc", "-Z0"]);
    let zstd = |d: &[u8]| zstd::bulk::compress(d, 3).expect("zstd");
    let repo = Repo::new();
    let dst = PgDb::new("fc115_lz");
    for (name, algorithm, f) in [
        ("lz4", 2u8, &lz4 as &dyn Fn(&[u8]) -> Vec<u8>),
        ("zstd", 3, &zstd),
    ] {
        let arch = rebuilt(&plain, algorithm, f);
        // The pg_restore here (16, built without LZ4 and zstd) cannot read it itself.
        let own = Command::new(format!("{}/pg_restore", pg16()))
            .args(["-f", "/dev/null"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut p| {
                let mut i = p.stdin.take().expect("stdin");
                let _ = i.write_all(&arch);
                drop(i);
                p.wait_with_output()
            })
            .expect("pg_restore 16");
        assert!(
            !own.status.success()
                && String::from_utf8_lossy(&own.stderr)
                    .contains(&format!("does not support compression with {name}")),
            "{name}: {}",
            String::from_utf8_lossy(&own.stderr)
        );
        let mut c = repo.cmd(&["backup", "-", "--name", name, "--json"]);
        c.env("PATH", path16());
        let s = run_cmd(c, Some(&arch)).ok().json();
        let id = s["snapshot_id"].as_str().expect("id").to_string();
        let back = repo.restore(&id);
        assert_eq!(back.code, Some(0), "{name}: {}", back.stderr);
        assert!(back.stdout == arch, "{name}: the archive differs");
        let ls = repo.run(&["ls", &id], None).ok().text();
        assert!(
            ls.lines()
                .any(|l| l.starts_with("public.a ") && l.split_whitespace().nth(2) == Some("3000")),
            "{name}: {ls}"
        );
        dst.sql("DROP TABLE IF EXISTS a");
        let mut c = repo.cmd(&["restore", &id, "--table", "public.a", "--to", &dst.url()]);
        c.env("PATH", path16());
        run_cmd(c, None).ok();
        assert_eq!(
            dst.fingerprint()["public.a"],
            db.fingerprint()["public.a"],
            "{name}"
        );

        // Debian's pg_restore (15) does not read 1.15 at all: refused, nothing recorded.
        let mut c = repo.cmd(&["backup", "-", "--name", &format!("{name}-15")]);
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        let r = run_cmd(c, Some(&arch));
        assert_eq!(r.code, Some(1), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("no snapshot recorded")
                && r.stderr.contains("unsupported version (1.15)"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(repo.snapshot_ids().len(), 2);

    // One byte changed inside the LZ4 data (its frames carry a content checksum): refused
    // naming the block, nothing recorded.
    let mut bad = rebuilt(&plain, 2, &lz4);
    let at = bad.len() * 2 / 3;
    bad[at] ^= 0x10;
    let mut c = repo.cmd(&["backup", "-", "--name", "bad"]);
    c.env("PATH", path16());
    let r = run_cmd(c, Some(&bad));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no snapshot recorded")
            && r.stderr.contains("LZ4 data of dump id")
            && r.stderr.contains("damaged"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.snapshot_ids().len(), 2);
    let chk = repo.run(&["check", "--read-data"], None);
    assert_eq!(chk.code, Some(0), "{}", chk.stderr);
}
