//! A PostgreSQL snapshot's archive entries, as `pg_restore --list` shows them, and a
//! restore of a chosen set (`pg_restore -L`).
//!
//! The entries are the table-of-contents blocks of pg_dump's script (`-- Name: …; Type: …;
//! Schema: …; Owner: …`), read from the snapshot's pre-data and post-data parts (small),
//! with each table's data as the entry of its own part (size and rows from the manifest,
//! nothing read). A plain dump carries no dump ids, so an entry's id is its position in the
//! dump, the same for every listing of the snapshot; a snapshot of a custom-format archive
//! keeps the archive's dump ids, so `pg_restore -l` of the archive is a list file too.
//!
//! The list file is `pg_restore -l`'s shape: `ID; TYPE SCHEMA NAME OWNER` per line, `;`
//! starting a comment; only the leading id of a line is read, so the listing itself (with
//! sizes and rows after a `;`) is a list file, and commenting lines out removes entries.
//! The chosen entries are restored in the dump's order, which is pg_dump's dependency
//! order, with the script's preamble (settings) and closing; a table's data brings its
//! `CREATE TABLE` along when the target database lacks the table (or for a script).

use std::collections::BTreeSet;
use std::io::Write;

use dbvault_core::{Repository, Snapshot};
use serde::Serialize;

use super::meta::{self, POST_DATA, PRE_DATA};
use super::script::entries as script_entries;
use super::{PgSource, Target};
use crate::error::{FormatError, Result};
use crate::notice::{Notice, Notify};
use crate::read::{part_bytes, stream_part};

/// One archive entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Position in the dump, from 1.
    pub id: u32,
    /// `TABLE`, `TABLE DATA`, `INDEX`, `SEQUENCE SET`, `FUNCTION`, …
    pub kind: String,
    /// Schema (`-` when none).
    pub schema: String,
    /// Name as pg_dump writes it (an index: its name; a constraint: `table name`).
    pub name: String,
    /// Owner (empty for a dump made with `--no-owner`).
    pub owner: String,
    /// `pre-data`, `data` or `post-data`.
    pub section: String,
    /// Bytes of its text (a table's data: its part's size).
    pub size: u64,
    /// Rows, for a table's data.
    pub rows: Option<u64>,
    #[serde(skip)]
    source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// The `n`th block of the section part's text.
    Block(&'static str, usize),
    /// A part of its own (a table's data, the large objects).
    Part(usize),
}

/// The entries of a PostgreSQL snapshot of one database.
///
/// # Errors
/// A whole-server snapshot (choose a database); damage and storage errors reading the
/// sections.
pub fn list(repo: &Repository, snap: &Snapshot, notify: Notify<'_>) -> Result<Vec<ArchiveEntry>> {
    Ok(read_entries(repo, snap, notify)?.0)
}

/// The sections' blocks, as [`script_entries`] cuts them: pre-data's, post-data's.
type Sections = (Vec<String>, Vec<String>);

/// The entries, and the section blocks they were read from (a restore writes those).
fn read_entries(
    repo: &Repository,
    snap: &Snapshot,
    notify: Notify<'_>,
) -> Result<(Vec<ArchiveEntry>, Sections)> {
    if snap.source.kind == super::server::KIND {
        return Err(FormatError::Invalid(
            "this snapshot holds a whole server: its entries are listed per database (restore one with --database)".into(),
        ));
    }
    let mut out = Vec::new();
    let pre = section_entries(repo, snap, PRE_DATA, notify, &mut out)?;
    for (i, p) in snap.parts.iter().enumerate() {
        let (kind, schema, name) = if p.kind == meta::TABLE_DATA {
            let t = meta::TablePart::of(p)?;
            ("TABLE DATA", t.schema, t.table)
        } else if p.kind == meta::LARGE_OBJECTS {
            ("BLOBS", "-".into(), "BLOBS".into())
        } else {
            continue;
        };
        out.push(ArchiveEntry {
            id: 0,
            kind: kind.into(),
            schema,
            name,
            owner: String::new(),
            section: "data".into(),
            size: p.size,
            rows: p.rows,
            source: Source::Part(i),
        });
    }
    let post = section_entries(repo, snap, POST_DATA, notify, &mut out)?;
    // A table's data is its table's owner's (pg_dump's own listing says so too).
    let owners: Vec<Option<String>> = out
        .iter()
        .map(|e| {
            (e.kind == "TABLE DATA").then(|| {
                out.iter()
                    .find(|t| t.kind == "TABLE" && t.schema == e.schema && t.name == e.name)
                    .map(|t| t.owner.clone())
            })?
        })
        .collect();
    for (n, (e, owner)) in out.iter_mut().zip(owners).enumerate() {
        e.id = n as u32 + 1;
        if let Some(o) = owner {
            e.owner = o;
        }
    }
    if let Some(toc) = archive_toc(repo, snap, notify)? {
        take_dump_ids(&mut out, &toc);
    }
    Ok((out, (pre, post)))
}

