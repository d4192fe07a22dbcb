//! Restoring a whole PostgreSQL database from a pg_dump snapshot, scheduled like
//! `pg_restore -j`: pre-data; table data on parallel connections with each table's keys
//! and indexes built as soon as its rows are in; then foreign keys and the rest.

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use dbvault_core::{Part, Repository, Snapshot};

use super::conn::PgSource;
use super::load::Loader;
use super::meta::{section, tables, TablePart, LARGE_OBJECTS, POST_DATA, PRE_DATA};
use super::options::RestoreOptions;
use super::post_plan::plan_post;
use super::restore_jobs::{ForeignKey, Job, Jobs};
use super::script::table_script;
use crate::error::{FormatError, Result};
use crate::notice::{Notice, Notify};
use crate::read::{part_bytes, write_part};

fn panicked(what: &str) -> FormatError {
    FormatError::io(what, std::io::Error::other("panicked"))
}

fn poisoned() -> FormatError {
    FormatError::io("work queue", std::io::Error::other("poisoned"))
}

/// Parallel sessions for a restore: the cores, at most 4.
pub(crate) fn jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4)
}

/// Runs scripts on parallel psql sessions, longest first onto the least loaded session.
fn run_parallel(
    url: &PgSource,
    what: &str,
    work: Vec<(u64, String)>,
    preamble: &str,
    epilogue: &str,
    jobs: usize,
) -> Result<()> {
    let mut work = work;
    work.sort_by(|a, b| b.0.cmp(&a.0));
    let mut buckets: Vec<(u64, String)> = vec![(0, String::new()); jobs.max(1)];
    for (c, text) in work {
        if let Some(b) = buckets.iter_mut().min_by_key(|b| b.0) {
            b.0 += c.max(1);
            b.1.push_str(&text);
        }
    }
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = buckets
            .iter()
            .filter(|b| !b.1.is_empty())
            .map(|b| {
                s.spawn(move || {
                    url.psql(what, false, |w| {
                        w.write_all(preamble.as_bytes())?;
                        w.write_all(b"\n")?;
                        w.write_all(b.1.as_bytes())?;
                        Ok(w.write_all(epilogue.as_bytes())?)
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| panicked("a restore session"))??;
        }
        Ok(())
    })
}

/// The SQL statements of a preamble (psql meta-commands dropped), for sessions that do not
/// go through psql.
fn preamble_sql(preamble: &str) -> String {
    preamble
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every restore session commits without waiting for its WAL to reach disk: a restore is
/// hundreds of commits (each statement of pre-data, each table, each key), and each one
/// waited for an fsync (about 4 ms here) while both cores idled. The restore ends with one
/// synchronous commit ([`durable`]), which flushes the WAL of every earlier one, so
/// nothing is reported restored before it is on disk.
const ASYNC_COMMIT: &str = "SET synchronous_commit = off;\n";

/// Waits until everything the restore's sessions committed is on disk: a synchronous
/// commit of a transaction with an id flushes the WAL up to its own commit record, which
/// follows every commit before it.
fn durable(url: &PgSource) -> Result<()> {
    Loader::connect(url)?.execute(
        "making the restore durable",
        "SET synchronous_commit = on; BEGIN; SELECT txid_current(); COMMIT;",
    )
}

/// Rows and BLAKE3 of the row text sent per table (restore-test compares them with what
/// the server gives back).
pub(crate) type Sent = std::sync::Mutex<std::collections::BTreeMap<String, (u64, String)>>;

/// Whole database: pre-data; then table data on parallel connections, each table's keys
/// and indexes built as soon as its rows are in (while other tables still load); then the
/// large objects, the remaining keys, foreign keys, and the rest of post-data.
///
/// # Errors
/// The first failure, naming the table and statement; damage and storage errors.
pub(crate) fn restore_database(
    repo: &Repository,
    snap: &Snapshot,
    a: &RestoreOptions,
    url: &PgSource,
    sent: Option<&Sent>,
    notify: Notify<'_>,
) -> Result<()> {
    let pre = section(snap, PRE_DATA)
        .ok_or_else(|| FormatError::Invalid("the snapshot has no pre-data section".into()))?;
    let pre_text = part_bytes(repo, pre, notify)?;
    // Every session starts with the dump's preamble (SET statements and `\restrict`); the
    // sessions we add close the restriction themselves.
    let ts = table_script(&String::from_utf8_lossy(&pre_text), "", "", "", None);
    let (preamble, epilogue) = (format!("{}\n{ASYNC_COMMIT}", ts.preamble), ts.epilogue());
    let post_text = match section(snap, POST_DATA) {
        Some(p) => String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned(),
        None => String::new(),
    };
    let mut plan = plan_post(snap, &post_text)?;
    if !a.data_only {
        let dropped = super::clean::prepare(url, &String::from_utf8_lossy(&pre_text), a.clean)?;
        if dropped > 0 {
            notify(Notice::Done(format!(
                "--clean: dropped {dropped} object(s) the snapshot creates again"
            )));
        }
        url.psql("restoring the schema (pre-data)", false, |w| {
            w.write_all(ASYNC_COMMIT.as_bytes())?;
            Ok(w.write_all(&pre_text)?)
        })?;
    }
    if !a.schema_only {
        let per_table = if a.data_only {
            HashMap::new()
        } else {
            std::mem::take(&mut plan.per_table)
        };
        let keys = if a.data_only {
            Vec::new()
        } else {
            std::mem::take(&mut plan.keys)
        };
        let queue = Jobs::new(tables(snap).collect(), keys);
        let session = preamble_sql(&preamble);
        // One more connection than cores: the server, the index builds and our
        // decompression overlap (measured: 3 connections beat 2 on two cores).
        let jobs = a.jobs.unwrap_or(jobs() + 1).max(1);
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let loader = Loader::connect(url)?;
                        loader.execute("setting up the session", &session)?;
                        let merge_ok = loader.server_version_num()? >= 140_000;
                        while let Some(job) = queue.next()? {
                            let r = match &job {
                                Job::Table(part) => load_table(
                                    repo, part, a, url, &loader, &preamble, &epilogue, sent, notify,
                                )
                                .and_then(|()| build_indexes(&loader, part, &per_table)),
                                Job::Key(k) => add_key(&loader, k, merge_ok),
                            };
                            queue.finished(&job, r.is_ok())?;
                            r?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| panicked("a restore worker"))??;
            }
            Ok(())
        })?;
        // Keys of a table that failed never get here (the error is returned above).
        plan.fks
            .extend(queue.left()?.into_iter().map(|k| (k.cost, k.sql)));
        if let Some(lo) = section(snap, LARGE_OBJECTS) {
            let session = (preamble.as_str(), epilogue.as_str());
            psql_part(
                repo,
                url,
                "restoring large objects",
                false,
                lo,
                session,
                notify,
            )?;
        }
    }
    let jobs = jobs();
    if a.data_only {
        let seqs: Vec<(u64, String)> = plan
            .first
            .into_iter()
            .filter(|(_, t)| t.contains("Type: SEQUENCE SET;"))
            .collect();
        run_parallel(
            url,
            "restoring sequence values",
            seqs,
            &preamble,
            &epilogue,
            1,
        )?;
    } else {
        // With --schema-only no table was loaded: their foreign keys come here.
        plan.fks
            .extend(plan.keys.into_iter().map(|k| (k.cost, k.sql)));
        let mut first = plan.first;
        // With --schema-only no table was loaded: its keys and indexes come here.
        first.extend(plan.per_table.into_values().flatten().map(|t| (0, t)));
        run_parallel(
            url,
            "creating indexes and constraints",
            first,
            &preamble,
            &epilogue,
            jobs,
        )?;
        if !plan.attach.is_empty() {
            run_parallel(
                url,
                "attaching partitions' indexes",
                vec![(0, plan.attach)],
                &preamble,
                &epilogue,
                1,
            )?;
        }
        run_parallel(
            url,
            "creating foreign keys",
            plan.fks,
            &preamble,
            &epilogue,
            jobs,
        )?;
        if !plan.rest.is_empty() {
            run_parallel(
                url,
                "restoring triggers, comments and grants (post-data)",
                vec![(0, plan.rest)],
                &preamble,
                &epilogue,
                1,
            )?;
        }
    }
    durable(url)?;
    notify(Notice::Done(format!(
        "restored {} tables into {}",
        tables(snap).count(),
        url.public()
    )));
    Ok(())
}

