//! Restoring pg_dump snapshots: the original stream, a whole database, or one table.

use std::io::{BufWriter, Write};

use anyhow::{anyhow, bail, Result};
use dbvault_core::restore::restore_part;
use dbvault_core::{Part, Repository, Snapshot};
use std::collections::HashMap;

use dbvault_formats::pgscript::{qualified, table_script, TableScript};

use crate::args::RestoreArgs;
use crate::pg::PgUrl;
use dbvault_formats::pgload::Loader;

/// A restore target for PostgreSQL snapshots.
pub enum PgTarget {
    /// The SQL on stdout.
    Stdout,
    /// A database.
    Database(PgUrl),
}

fn part_bytes(repo: &Repository, part: &Part) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(part.size as usize);
    write_part(repo, part, &mut v)?;
    Ok(v)
}

fn write_part(repo: &Repository, part: &Part, out: &mut (dyn Write + Send)) -> Result<()> {
    let report = restore_part(repo, part, out)?;
    for w in report.warnings {
        eprintln!("dbvault: warning: {w}");
    }
    Ok(())
}

fn section<'a>(snap: &'a Snapshot, kind: &str) -> Option<&'a Part> {
    snap.parts.iter().find(|p| p.kind == kind)
}

fn tables(snap: &Snapshot) -> impl Iterator<Item = &Part> {
    snap.parts.iter().filter(|p| p.kind == "table-data")
}

fn meta_str<'a>(p: &'a Part, key: &str) -> &'a str {
    p.meta.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// Unquotes a user's table name: `orders`, `public.orders`, `"Mixed Case"`,
/// `public."Mixed.Case"`. Unquoted names fold to lower case, as in SQL.
fn parse_table_arg(s: &str) -> (Option<String>, String, bool) {
    let mut parts = Vec::new();
    let mut quoted_any = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut was_quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_q && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => {
                in_q = !in_q;
                was_quoted = true;
            }
            '.' if !in_q => {
                parts.push(std::mem::take(&mut cur));
                quoted_any.push(was_quoted);
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    parts.push(cur);
    quoted_any.push(was_quoted);
    let fold = |s: String, q: bool| if q { s } else { s.to_lowercase() };
    let exact = quoted_any.iter().any(|q| *q);
    match parts.len() {
        1 => (None, fold(parts.remove(0), quoted_any[0]), exact),
        _ => {
            let t = parts.pop().unwrap_or_default();
            let schema = parts.join(".");
            (
                Some(fold(schema, quoted_any[0])),
                fold(t, *quoted_any.last().unwrap_or(&false)),
                exact,
            )
        }
    }
}

/// Finds the data part of a table named on the command line.
pub fn find_table<'a>(snap: &'a Snapshot, arg: &str) -> Result<&'a Part> {
    let (schema, table, exact) = parse_table_arg(arg);
    let matches = |p: &&Part, ci: bool| {
        let eq = |a: &str, b: &str| {
            if ci {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        eq(meta_str(p, "table"), &table)
            && schema
                .as_deref()
                .is_none_or(|s| eq(meta_str(p, "schema"), s))
    };
    let mut found: Vec<&Part> = tables(snap).filter(|p| matches(p, false)).collect();
    if found.is_empty() && !exact {
        found = tables(snap).filter(|p| matches(p, true)).collect();
    }
    match found.len() {
        1 => Ok(found[0]),
        0 => {
            let names: Vec<&str> = tables(snap).map(|p| p.name.as_str()).collect();
            bail!(
                "the snapshot has no table {arg:?} (it has: {})",
                names.join(", ")
            )
        }
        _ => bail!(
            "table name {arg:?} is ambiguous: {}; qualify it with the schema",
            found
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes one table as a psql script: definition, data, then indexes and constraints.
fn write_table_script(
    repo: &Repository,
    ts: &TableScript,
    part: &Part,
    a: &RestoreArgs,
    out: &mut (dyn Write + Send),
    drop_first: Option<&str>,
) -> Result<()> {
    out.write_all(ts.preamble.as_bytes())?;
    if let Some(d) = drop_first {
        writeln!(out, "DROP TABLE IF EXISTS {d};")?;
    }
    if !a.data_only {
        for e in &ts.schema {
            out.write_all(e.as_bytes())?;
        }
    }
    if !a.schema_only {
        let mut rw = CopyRename {
            out,
            ts,
            head: Vec::new(),
            done: false,
        };
        write_part(repo, part, &mut rw)?;
        rw.finish()?;
    }
    if !a.data_only {
        for e in &ts.post {
            out.write_all(e.as_bytes())?;
        }
    } else {
        // Sequence values are data.
        for e in ts.post.iter().filter(|e| e.contains("Type: SEQUENCE SET;")) {
            out.write_all(e.as_bytes())?;
        }
    }
    out.write_all(ts.epilogue().as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Passes a table-data part through, renaming the table in its `COPY` line.
struct CopyRename<'a> {
    out: &'a mut (dyn Write + Send),
    ts: &'a TableScript,
    head: Vec<u8>,
    done: bool,
}

impl CopyRename<'_> {
    fn finish(&mut self) -> std::io::Result<()> {
        if !self.done {
            let s = self.ts.rename(&String::from_utf8_lossy(&self.head));
            self.out.write_all(s.as_bytes())?;
            self.head.clear();
            self.done = true;
        }
        Ok(())
    }
}

impl Write for CopyRename<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.done {
            return self.out.write(buf);
        }
        self.head.extend_from_slice(buf);
        if let Some(p) = memchr_find(&self.head, b" FROM stdin;\n") {
            let rest = self.head.split_off(p + 13);
            self.finish()?;
            self.out.write_all(&rest)?;
        } else if self.head.len() > 1 << 20 {
            self.finish()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn memchr_find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Restores a pg_dump snapshot.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    a: &RestoreArgs,
    target: PgTarget,
) -> Result<()> {
    let pre = section(snap, "pre-data");
    let post = section(snap, "post-data");
    if a.tables.is_empty() {
        return match target {
            PgTarget::Stdout => {
                let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout());
                for p in &snap.parts {
                    let schema = p.kind != "table-data";
                    if (a.schema_only && !schema) || (a.data_only && schema) {
                        continue;
                    }
                    write_part(repo, p, &mut out)?;
                }
                Ok(())
            }
            PgTarget::Database(url) => restore_database(repo, snap, a, &url),
        };
    }
    let pre_text = pre
        .map(|p| part_bytes(repo, p))
        .transpose()?
        .unwrap_or_default();
    let post_text = post
        .map(|p| part_bytes(repo, p))
        .transpose()?
        .unwrap_or_default();
    let (pre_text, post_text) = (
        String::from_utf8_lossy(&pre_text),
        String::from_utf8_lossy(&post_text),
    );
    let mut chosen = Vec::new();
    for t in &a.tables {
        chosen.push(find_table(snap, t)?);
    }
    for part in chosen {
        let (schema, table) = (meta_str(part, "schema"), meta_str(part, "table"));
        let ts = table_script(
            &pre_text,
            &post_text,
            schema,
            table,
            a.rename_table.as_deref(),
        );
        let dest = dbvault_formats::pgscript::qualified(
            schema,
            a.rename_table.as_deref().unwrap_or(table),
        );
        match &target {
            PgTarget::Stdout => {
                let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout());
                write_table_script(repo, &ts, part, a, &mut out, None)?;
            }
            PgTarget::Database(url) => {
                let exists = url.query(&format!(
                    "SELECT to_regclass('{}') IS NOT NULL",
                    dest.replace('\'', "''")
                ))? == "t";
                if exists && !a.clean && !a.data_only {
                    bail!("table {dest} already exists in {}: restore it beside the live one with --rename-table NEW, or replace it with --clean", url.public);
                }
                let drop = (exists && a.clean && !a.data_only).then_some(dest.as_str());
                url.psql(&format!("restoring table {dest}"), true, |w| {
                    let mut bw = BufWriter::with_capacity(1 << 20, w);
                    write_table_script(repo, &ts, part, a, &mut bw, drop)
                })?;
                eprintln!(
                    "restored {} ({} rows) as {dest}",
                    part.name,
                    part.rows.unwrap_or(0)
                );
            }
        }
    }
    Ok(())
}

fn jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4)
}