/// Whether the snapshot came from a custom-format archive, whose entries keep pg_dump's
/// dump ids (a `pg_restore -l` of the archive is then a list file too).
#[must_use]
pub fn has_dump_ids(snap: &Snapshot) -> bool {
    super::archive::toc_part(snap).is_some()
}

/// The TOC of the archive the snapshot came from, if it came from one.
fn archive_toc(
    repo: &Repository,
    snap: &Snapshot,
    notify: Notify<'_>,
) -> Result<Option<Vec<super::archive::format::TocEntry>>> {
    let Some(part) = super::archive::toc_part(snap) else {
        return Ok(None);
    };
    let bytes = part_bytes(repo, part, notify)?;
    let mut r = super::archive::format::ArchiveReader::new(std::io::Cursor::new(bytes));
    let h = r.header()?;
    Ok(Some(r.toc(&h)?))
}

/// Gives each entry its archive's dump id: the TOC entry of the same kind and schema
/// whose tag is its name (pg_dump's headers put a constraint's or trigger's table before
/// its tag). An entry without one gets an id above every dump id.
fn take_dump_ids(out: &mut [ArchiveEntry], toc: &[super::archive::format::TocEntry]) {
    let mut used = vec![false; toc.len()];
    let mut next = u32::try_from(toc.iter().map(|t| t.dump_id).max().unwrap_or(0)).unwrap_or(0);
    for e in out.iter_mut() {
        let schema = if e.schema == "-" {
            ""
        } else {
            e.schema.as_str()
        };
        let found = toc.iter().enumerate().position(|(i, t)| {
            !used[i]
                && t.desc == e.kind
                && t.namespace == schema
                && (t.tag == e.name || e.name.ends_with(&format!(" {}", t.tag)))
        });
        e.id = match found {
            Some(i) => {
                used[i] = true;
                u32::try_from(toc[i].dump_id).unwrap_or(0)
            }
            None => {
                next += 1;
                next
            }
        };
    }
}

/// The entries of the section part of `kind`, read (a section is small); returns the
/// section's blocks.
fn section_entries(
    repo: &Repository,
    snap: &Snapshot,
    kind: &'static str,
    notify: Notify<'_>,
    out: &mut Vec<ArchiveEntry>,
) -> Result<Vec<String>> {
    let Some(p) = meta::section(snap, kind) else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned();
    let mut blocks = Vec::new();
    for (i, e) in script_entries(&text).into_iter().enumerate() {
        if let Some(h) = e.header {
            out.push(ArchiveEntry {
                id: 0,
                kind: h.kind,
                schema: h.schema,
                name: h.name,
                owner: h.owner,
                section: kind.into(),
                size: e.text.len() as u64,
                rows: None,
                source: Source::Block(kind, i),
            });
        }
        blocks.push(e.text);
    }
    Ok(blocks)
}

