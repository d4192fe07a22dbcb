//! Restoring pg_dump snapshots: the original stream, a whole database, or one table.

use std::io::{BufWriter, Write};

use anyhow::{bail, Result};
use dbvault_core::restore::restore_part;
use dbvault_core::{Part, Repository, Snapshot};

use dbvault_formats::pglobs;
use dbvault_formats::pgscript::{table_script, TableScript};

use crate::args::RestoreArgs;
use crate::pg::PgUrl;

/// A restore target for PostgreSQL snapshots.
pub enum PgTarget {
    /// The SQL on stdout.
    Stdout,
    /// A database.
    Database(PgUrl),
}

pub(super) fn part_bytes(repo: &Repository, part: &Part) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(part.size as usize);
    write_part(repo, part, &mut v)?;
    Ok(v)
}

pub(super) fn write_part(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let report = restore_part(repo, part, out)?;
    for w in report.warnings {
        eprintln!("dbvault: warning: {w}");
    }
    Ok(())
}

pub(super) fn section<'a>(snap: &'a Snapshot, kind: &str) -> Option<&'a Part> {
    snap.parts.iter().find(|p| p.kind == kind)
}

pub(super) fn tables(snap: &Snapshot) -> impl Iterator<Item = &Part> {
    snap.parts.iter().filter(|p| p.kind == "table-data")
}

pub(super) fn meta_str<'a>(p: &'a Part, key: &str) -> &'a str {
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
                    let schema = p.kind != "table-data" && p.kind != pglobs::PART;
                    if (a.schema_only && !schema) || (a.data_only && schema) {
                        continue;
                    }
                    write_part(repo, p, &mut out)?;
                }
                Ok(())
            }
            PgTarget::Database(url) => super::restore_pg_db::restore_database(
                repo, snap, a, &url, None,
            )
            .map_err(|e| match damaged_elsewhere(repo, snap, &[]) {
                Some(list) => e.context(format!(
                    "the snapshot is damaged ({list}); intact tables can still be restored one by one with --table"
                )),
                None => e,
            }),
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
    let restored: Vec<&str> = chosen_names(snap, a);
    if let Some(list) = damaged_elsewhere(repo, snap, &restored) {
        eprintln!(
            "dbvault: warning: snapshot is damaged elsewhere ({list}); what was restored is intact: it was read whole and checked against its recorded hash (run `dbvault check`)"
        );
    }
    Ok(())
}

fn chosen_names<'a>(snap: &'a Snapshot, a: &RestoreArgs) -> Vec<&'a str> {
    let mut v: Vec<&str> = a
        .tables
        .iter()
        .filter_map(|t| find_table(snap, t).ok())
        .map(|p| p.name.as_str())
        .collect();
    v.extend(["pre-data", "post-data"]);
    v
}

/// The parts other than `skip` that lack data (a missing pack), as one line; `None` when
/// all is there or it cannot be told.
fn damaged_elsewhere(repo: &Repository, snap: &Snapshot, skip: &[&str]) -> Option<String> {
    let found = dbvault_core::check::parts_missing_data(repo, snap).ok()?;
    let mut names: Vec<String> = found
        .into_iter()
        .filter(|(part, _, _)| !skip.contains(&part.as_str()))
        .map(|(part, pack, _)| match pack {
            Some(p) => format!("{part} needs missing pack {}", p.short()),
            None => format!("{part} needs blobs no index names"),
        })
        .collect();
    names.dedup();
    (!names.is_empty()).then(|| names.join(", "))
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
