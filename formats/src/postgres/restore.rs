//! Restoring PostgreSQL snapshots: the original script, a whole database, or tables.
//!
//! A whole database is scheduled like `pg_restore -j` (see `restore_db`); a table comes
//! back with its sequences, defaults, indexes, constraints and triggers in one
//! transaction, beside the live one under `rename_table` if asked.

use std::io::{BufWriter, Write};

use dbvault_core::{Part, Repository, Snapshot};

use super::ident::qualified;
use super::meta::{self, TablePart, POST_DATA, PRE_DATA};
pub use super::options::{RestoreOptions, Target};
use super::script::{table_script, TableScript};
use crate::error::{FormatError, Result};
pub use crate::notice::{Notice, Notify};
pub use crate::read::{part_bytes, stream_part, write_part};

fn part_text(repo: &Repository, part: Option<&Part>, notify: Notify<'_>) -> Result<String> {
    Ok(match part {
        Some(p) => String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned(),
        None => String::new(),
    })
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

/// `--rename-table NEW` as a bare name. Unquoted, it is taken as written (`Kunden alt`), less
/// a leading `SCHEMA.` of the table's own schema (where it is restored); with double quotes,
/// as SQL reads it (`public."a.b"`).
fn new_name(arg: Option<&str>, schema: &str) -> Result<Option<String>> {
    let Some(arg) = arg else { return Ok(None) };
    let (given_schema, name) = if arg.contains('"') {
        let (s, n, _) = parse_table_arg(arg);
        (s, n)
    } else {
        match arg.split_once('.') {
            Some((s, n)) => (Some(s.to_string()), n.to_string()),
            None => (None, arg.to_string()),
        }
    };
    match given_schema {
        Some(s) if s != schema => Err(FormatError::Invalid(format!(
            "--rename-table {arg}: the table is restored in its own schema {schema}; give the \
             new name without a schema (or as {schema}.NAME; quote a name that holds a dot)"
        ))),
        _ if name.is_empty() => Err(FormatError::Invalid(format!(
            "--rename-table {arg:?}: empty name"
        ))),
        _ => Ok(Some(name)),
    }
}

/// What a whole-database restore stopped by damage leaves, and the way on.
const PARTLY_RESTORED: &str = "the target holds what was loaded before the damage (drop it, or restore again with --clean); intact tables can still be restored one by one with --table (`dbvault check --read-data` names the damaged ones)";
/// The same, when the schema itself (pre-data) is what is damaged: no table restores.
const SCHEMA_DAMAGED: &str = "the target holds what was loaded before the damage (drop it, or restore again with --clean); the schema (pre-data) is damaged, so no table of this snapshot restores: restore an older snapshot (`dbvault snapshots`), and see `dbvault check --read-data` and `dbvault repair snapshots`";

/// Whether `e` is the server saying the target database does not exist (SQLSTATE 3D000,
/// or psql's connection message, which carries no SQLSTATE).
fn missing_database(e: &FormatError) -> bool {
    e.sqlstate() == Some("3D000")
        || matches!(e, FormatError::Postgres { message, .. }
            if message.contains("FATAL:") && message.contains("database \"") && message.contains("does not exist"))
}

/// The way out of a whole restore stopped by damage, by what the damage names.
fn damage_hint(detail: &str) -> &'static str {
    if detail.contains(meta::PRE_DATA) {
        SCHEMA_DAMAGED
    } else {
        PARTLY_RESTORED
    }
}

/// Finds the data part of a table named by the user.
///
/// # Errors
/// [`FormatError::NoSuchTable`] (listing the tables), [`FormatError::AmbiguousTable`].
pub fn find_table<'a>(snap: &'a Snapshot, arg: &str) -> Result<&'a Part> {
    let found = find_table_as(snap, arg, arg);
    // `ls` shows a newline in a name as `\n`: that spelling names it too.
    if found.is_err() && arg.contains('\\') {
        let plain = crate::names::undisplay(arg);
        if plain != arg {
            if let Ok(p) = find_table_as(snap, &plain, arg) {
                return Ok(p);
            }
        }
    }
    found
}

