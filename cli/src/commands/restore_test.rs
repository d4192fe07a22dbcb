//! `dbvault restore-test SNAPSHOT`: restore into a scratch copy, run the database's own
//! checks, drop the copy, store and print a report; exit 3 when anything is wrong.
//!
//! PostgreSQL: a fresh database on the `--scratch` server, named
//! `dbvault_restore_test_<snapshot>_<random>` (no real database is named like that), is
//! created, restored like `restore --to`, and per table the rows the server gives back
//! (`COPY … TO STDOUT`) are hashed and compared with the rows sent, with the hash recorded
//! at backup time (direct backups) and with the row count recorded; then it is dropped,
//! whatever happened. SQLite: a temporary file, `PRAGMA integrity_check` and
//! `foreign_key_check`, and every table's row count against the one recorded.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use dbvault_core::check::Problem;
use dbvault_core::lock::LockKind;
use dbvault_core::report::Report;
use dbvault_core::restore::restore_part;
use dbvault_core::{Id, Part, Repository, Snapshot};
use dbvault_formats::pgload::Loader;
use dbvault_formats::pglobs;
use dbvault_formats::sqlite;
use serde::Serialize;

use super::restore_pg::{meta_str, tables};
use super::restore_pg_db::{jobs, restore_database, Sent};
use crate::args::{Cli, RestoreArgs, RestoreTestArgs};
use crate::pg::PgUrl;
use crate::repo_access;

/// One table's verdict.
#[derive(Serialize)]
struct TableResult {
    name: String,
    ok: bool,
    rows_recorded: Option<u64>,
    rows_restored: Option<u64>,
    detail: String,
}

#[derive(Default)]
struct Outcome {
    scratch: String,
    tables: Vec<TableResult>,
    problems: Vec<Problem>,
}