/// The first line of a statement that is not a comment, for error messages.
fn first_line(sql: &str) -> &str {
    sql.lines()
        .find(|l| !l.starts_with("--") && !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Adds a foreign key between two loaded tables. The server checks every existing row
/// with an anti-join of the two tables, which its planner, without statistics, makes a
/// hash join: at shopbench scale 10 that spilled the 5 million keys of `orders` to temp
/// files and took 5-6.6 s. When an index of the referencing table leads with the key's
/// columns (`k.indexed`; the table's own keys are built before its foreign keys), the
/// same check as a merge of two index-only scans took 2.4-2.7 s, so hash joins are turned
/// off for that statement. Index-only scans need the visibility map set, which `COPY …
/// FREEZE` does from PostgreSQL 14 on (`merge_ok`); every table this restore loads and
/// keys was loaded that way. Only the plan changes, never what is checked.
fn add_key(loader: &Loader, k: &ForeignKey, merge_ok: bool) -> Result<()> {
    let what = format!("restoring {}: {}", k.tables[0], first_line(&k.sql));
    if k.indexed && merge_ok {
        let sql = format!(
            "SET enable_hashjoin = off;\n{}\nRESET enable_hashjoin;",
            k.sql
        );
        return loader.execute(&what, &sql);
    }
    loader.execute(&what, &k.sql)
}

/// Builds a loaded table's keys and indexes.
fn build_indexes(
    loader: &Loader,
    part: &Part,
    per_table: &HashMap<String, Vec<String>>,
) -> Result<()> {
    for sql in per_table.get(&part.name).into_iter().flatten() {
        loader.execute(
            &format!("restoring {}: {}", part.name, first_line(sql)),
            sql,
        )?;
    }
    Ok(())
}

/// Loads one table's rows: over the COPY protocol, or through psql for a dump made with
/// `--inserts`.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn load_table(
    repo: &Repository,
    part: &Part,
    a: &RestoreOptions,
    url: &PgSource,
    loader: &Loader,
    preamble: &str,
    epilogue: &str,
    sent: Option<&Sent>,
    notify: Notify<'_>,
) -> Result<()> {
    let t = TablePart::of(part)?;
    if let Some(copy) = &t.copy {
        let freeze = (!a.data_only).then(|| t.qualified());
        let fill = |w: &mut (dyn Write + Send)| write_part(repo, part, w, notify);
        match sent {
            Some(m) => {
                let r = loader.load_hashed(&part.name, copy, freeze.as_deref(), fill)?;
                m.lock()
                    .map_err(|_| poisoned())?
                    .insert(part.name.clone(), r);
            }
            None => {
                loader.load(&part.name, copy, freeze.as_deref(), fill)?;
            }
        }
        return Ok(());
    }
    let what = format!("loading table {}", part.name);
    psql_part(repo, url, &what, true, part, (preamble, epilogue), notify)
}

/// Runs a part through psql between the dump's preamble and epilogue (`session`); with
/// `single`, in one transaction.
fn psql_part(
    repo: &Repository,
    url: &PgSource,
    what: &str,
    single: bool,
    part: &Part,
    session: (&str, &str),
    notify: Notify<'_>,
) -> Result<()> {
    url.psql(what, single, |w| {
        w.write_all(session.0.as_bytes())?;
        w.write_all(b"\n")?;
        let mut bw = BufWriter::with_capacity(1 << 20, w);
        write_part(repo, part, &mut bw, notify)?;
        bw.write_all(session.1.as_bytes())?;
        bw.flush()?;
        Ok(())
    })
}
