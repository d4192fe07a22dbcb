//! restore-test of a PostgreSQL snapshot: a fresh database on a scratch server, named
//! `dbvault_restore_test_<snapshot>_<random>` (no real database is named like that), is
//! restored like a whole-database restore; every table is read back (`COPY … TO STDOUT`
//! with pg_dump's session settings, on parallel connections) and its BLAKE3 compared with
//! the rows sent and with the hash recorded at backup time (direct backups), its row count
//! with the one recorded; the large objects are counted and fingerprinted; then the
//! database is dropped, whatever happened. A whole-server snapshot tests every database.

use std::collections::HashMap;

use dbvault_core::restore::restore_part;
use dbvault_core::{Id, Part, Repository, Snapshot};

use super::conn::PgSource;
use super::load::{read_back_statement, Loader};
use super::lobs::{self, LargeObjects, TextFingerprint};
use super::meta::{section, tables, TablePart, LARGE_OBJECTS, POST_DATA, PRE_DATA};
use super::restore::{part_bytes, Notice, Notify, RestoreOptions};
use super::restore_db::{jobs, restore_database, Sent};
use crate::error::{FormatError, Result};
use crate::verify::{add_damage, damaged_parts, problem, Outcome, TableResult};

/// Drops the scratch database whatever happens.
struct Scratch<'a> {
    server: &'a PgSource,
    db: String,
    notify: Notify<'a>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db);
        if let Err(e) = self.server.query(&sql) {
            (self.notify)(Notice::Done(format!(
                "warning: could not drop the scratch database {}: {e}",
                self.db
            )));
        }
    }
}