/// Post-data sorted into phases, like `pg_restore -j` schedules it.
#[derive(Default)]
struct PostPlan {
    /// Keys and indexes of one table (by part name): built as soon as its data is in.
    per_table: HashMap<String, Vec<String>>,
    /// Keys and indexes of no loaded table, and sequence values: in parallel after the data.
    first: Vec<(u64, String)>,
    /// Foreign keys: in parallel once every key they reference exists.
    fks: Vec<(u64, String)>,
    /// Triggers, comments, grants, materialized view refreshes: last, in dump order.
    rest: String,
}

fn plan_post(snap: &Snapshot, post: &str) -> PostPlan {
    let parts: Vec<(String, String, u64)> = tables(snap)
        .map(|p| {
            (
                qualified(meta_str(p, "schema"), meta_str(p, "table")),
                p.name.clone(),
                p.size,
            )
        })
        .collect();
    let on_table = |text: &str| {
        parts.iter().find(|(q, _, _)| {
            [
                format!(" ON {q} "),
                format!(" ON ONLY {q} "),
                format!("ALTER TABLE ONLY {q}\n"),
                format!("ALTER TABLE {q}\n"),
            ]
            .iter()
            .any(|pat| text.contains(pat.as_str()))
        })
    };
    let cost = |text: &str| {
        parts
            .iter()
            .filter(|(q, _, _)| text.contains(q.as_str()))
            .map(|p| p.2)
            .max()
            .unwrap_or(0)
    };
    let mut plan = PostPlan::default();
    for e in dbvault_formats::pgscript::entries(post) {
        match e.header.as_ref().map(|h| h.kind.as_str()) {
            Some("INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT") => match on_table(&e.text) {
                Some((_, name, _)) => plan.per_table.entry(name.clone()).or_default().push(e.text),
                None => plan.first.push((cost(&e.text), e.text)),
            },
            Some("SEQUENCE SET") => plan.first.push((0, e.text)),
            Some("FK CONSTRAINT") => plan.fks.push((cost(&e.text), e.text)),
            Some(_) => plan.rest.push_str(&e.text),
            // The preamble and the closing block: each session brings its own.
            None => {}
        }
    }
    plan
}

