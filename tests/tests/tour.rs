//! The README's five-minute tour, run as written against a real PostgreSQL cluster: its
//! configuration file (the TOML block, with this machine's paths), two nights of `run`,
//! `status`, a restore-test, a slice of `check`, `snapshots` and `diff`, the table restored
//! beside the live one and its rows copied back, then `events` finding the DELETE in the
//! WAL archive and the table restored as it was just before. Every `dbvault` command line
//! of the tour's shell blocks must be one this test ran (same subcommand and options), so
//! the README cannot drift from what works.

use std::cell::RefCell;
use std::collections::BTreeSet;

use dbvault_tests::physical::{self, Archive};
use dbvault_tests::{run_cmd, PgCluster, Run};

/// Options that say where and how, not what: not part of a command's shape.
const GLOBAL: [&str; 6] = [
    "--config",
    "--json",
    "--repo",
    "--password-file",
    "--progress",
    "--quiet",
];

/// A command line's shape: the subcommand and its options, sorted.
fn shape(words: &[&str]) -> String {
    let words: Vec<&str> = words
        .iter()
        .copied()
        .skip_while(|w| *w == "dbvault")
        .collect();
    let sub = words
        .iter()
        .find(|w| !w.starts_with('-'))
        .copied()
        .unwrap_or("");
    let mut flags: Vec<&str> = words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w))
        .filter(|w| !GLOBAL.contains(w))
        .collect();
    flags.sort_unstable();
    format!("{sub} {}", flags.join(" "))
}

/// The tour's section of the README.
fn tour() -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README.md");
    let start = readme
        .find("## A five-minute tour")
        .expect("the README has its tour");
    let rest = &readme[start + 3..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// The fenced blocks of `lang` in `text`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    let open = format!("```{lang}\n");
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body.find("```").unwrap_or(body.len());
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

/// The shapes of the `dbvault` commands in the tour's shell blocks.
fn readme_shapes() -> BTreeSet<String> {
    let mut shapes = BTreeSet::new();
    for b in blocks(&tour(), "sh") {
        let joined = b.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split("  #").next().unwrap_or("").trim();
            if line.starts_with("dbvault ") {
                let words: Vec<&str> = line.split_whitespace().collect();
                shapes.insert(shape(&words));
            }
        }
    }
    shapes
}

struct Tour {
    archive: Archive,
    ran: RefCell<BTreeSet<String>>,
}

impl Tour {
    fn dbvault(&self, args: &[&str]) -> Run {
        self.ran.borrow_mut().insert(shape(args));
        run_cmd(self.archive.dbvault(args), None)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.dbvault(args);
        assert_eq!(
            r.code,
            Some(0),
            "dbvault {}: {}\n{}",
            args.join(" "),
            r.stderr,
            r.text()
        );
        r
    }
}

fn fingerprint(pg: &PgCluster, table: &str) -> String {
    pg.sql(
        "shop",
        &format!("SELECT count(*) || ' ' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {table} x"),
    )
    .trim()
    .to_string()
}