pub fn run(cli: &Cli, a: &RestoreTestArgs) -> Result<ExitCode> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "restore-test")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    let started = Instant::now();
    let out = match snap.source.format.as_str() {
        "pg_dump" if snap.source.kind == dbvault_formats::pgserver::KIND => {
            // Every database of a whole-server snapshot, one scratch database each.
            let mut all = Outcome::default();
            for db in super::restore_pg_server::databases(&snap).keys() {
                let sub = super::restore_pg_server::sub_snapshot(&snap, db);
                let mut o = pg_test(&repo, &id, &sub, a)?;
                for t in &mut o.tables {
                    t.name = format!("{db}/{}", t.name);
                }
                for p in &mut o.problems {
                    p.part = p.part.take().map(|n| format!("{db}/{n}"));
                }
                all.scratch = o.scratch;
                all.tables.extend(o.tables);
                all.problems.extend(o.problems);
            }
            all
        }
        "pg_dump" => pg_test(&repo, &id, &snap, a)?,
        "sqlite" => sqlite_test(&repo, &id, &snap)?,
        _ => bail!(
            "snapshot {} is a raw stream ({}): restore-test needs a PostgreSQL or SQLite snapshot",
            id.short(),
            snap.source.kind
        ),
    };
    let ok = out.problems.is_empty();
    let seconds = started.elapsed().as_secs_f64();
    let body = serde_json::json!({
        "ok": ok,
        "snapshot": id.to_hex(),
        "name": snap.name,
        "snapshot_time": crate::output::time(&snap.time),
        "scratch": out.scratch,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "tables": out.tables,
        "problems": out.problems,
    });
    let stored = repo.save_report(&Report::now(
        "restore-test",
        ok,
        Some(id),
        seconds,
        body.clone(),
    ));
    if let Err(e) = &stored {
        eprintln!("dbvault: warning: the report could not be stored: {e}");
    }
    if cli.json {
        crate::output::json(&body);
    } else {
        crate::outln!(
            "restore-test of snapshot {} ({}, {}) into {}",
            id.short(),
            snap.name,
            crate::output::time(&snap.time),
            out.scratch
        );
        for t in &out.tables {
            let rows = t
                .rows_restored
                .map(|r| format!("{r} rows"))
                .unwrap_or_default();
            crate::outln!(
                "  {:<30} {:>14}  {}",
                t.name,
                rows,
                if t.ok {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", t.detail)
                }
            );
        }
        let listed = |p: &Problem| out.tables.iter().any(|t| Some(&t.name) == p.part.as_ref());
        for p in out.problems.iter().filter(|p| !listed(p)) {
            match &p.part {
                Some(part) => crate::outln!("  {part}: FAILED: {}", p.detail),
                None => crate::outln!("  FAILED: {}", p.detail),
            }
        }
        crate::outln!(
            "{} in {:.1} s{}",
            if ok { "PASSED" } else { "FAILED" },
            seconds,
            if stored.is_ok() {
                " (report stored in the repository)"
            } else {
                ""
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn problem(id: &Id, part: Option<&str>, detail: String, pack: Option<Id>) -> Problem {
    Problem {
        kind: "restore-test".into(),
        snapshot: Some(id.to_hex()),
        part: part.map(str::to_string),
        pack: pack.map(|p| p.to_hex()),
        detail,
    }
}

/// Reads every part through its hash check: which ones are damaged, and how. A part that
/// cannot be read for another reason (the store does not answer) is that error: the
/// restore-test could not be done, which is not damage.
fn damaged_parts(repo: &Repository, snap: &Snapshot) -> Result<Vec<(String, dbvault_core::Error)>> {
    let mut out = Vec::new();
    for p in &snap.parts {
        match restore_part(repo, p, &mut std::io::sink()) {
            Ok(_) => {}
            Err(e) if e.is_damage() => out.push((p.name.clone(), e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Drops the scratch database whatever happens.
struct Scratch {
    server: PgUrl,
    db: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db);
        if let Err(e) = self.server.query(&sql) {
            eprintln!(
                "dbvault: warning: could not drop the scratch database {}: {e:#}",
                self.db
            );
        }
    }
}

fn pg_test(repo: &Repository, id: &Id, snap: &Snapshot, a: &RestoreTestArgs) -> Result<Outcome> {
    let server = PgUrl::parse(a.scratch.as_deref().unwrap_or("postgresql:///postgres"))?;
    let mut rnd = [0u8; 4];
    dbvault_core::crypto::fill_random(&mut rnd)?;
    let db = format!("dbvault_restore_test_{}_{}", id.short(), hex::encode(rnd));
    server
        .query(&format!("CREATE DATABASE \"{db}\""))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the scratch database on {}: {e:#}",
                server.public
            )
        })?;
    let scratch = Scratch { server, db };
    let target = scratch.server.with_database(&scratch.db);
    let mut out = Outcome {
        scratch: format!(
            "scratch database {} on {}",
            scratch.db, scratch.server.public
        ),
        ..Outcome::default()
    };
    let args = RestoreArgs {
        snapshot: id.to_hex(),
        to: target.public.clone(),
        name: None,
        database: None,
        tables: Vec::new(),
        rename_table: None,
        schema_only: false,
        data_only: false,
        force: false,
        clean: false,
    };
    let sent = Sent::default();
    if let Err(e) = restore_database(repo, snap, &args, &target, Some(&sent)) {
        let unreachable = e.chain().any(|c| {
            c.downcast_ref::<dbvault_core::Error>()
                .is_some_and(|ce| ce.storage_kind().is_some())
        });
        if unreachable {
            return Err(e.context("the restore-test could not read the snapshot"));
        }
        let damaged = damaged_parts(repo, snap)?;
        if damaged.is_empty() {
            out.problems
                .push(problem(id, None, format!("the restore failed: {e:#}"), None));
        }
        for (part, why) in damaged {
            out.tables.push(TableResult {
                name: part.clone(),
                ok: false,
                rows_recorded: None,
                rows_restored: None,
                detail: why.to_string(),
            });
            out.problems
                .push(problem(id, Some(&part), why.to_string(), why.damaged_pack()));
        }
        return Ok(out);
    }
    let sent = sent.into_inner().unwrap_or_default();
    // Read the tables back on parallel connections, largest first.
    let mut order: Vec<&Part> = tables(snap).collect();
    order.sort_by_key(|p| p.size);
    let queue = std::sync::Mutex::new(order);
    let source = target.source()?;
    let pre_text = match snap.parts.iter().find(|p| p.kind == "pre-data") {
        Some(p) => super::restore_pg::part_bytes(repo, p)?,
        None => Vec::new(),
    };
    let pre_text = String::from_utf8_lossy(&pre_text);
    let filters = Loader::connect(&source)?.config_table_filters()?;
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs())
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let loader = Loader::connect_like_pg_dump(&source, &pre_text)?;
                    loop {
                        let Some(part) = queue.lock().map_err(|_| anyhow::anyhow!("lock"))?.pop()
                        else {
                            return Ok(());
                        };
                        let t = compare_table(&loader, part, sent.get(&part.name), &filters)?;
                        results.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(t);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(t) = compare_large_objects(repo, snap, &source)? {
        results.push(t);
    }
    for t in results {
        if !t.ok {
            out.problems
                .push(problem(id, Some(&t.name), t.detail.clone(), None));
        }
        out.tables.push(t);
    }
    Ok(out)
}

/// Reads one restored table back and compares it with what was sent and recorded.
fn compare_table(
    loader: &Loader,
    part: &Part,
    sent: Option<&(u64, String)>,
    filters: &std::collections::HashMap<String, String>,
) -> Result<TableResult> {
    let mut t = TableResult {
        name: part.name.clone(),
        ok: true,
        rows_recorded: part.rows,
        rows_restored: None,
        detail: String::new(),
    };
    let Some((_, sent_hash)) = sent else {
        t.detail = "not compared (an INSERT-format dump)".into();
        return Ok(t);
    };
    let q = dbvault_formats::pgscript::qualified(meta_str(part, "schema"), meta_str(part, "table"));
    let stmt = dbvault_formats::pgload::read_back_statement(
        meta_str(part, "copy"),
        filters.get(&q).map(String::as_str),
    );
    let (rows, hash) = loader.copy_out_hash(&format!("reading back {}", part.name), &stmt)?;
    t.rows_restored = Some(rows);
    let recorded = part.meta.get("copy_blake3").and_then(|v| v.as_str());
    t.detail = if &hash != sent_hash {
        "the rows read back differ from the rows restored".into()
    } else if recorded.is_some_and(|r| r != hash) {
        "the rows differ from the hash recorded at backup time".into()
    } else if part.rows.is_some_and(|r| r != rows) {
        format!(
            "{rows} rows, {} recorded at backup time",
            part.rows.unwrap_or(0)
        )
    } else {
        String::new()
    };
    t.ok = t.detail.is_empty();
    Ok(t)
}

/// Compares the restored large objects (count and fingerprint) with what the snapshot
/// holds: recorded in a large-objects part, or computed from a piped dump's post-data.
/// `None` when there are none on either side.
fn compare_large_objects(
    repo: &Repository,
    snap: &Snapshot,
    source: &dbvault_formats::pgdirect::PgSource,
) -> Result<Option<TableResult>> {
    let expected = match snap.parts.iter().find(|p| p.kind == pglobs::PART) {
        Some(p) => pglobs::LargeObjects::recorded(p),
        None => match snap.parts.iter().find(|p| p.kind == "post-data") {
            Some(post) => {
                let mut fp = pglobs::TextFingerprint::default();
                restore_part(repo, post, &mut fp)?;
                Some(fp.finish())
            }
            None => None,
        },
    };
    let found = pglobs::fingerprint_database(&Loader::connect(source)?)?;
    let want = expected.clone().unwrap_or_default();
    if found.count == 0 && want.count == 0 {
        return Ok(None);
    }
    let detail = if expected.is_none() {
        "not compared (nothing recorded at backup time)".to_string()
    } else if found.count != want.count {
        format!(
            "{} large objects, {} in the snapshot",
            found.count, want.count
        )
    } else if found.fingerprint != want.fingerprint {
        "the large objects read back differ from the snapshot's".to_string()
    } else {
        String::new()
    };
    Ok(Some(TableResult {
        name: "large objects".into(),
        ok: detail.is_empty() || expected.is_none(),
        rows_recorded: expected.map(|e| e.count),
        rows_restored: Some(found.count),
        detail,
    }))
}

fn sqlite_test(repo: &Repository, id: &Id, snap: &Snapshot) -> Result<Outcome> {
    let Some(part) = snap.parts.iter().find(|p| p.kind == "sqlite-db") else {
        bail!("the snapshot has no database part");
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("restore-test.db");
    let mut out = Outcome {
        scratch: format!("temporary file {}", path.display()),
        ..Outcome::default()
    };
    let written = sqlite::write_new_file(&path, false, |f| {
        restore_part(repo, part, f)
            .map(|_| ())
            .map_err(dbvault_formats::FormatError::Core)
    });
    if let Err(e) = written {
        let pack = match &e {
            dbvault_formats::FormatError::Core(c) => c.damaged_pack(),
            _ => None,
        };
        out.problems
            .push(problem(id, Some(&part.name), e.to_string(), pack));
        return Ok(out);
    }
    for p in sqlite::check(&path)? {
        out.problems.push(problem(id, Some(&part.name), p, None));
    }
    let info = sqlite::inspect(&path)?;
    let recorded = part.meta.get("tables").and_then(|t| t.as_object());
    for (name, rows) in &info.tables {
        let want = recorded
            .and_then(|r| r.get(name))
            .and_then(serde_json::Value::as_u64);
        let ok = want.is_none_or(|w| w == *rows);
        let detail = if ok {
            String::new()
        } else {
            format!("{rows} rows, {} recorded at backup time", want.unwrap_or(0))
        };
        if !ok {
            out.problems.push(problem(id, Some(name), detail.clone(), None));
        }
        out.tables.push(TableResult {
            name: name.clone(),
            ok,
            rows_recorded: want,
            rows_restored: Some(*rows),
            detail,
        });
    }
    Ok(out)
}