/// Runs scripts on parallel psql sessions, longest first onto the least loaded session.
fn run_parallel(
    url: &PgUrl,
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
            h.join()
                .map_err(|_| anyhow!("a restore session panicked"))??;
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

/// Whole database: pre-data; then table data on parallel connections, each table's keys
/// and indexes built as soon as its rows are in (while other tables still load); then the
/// remaining keys, foreign keys, and the rest of post-data.
fn restore_database(
    repo: &Repository,
    snap: &Snapshot,
    a: &RestoreArgs,
    url: &PgUrl,
) -> Result<()> {
    let pre =
        section(snap, "pre-data").ok_or_else(|| anyhow!("the snapshot has no pre-data section"))?;
    let pre_text = part_bytes(repo, pre)?;
    // Every session starts with the dump's preamble (SET statements and `\restrict`); the
    // sessions we add close the restriction themselves.
    let ts = table_script(&String::from_utf8_lossy(&pre_text), "", "", "", None);
    let (preamble, epilogue) = (ts.preamble.clone(), ts.epilogue());
    let post_text = match section(snap, "post-data") {
        Some(p) => String::from_utf8_lossy(&part_bytes(repo, p)?).into_owned(),
        None => String::new(),
    };
    let mut plan = plan_post(snap, &post_text);
    if !a.data_only {
        url.psql("restoring the schema (pre-data)", false, |w| {
            Ok(w.write_all(&pre_text)?)
        })?;
    }
    if !a.schema_only {
        // Largest tables first (popped from the end): the parallel load ends together.
        let mut order: Vec<&Part> = tables(snap).collect();
        order.sort_by_key(|p| p.size);
        let queue = std::sync::Mutex::new(order);
        let source = url.source()?;
        let session = preamble_sql(&preamble);
        let per_table = if a.data_only {
            HashMap::new()
        } else {
            std::mem::take(&mut plan.per_table)
        };
        // One more connection than cores: the server, the index builds and our
        // decompression overlap (measured: 3 connections beat 2 on two cores).
        let jobs = jobs() + 1;
        std::thread::scope(|s| -> Result<()> {
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let loader = Loader::connect(&source)?;
                        loader.execute("setting up the session", &session)?;
                        loop {
                            let Some(part) = queue.lock().map_err(|_| anyhow!("lock"))?.pop()
                            else {
                                return Ok(());
                            };
                            load_table(repo, part, a, url, &loader, &preamble, &epilogue)?;
                            for sql in per_table.get(&part.name).into_iter().flatten() {
                                let first = sql
                                    .lines()
                                    .find(|l| !l.starts_with("--") && !l.trim().is_empty())
                                    .unwrap_or("");
                                loader.execute(
                                    &format!("restoring {}: {}", part.name, first.trim()),
                                    sql,
                                )?;
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow!("a restore worker panicked"))??;
            }
            Ok(())
        })?;
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
    eprintln!(
        "restored {} tables into {}",
        tables(snap).count(),
        url.public
    );
    Ok(())
}

/// Loads one table's rows: over the COPY protocol, or through psql for a dump made with
/// `--inserts`.
fn load_table(
    repo: &Repository,
    part: &Part,
    a: &RestoreArgs,
    url: &PgUrl,
    loader: &Loader,
    preamble: &str,
    epilogue: &str,
) -> Result<()> {
    let copy = meta_str(part, "copy");
    if !copy.is_empty() {
        let freeze =
            (!a.data_only).then(|| qualified(meta_str(part, "schema"), meta_str(part, "table")));
        loader.load(&part.name, copy, freeze.as_deref(), |w| {
            write_part(repo, part, w).map_err(|e| format!("{e:#}"))
        })?;
        return Ok(());
    }
    url.psql(&format!("loading table {}", part.name), true, |w| {
        w.write_all(preamble.as_bytes())?;
        w.write_all(b"\n")?;
        let mut bw = BufWriter::with_capacity(1 << 20, w);
        write_part(repo, part, &mut bw)?;
        bw.write_all(epilogue.as_bytes())?;
        bw.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_table_arg;

    #[test]
    fn table_arguments() {
        assert_eq!(parse_table_arg("orders"), (None, "orders".into(), false));
        assert_eq!(
            parse_table_arg("Public.Orders"),
            (Some("public".into()), "orders".into(), false)
        );
        assert_eq!(
            parse_table_arg("\"Mixed.Case\""),
            (None, "Mixed.Case".into(), true)
        );
        assert_eq!(
            parse_table_arg("s.\"a\"\"b\""),
            (Some("s".into()), "a\"b".into(), true)
        );
    }
}