#[test]
fn the_readme_tour_runs_as_written() {
    let t = Tour {
        archive: Archive::local(),
        ran: RefCell::default(),
    };
    t.ok(&["init"]);
    let settings = format!(
        "archive_mode = on\ntrack_commit_timestamp = on\n{}\n",
        t.archive.archive_command("main")
    );
    let pg = PgCluster::with_tcp(Some((&settings, "local replication all trust")));
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, customer int, total numeric, status text); \
         INSERT INTO orders SELECT i, i % 97, i * 0.5, 'new' FROM generate_series(1, 6000) i",
    );

    // 1. The nightly unattended backup, from the README's configuration block.
    let toml = blocks(&tour(), "toml")
        .into_iter()
        .next()
        .expect("a toml block");
    let pw = t.archive.dir.join("pw");
    let config = toml
        .replace("/backups/dbvault", &t.archive.repo)
        .replace("/etc/dbvault/passphrase", &pw.display().to_string())
        .replace("postgresql://backup@db1/shop", &pg.url("shop"));
    assert!(
        config != toml,
        "the block names the paths this test replaces"
    );
    let cfg = t.archive.dir.join("dbvault.toml");
    std::fs::write(&cfg, config).expect("config");
    let cfg = cfg.display().to_string();
    // Last night's backup (the retention keeps one a day: it is dated yesterday), the
    // base backup the physical source recovers from (docs/pitr.md), a day of changes, and
    // tonight's run.
    let yesterday = (chrono::Local::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d 02:15")
        .to_string();
    t.ok(&[
        "backup",
        &pg.url("shop"),
        "--name",
        "shop",
        "--time",
        &yesterday,
    ]);
    t.ok(&[
        "backup",
        &pg.url("postgres"),
        "--physical",
        "--name",
        "main",
    ]);
    pg.sql(
        "shop",
        "UPDATE orders SET status = 'shipped' WHERE id % 10 = 0",
    );
    let night = t.ok(&["run", "--config", &cfg]);
    assert!(night.text().contains("shop"), "{}", night.text());
    let status = t.ok(&["status", "--config", &cfg]);
    assert!(status.text().contains("shop"), "{}", status.text());

    // 2. The quarterly restore test.
    let rt = t.ok(&[
        "restore-test",
        "latest",
        "--name",
        "shop",
        "--scratch",
        &pg.url("postgres"),
    ]);
    assert!(rt.text().contains("PASSED"), "{}", rt.text());
    t.ok(&["check", "--read-data-subset", "3/12"]);
    let snaps = t.ok(&["snapshots", "--name", "shop"]);
    assert!(snaps.text().contains("passed"), "{}", snaps.text());

    // 3. The 3 a.m. recovery: someone deletes the wrong rows after last night's backup.
    let before = fingerprint(&pg, "orders");
    let xid: u64 = pg
        .sql(
            "shop",
            "BEGIN; DELETE FROM orders WHERE customer = 42; SELECT txid_current(); COMMIT;",
        )
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .expect("xid");
    let j = t.ok(&["snapshots", "--name", "shop", "--json"]).json();
    let ids: Vec<&str> = j
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2, "{j}");
    let diff = t.ok(&["diff", ids[0], ids[1]]);
    assert!(diff.text().contains("public.orders"), "{}", diff.text());
    t.ok(&[
        "restore",
        "latest",
        "--name",
        "shop",
        "--table",
        "public.orders",
        "--rename-table",
        "orders_restored",
        "--to",
        &pg.url("shop"),
    ]);
    pg.sql("shop", "INSERT INTO public.orders SELECT * FROM public.orders_restored WHERE id NOT IN (SELECT id FROM public.orders)");
    pg.sql("shop", "DROP TABLE public.orders_restored");
    assert_eq!(fingerprint(&pg, "orders"), before, "the rows are back");

    // With WAL archiving: when did it happen, and the table just before it.
    physical::archive_now(&|q| pg.sql("postgres", q), &|| pg.log());
    let ev = t.ok(&["events", "--name", "main", "--table", "orders"]);
    assert!(
        ev.text().contains(&format!("xid {xid}")) && ev.text().contains("DELETE"),
        "{}",
        ev.text()
    );
    let base = t
        .ok(&["snapshots", "--name", "main", "--json"])
        .json()
        .as_array()
        .and_then(|a| a.first().cloned())
        .expect("a base backup");
    let base = base["id"].as_str().expect("id").to_string();
    let xid = xid.to_string();
    t.ok(&[
        "restore",
        &base[..8],
        "--table",
        "public.orders",
        "--database",
        "shop",
        "--before-xid",
        &xid,
        "--rename-table",
        "orders_before",
        "--to",
        &pg.url("shop"),
    ]);
    assert_eq!(
        fingerprint(&pg, "orders_before"),
        before,
        "the table as it was just before the DELETE"
    );

    // Every command of the tour was run here, as written.
    let ran = t.ran.borrow();
    let shapes = readme_shapes();
    assert!(
        shapes.len() >= 7,
        "the tour's commands are read: {shapes:?}"
    );
    let missing: Vec<String> = shapes.into_iter().filter(|s| !ran.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "README tour commands this test did not run: {missing:?} (ran: {ran:?})"
    );
}