/// Writes `entries` as a list file (`pg_restore -l`'s shape, sizes and rows as comments).
///
/// # Errors
/// The output's write errors.
pub fn write_list(
    entries: &[ArchiveEntry],
    header: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, ";\n; {header}\n;\n; Selected TOC Entries:\n;")?;
    for e in entries {
        let what = format!(
            "{}; {} {} {} {}",
            e.id,
            e.kind,
            e.schema,
            one_line(&e.name),
            if e.owner.is_empty() { "-" } else { &e.owner }
        );
        let rows = e.rows.map(|r| format!(", {r} rows")).unwrap_or_default();
        writeln!(out, "{what:<72} ; {} bytes{rows}", e.size)?;
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// The ids a list file chooses: each line's leading number; `;` starts a comment.
///
/// # Errors
/// A line that does not start with an id, naming its number.
pub fn parse_list(text: &str) -> Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let id = line
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .and_then(|w| w.parse::<u32>().ok())
            .ok_or_else(|| {
                FormatError::Invalid(format!(
                    "list file line {}: {line:?} does not start with an entry id (as `dbvault ls --entries` writes them; `;` comments a line out)",
                    n + 1
                ))
            })?;
        ids.insert(id);
    }
    if ids.is_empty() {
        return Err(FormatError::Invalid(
            "the list file chooses no entry".into(),
        ));
    }
    Ok(ids)
}

/// Restores the entries `chosen` names (and a chosen table data's `CREATE TABLE` when the
/// target lacks the table) into `target`, in the dump's order.
///
/// # Errors
/// An id the snapshot does not have; damage and storage errors; psql's errors naming
/// the statement (into a database, in one transaction: all or nothing).
pub fn restore_entries(
    repo: &Repository,
    snap: &Snapshot,
    chosen: &BTreeSet<u32>,
    target: Target<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    let (all, sections) = read_entries(repo, snap, notify)?;
    if let Some(bad) = chosen.iter().find(|id| !all.iter().any(|e| e.id == **id)) {
        return Err(FormatError::Invalid(format!(
            "the list file names entry {bad}, which the snapshot does not have (`dbvault ls SNAPSHOT --entries` lists its {} entries)",
            all.len()
        )));
    }
    let mut picked: BTreeSet<u32> = chosen.clone();
    for e in all
        .iter()
        .filter(|e| chosen.contains(&e.id) && e.kind == "TABLE DATA")
    {
        let table = all
            .iter()
            .find(|t| t.kind == "TABLE" && t.schema == e.schema && t.name == e.name);
        if let Some(t) = table {
            let missing = match &target {
                Target::Database(db) => !table_exists(db, &e.schema, &e.name)?,
                Target::Script(_) => true,
            };
            if missing && picked.insert(t.id) {
                notify(Notice::Done(format!(
                    "entry {} (TABLE {}.{}) added: entry {} is its data",
                    t.id, e.schema, e.name, e.id
                )));
            }
        }
    }
    let write = |out: &mut (dyn Write + Send)| -> Result<()> {
        // The preamble (settings, `\restrict`) and the closing of the script.
        if let Some(pre) = sections.0.first() {
            out.write_all(pre.as_bytes())?;
        }
        for e in all.iter().filter(|e| picked.contains(&e.id)) {
            match e.source {
                Source::Block(kind, i) => {
                    let blocks = if kind == PRE_DATA {
                        &sections.0
                    } else {
                        &sections.1
                    };
                    out.write_all(blocks.get(i).map_or(&b""[..], |b| b.as_bytes()))?;
                }
                Source::Part(i) => stream_part(repo, &snap.parts[i], out, notify)?,
            }
        }
        if let Some(end) = sections
            .1
            .last()
            .filter(|b| b.contains("-- PostgreSQL database dump complete"))
        {
            out.write_all(end.as_bytes())?;
        }
        Ok(())
    };
    match target {
        Target::Script(out) => {
            write(out)?;
            Ok(out.flush()?)
        }
        Target::Database(db) => {
            db.psql("restoring the chosen entries", true, write)?;
            notify(Notice::Done(format!(
                "restored {} entries into {}",
                picked.len(),
                db.describe()
            )));
            Ok(())
        }
    }
}

fn table_exists(db: &PgSource, schema: &str, table: &str) -> Result<bool> {
    let q = format!(
        "SELECT to_regclass('{}') IS NOT NULL",
        super::ident::qualified(schema, table).replace('\'', "''")
    );
    Ok(db.query(&q)?.trim() == "t")
}