/// Restore-tests `snap` (one database, or every database of a whole-server snapshot) on
/// the server `scratch` points at.
///
/// # Errors
/// The scratch database cannot be created, or the snapshot cannot be read (the store does
/// not answer): the test could not be done. Damage and wrong rows are in the outcome.
pub fn restore_test(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    scratch: &PgSource,
    notify: Notify<'_>,
) -> Result<Outcome> {
    if snap.source.kind != super::server::KIND {
        return test_database(repo, id, snap, scratch, notify);
    }
    let mut all = Outcome::default();
    for db in super::restore_server::databases(snap)?.keys() {
        let sub = super::restore_server::sub_snapshot(snap, db);
        let mut o = test_database(repo, id, &sub, scratch, notify)?;
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
    Ok(all)
}

/// Readies the scratch database for a selective snapshot as a DBA would for such a dump:
/// a `--table` dump creates no schemas, so those its objects live in are created first; a
/// dump of schema `public` creates it, so the scratch database's own is dropped first.
/// Returns notes saying what was done.
fn prepare_scratch(
    repo: &Repository,
    snap: &Snapshot,
    target: &PgSource,
    notify: Notify<'_>,
) -> Result<Vec<String>> {
    let headers: Vec<super::toc::TocHeader> = match section(snap, PRE_DATA) {
        Some(p) => {
            let text = String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned();
            super::script::entries(&text)
                .into_iter()
                .filter_map(|e| e.header)
                .collect()
        }
        None => Vec::new(),
    };
    let run = |sql: String| {
        target.query(&sql).map_err(|e| FormatError::Postgres {
            context: format!("preparing the scratch database ({sql})"),
            message: e.to_string(),
            sqlstate: None,
        })
    };
    let mut notes = Vec::new();
    let creates = |name: &str| headers.iter().any(|h| h.kind == "SCHEMA" && h.name == name);
    if creates("public") {
        run("DROP SCHEMA public".into())?;
        notes.push(
            "the snapshot creates schema public: the scratch database's own was dropped first"
                .into(),
        );
    }
    let mut schemas: std::collections::BTreeSet<String> = tables(snap)
        .map(|p| TablePart::of(p).map(|t| t.schema))
        .collect::<Result<_>>()?;
    schemas.extend(headers.iter().map(|h| h.schema.clone()));
    let mut made = Vec::new();
    for s in schemas {
        if s.is_empty() || s == "-" || s == "public" || creates(&s) {
            continue;
        }
        let q = format!("\"{}\"", s.replace('"', "\"\""));
        run(format!("CREATE SCHEMA IF NOT EXISTS {q}"))?;
        made.push(q);
    }
    if !made.is_empty() {
        notes.push(format!(
            "the snapshot creates no schema {}: the scratch database was given it first",
            made.join(", ")
        ));
    }
    Ok(notes)
}

fn test_database(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    server: &PgSource,
    notify: Notify<'_>,
) -> Result<Outcome> {
    let mut rnd = [0u8; 4];
    dbvault_core::crypto::fill_random(&mut rnd)?;
    let db = format!("dbvault_restore_test_{}_{}", id.short(), hex(&rnd));
    server
        .query(&format!("CREATE DATABASE \"{db}\""))
        .map_err(|e| FormatError::Postgres {
            context: format!("cannot create the scratch database on {}", server.public()),
            message: e.to_string(),
            sqlstate: None,
        })?;
    let scratch = Scratch { server, db, notify };
    let target = server.for_database(&scratch.db);
    let mut out = Outcome {
        scratch: format!("scratch database {} on {}", scratch.db, server.public()),
        ..Outcome::default()
    };
    out.notes.extend(snap.source.notes.iter().cloned());
    if !super::select::Selection::of(snap).is_whole() {
        out.notes
            .extend(prepare_scratch(repo, snap, &target, notify)?);
    }
    let sent = Sent::default();
    let restored = restore_database(
        repo,
        snap,
        &RestoreOptions::default(),
        &target,
        Some(&sent),
        notify,
    );
    if let Err(e) = restored {
        if e.storage_kind().is_some() {
            return Err(e);
        }
        let damaged = damaged_parts(repo, snap)?;
        if damaged.is_empty() {
            out.problems
                .push(problem(id, None, format!("the restore failed: {e}"), None));
        }
        add_damage(&mut out, id, damaged);
        return Ok(out);
    }
    let sent = sent.into_inner().unwrap_or_default();
    let pre_text = match section(snap, PRE_DATA) {
        Some(p) => String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned(),
        None => String::new(),
    };
    let filters = Loader::connect(&target)?.config_table_filters()?;
    let mut results = read_back(&target, snap, &pre_text, &sent, &filters)?;
    results.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(t) = compare_large_objects(repo, snap, &target)? {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads the tables back on parallel connections, largest first.
fn read_back(
    target: &PgSource,
    snap: &Snapshot,
    pre_text: &str,
    sent: &std::collections::BTreeMap<String, (u64, String)>,
    filters: &HashMap<String, String>,
) -> Result<Vec<TableResult>> {
    let mut order: Vec<&Part> = tables(snap).collect();
    order.sort_by_key(|p| p.size);
    let queue = std::sync::Mutex::new(order);
    let results = std::sync::Mutex::new(Vec::new());
    let poisoned = || FormatError::io("work queue", std::io::Error::other("poisoned"));
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs())
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let loader = Loader::connect_like_pg_dump(target, pre_text)?;
                    loop {
                        let Some(part) = queue.lock().map_err(|_| poisoned())?.pop() else {
                            return Ok(());
                        };
                        let t = compare_table(&loader, part, sent.get(&part.name), filters)?;
                        results.lock().map_err(|_| poisoned())?.push(t);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| FormatError::io("a worker", std::io::Error::other("panicked")))??;
        }
        Ok(())
    })?;
    Ok(results.into_inner().unwrap_or_default())
}

/// Reads one restored table back and compares it with what was sent and recorded.
fn compare_table(
    loader: &Loader,
    part: &Part,
    sent: Option<&(u64, String)>,
    filters: &HashMap<String, String>,
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
    let meta = TablePart::of(part)?;
    let stmt = read_back_statement(
        meta.copy.as_deref().unwrap_or_default(),
        filters.get(&meta.qualified()).map(String::as_str),
    );
    let (rows, hash) = loader.copy_out_hash(&format!("reading back {}", part.name), &stmt)?;
    t.rows_restored = Some(rows);
    t.detail = if &hash != sent_hash {
        "the rows read back differ from the rows restored".into()
    } else if meta.copy_blake3.as_ref().is_some_and(|r| *r != hash) {
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
    target: &PgSource,
) -> Result<Option<TableResult>> {
    let expected = match section(snap, LARGE_OBJECTS) {
        Some(p) => LargeObjects::recorded(p),
        None => match section(snap, POST_DATA) {
            Some(post) => {
                let mut fp = TextFingerprint::default();
                restore_part(repo, post, &mut fp)?;
                Some(fp.finish())
            }
            None => None,
        },
    };
    let found = lobs::fingerprint_database(&Loader::connect(target)?)?;
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