fn find_table_as<'a>(snap: &'a Snapshot, arg: &str, shown: &str) -> Result<&'a Part> {
    let arg_shown = shown;
    let (schema, table, exact) = parse_table_arg(arg);
    let metas: Vec<(&Part, TablePart)> = meta::tables(snap)
        .map(|p| Ok((p, TablePart::of(p)?)))
        .collect::<Result<_>>()?;
    let matching = |ci: bool| -> Vec<&Part> {
        let eq = |a: &str, b: &str| {
            if ci {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        metas
            .iter()
            .filter(|(_, t)| {
                eq(&t.table, &table) && schema.as_deref().is_none_or(|s| eq(&t.schema, s))
            })
            .map(|(p, _)| *p)
            .collect()
    };
    let mut found = matching(false);
    if found.is_empty() && !exact {
        found = matching(true);
    }
    let names = |ps: &mut dyn Iterator<Item = &Part>| {
        ps.map(|p| crate::names::display(&p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match found.len() {
        1 => Ok(found[0]),
        0 => Err(FormatError::NoSuchTable {
            table: arg_shown.to_string(),
            available: names(&mut meta::tables(snap)),
        }),
        _ => Err(FormatError::AmbiguousTable {
            table: arg_shown.to_string(),
            candidates: names(&mut found.into_iter()),
        }),
    }
}

/// Writes one table as a psql script: definition, data, then indexes and constraints.
fn write_table_script(
    repo: &Repository,
    ts: &TableScript,
    part: &Part,
    a: &RestoreOptions,
    out: &mut (dyn Write + Send),
    drop_first: Option<&str>,
    notify: Notify<'_>,
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
        stream_part(repo, part, &mut rw, notify)?;
        rw.finish()
            .map_err(|e| FormatError::Core(dbvault_core::Error::Output(e)))?;
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

fn out_err(e: std::io::Error) -> FormatError {
    FormatError::Core(dbvault_core::Error::Output(e))
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

/// The snapshot as pg_dump wrote it (the custom-format archive, rebuilt), or its plain
/// script, or a section of it.
fn write_script(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
) -> Result<()> {
    let whole = !opts.schema_only && !opts.data_only && !opts.plain;
    if whole && super::archive::toc_part(snap).is_some() {
        return super::archive::rebuild::write_archive(repo, snap, out, notify);
    }
    for p in &snap.parts {
        if super::archive::is_archive_only(p) || p.kind == crate::compressed::KIND {
            continue;
        }
        let data = meta::is_data(p);
        if (opts.schema_only && data) || (opts.data_only && !data) {
            continue;
        }
        stream_part(repo, p, out, notify)?;
    }
    Ok(())
}

/// Restores a PostgreSQL snapshot: all of it, or `opts.tables`, as a script or into a
/// database (which must exist; a whole restore expects it empty).
///
/// # Errors
/// Damage and storage errors (keeping their kinds), a table not in the snapshot or
/// already in the target, and the server's or psql's errors naming the statement.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    target: Target<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    if opts.rename_table.is_some() && opts.tables.len() != 1 {
        return Err(FormatError::Invalid(
            "--rename-table needs exactly one --table".into(),
        ));
    }
    if opts.tables.is_empty() {
        return match target {
            Target::Script(out) => {
                let mut out = BufWriter::with_capacity(1 << 20, out);
                let whole = !opts.schema_only && !opts.data_only && !opts.plain;
                // A dump that came compressed goes back compressed, byte for byte.
                match crate::compressed::recipe_part(snap) {
                    Some(recipe) if whole => {
                        crate::compressed::write_compressed(repo, recipe, &mut out, notify, |w| {
                            write_script(repo, snap, opts, w, notify)
                        })?
                    }
                    _ => write_script(repo, snap, opts, &mut out, notify)?,
                }
                out.flush().map_err(out_err)
            }
            Target::Database(db) => if opts.create {
                super::clean::create_database(db, notify)
            } else {
                Ok(())
            }
            .and_then(|()| super::restore_db::restore_database(repo, snap, opts, db, None, notify))
            .map_err(|e| match damaged_elsewhere(repo, snap, &[]) {
                Some(list) => FormatError::Damaged {
                    hint: damage_hint(&list),
                    detail: list,
                    cause: Box::new(e),
                },
                // Damage met while reading (bytes that no longer authenticate): the same
                // way out, named as such.
                None if e.failure_kind() == dbvault_core::error::FailureKind::Damage => {
                    FormatError::Damaged {
                        detail: e.to_string(),
                        hint: damage_hint(&e.to_string()),
                        cause: Box::new(e),
                    }
                }
                // The commonest first restore: into a database not made yet.
                None if !opts.create && missing_database(&e) => {
                    FormatError::Invalid(format!("{e}: create it first, or restore with --create"))
                }
                None => e,
            }),
        };
    }
    let mut chosen = Vec::new();
    for t in &opts.tables {
        chosen.push(find_table(snap, t)?);
    }
    let pre_text = part_text(repo, meta::section(snap, PRE_DATA), notify)?;
    let post_text = part_text(repo, meta::section(snap, POST_DATA), notify)?;
    let mut target = target;
    for part in &chosen {
        let t = TablePart::of(part)?;
        let rename = new_name(opts.rename_table.as_deref(), &t.schema)?;
        let ts = table_script(
            &pre_text,
            &post_text,
            &t.schema,
            &t.table,
            rename.as_deref(),
        );
        let dest = qualified(&t.schema, rename.as_deref().unwrap_or(&t.table));
        match &mut target {
            Target::Script(out) => {
                let mut out = BufWriter::with_capacity(1 << 20, &mut **out);
                write_table_script(repo, &ts, part, opts, &mut out, None, notify)?;
            }
            Target::Database(db) => {
                let exists = db.query(&format!(
                    "SELECT to_regclass('{}') IS NOT NULL",
                    dest.replace('\'', "''")
                ))? == "t";
                if exists && !opts.clean && !opts.data_only {
                    return Err(FormatError::TableExists {
                        table: crate::names::display(&dest),
                        target: db.public().to_string(),
                    });
                }
                let drop = (exists && opts.clean && !opts.data_only).then_some(dest.as_str());
                db.psql(&format!("restoring table {dest}"), true, |w| {
                    let mut bw = BufWriter::with_capacity(1 << 20, w);
                    write_table_script(repo, &ts, part, opts, &mut bw, drop, notify)
                })?;
                notify(Notice::Done(format!(
                    "restored {} ({}) as {}",
                    crate::names::display(&part.name),
                    part.rows.map_or_else(
                        || "rows not counted: INSERT statements".to_string(),
                        |n| format!("{n} rows")
                    ),
                    crate::names::display(&dest)
                )));
            }
        }
    }
    let mut restored: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
    restored.extend([PRE_DATA, POST_DATA]);
    if let Some(list) = damaged_elsewhere(repo, snap, &restored) {
        notify(Notice::DamagedElsewhere(format!(
            "snapshot is damaged elsewhere ({list}); what was restored is intact: it was read whole and checked against its recorded hash (run `dbvault check`)"
        )));
    }
    Ok(())
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
    fn escaped_controls_read_back() {
        assert_eq!(
            crate::names::undisplay("public.\"we\"\"ird\\nname\\u{7}\""),
            "public.\"we\"\"ird\nname\u{7}\""
        );
        assert_eq!(crate::names::undisplay("a\\b"), "a\\b");
    }

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
