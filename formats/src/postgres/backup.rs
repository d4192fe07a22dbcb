//! Direct PostgreSQL backups: one consistent snapshot, tables copied in parallel, and
//! everything else from pg_dump in that snapshot.
//!
//! A first connection opens a REPEATABLE READ transaction and exports its snapshot.
//! Pre-data comes from `pg_dump --section=pre-data --snapshot=…` (with the large objects'
//! owners, grants and comments); every table's rows (extension configuration tables'
//! with their filter) come from `COPY … TO STDOUT` on worker connections that adopt the
//! same snapshot and pg_dump's session settings, so all tables are read as of one instant
//! and as pg_dump would read them; the rest of the data section and post-data come from
//! one more pg_dump run (see `pgdata`). The parts have the same shape as a piped pg_dump
//! (pre-data, `schema.table` parts in pg_dump's text form, post-data with the sequence
//! values), plus the large objects in a part of their own, so restores treat both alike.

use std::io::Read;
use std::process::Stdio;
use std::sync::Mutex;

use dbvault_core::backup::{Backup, Chunking, PartInput};
use dbvault_core::SourceInfo;
use futures_util::StreamExt;
use tokio_postgres::error::SqlState;

use crate::error::{FormatError, Result};
use crate::postgres::conn::{pg_err, rows, runtime, PgSource};
use crate::postgres::data::DataRun;
use crate::postgres::dump::{SCHEMA_CHUNKS, TABLE_CHUNKS};
use crate::postgres::ident::qualified;
use crate::postgres::lobs::TextFingerprint;
use crate::postgres::meta::{TablePart, FORMAT, LARGE_OBJECTS, POST_DATA, PRE_DATA, TABLE_DATA};
use crate::postgres::script::entries;
use crate::postgres::select::{self, Candidate, Selection};
use crate::postgres::session::{script_encoding, session_sql};
use crate::postgres::setvals::{matview_refreshes, sequence_sets};

/// How to take a direct backup.
#[derive(Clone, Debug)]
pub struct DirectOptions {
    /// Parallel COPY connections.
    pub jobs: usize,
    /// Store only the rows row-level security lets the role see (pg_dump's
    /// `--enable-row-security`), and say so in the snapshot. Without it a table whose rows
    /// the role would not all see stops the backup.
    pub enable_row_security: bool,
    /// pg_dump's `--table`, `--exclude-table`, … (the whole database by default).
    pub selection: Selection,
}

struct Table {
    schema: String,
    name: String,
    owner: String,
    columns: String,
    pages: u64,
    /// An extension configuration table's filter (`WHERE …`, possibly empty); `None` for
    /// an ordinary table.
    filter: Option<String>,
}

/// Tables whose data pg_dump dumps: ordinary tables and leaf partitions (unlogged ones
/// too) that no extension owns, and the configuration tables extensions marked with
/// `pg_extension_config_dump`, with their filter.
const TABLES_SQL: &str = "SELECT * FROM (\
  SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), \
  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a \
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS cols, \
  c.relpages, NULL::text AS filter \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
  UNION ALL \
  SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), \
  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a \
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
  c.relpages, coalesce(e.extcondition[u.i], '') \
  FROM pg_extension e CROSS JOIN LATERAL unnest(e.extconfig) WITH ORDINALITY AS u(reloid, i) \
  JOIN pg_class c ON c.oid = u.reloid JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind = 'r') t \
  ORDER BY nspname COLLATE \"C\", relname COLLATE \"C\"";

/// Rows and hash of one table's COPY text, filled while it streams.
struct CopyStats {
    rows: u64,
    hasher: dbvault_core::hash::AlignedHasher,
}

/// Reads a COPY stream through a runtime, in pg_dump's text form (header, rows, `\.`).
struct CopyReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    head: std::io::Cursor<Vec<u8>>,
    /// The current CopyData message, as the client received it: never copied (a row of
    /// 200 MiB of text would be twice in memory).
    data: bytes::Bytes,
    pos: usize,
    tail: Option<std::io::Cursor<Vec<u8>>>,
    stats: &'a std::cell::RefCell<CopyStats>,
    table: String,
}

impl Read for CopyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(out)?;
        if n > 0 {
            return Ok(n);
        }
        loop {
            if self.pos < self.data.len() {
                let k = (self.data.len() - self.pos).min(out.len());
                out[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
                self.pos += k;
                return Ok(k);
            }
            if let Some(t) = self.tail.as_mut() {
                return t.read(out);
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(bytes)) => {
                    let mut st = self.stats.borrow_mut();
                    st.rows += memchr::memchr_iter(b'\n', &bytes).count() as u64;
                    st.hasher.update(&bytes);
                    drop(st);
                    self.data = bytes;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "COPY of {} failed: {e}",
                        self.table
                    )))
                }
                None => self.tail = Some(std::io::Cursor::new(b"\\.\n\n\n".to_vec())),
            }
        }
    }
}

fn run_pg_dump_pre(
    src: &PgSource,
    snapshot: &str,
    row_security: bool,
    sel: &Selection,
) -> Result<String> {
    let mut c = src.tool("pg_dump")?;
    c.args(["--section=pre-data", "--snapshot", snapshot]);
    c.args(sel.pg_dump_args());
    if row_security {
        c.arg("--enable-row-security");
    }
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FormatError::io("pg_dump (apt-get install postgresql-client)", e))?;
    if !out.status.success() {
        return Err(FormatError::Postgres {
            context: "pg_dump --section=pre-data".into(),
            message: String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
                .to_string(),
            sqlstate: None,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops a script's closing block (`-- PostgreSQL database dump complete`, `\unrestrict`).
fn without_closing(text: &str) -> String {
    let mut es = entries(text);
    if es.len() > 1 && es.last().is_some_and(|e| e.header.is_none()) {
        es.pop();
    }
    es.into_iter().map(|e| e.text).collect()
}

/// A script's TOC entries, without its preamble and closing block.
fn entries_only(text: &str) -> String {
    entries(text)
        .into_iter()
        .filter(|e| e.header.is_some())
        .map(|e| e.text)
        .collect()
}

fn first(rt: &tokio::runtime::Runtime, c: &tokio_postgres::Client, sql: &str) -> Result<String> {
    Ok(rows(rt, c, sql)?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .unwrap_or_default())
}

/// Backs up a database into `b`. Returns the snapshot's source description.
///
/// # Errors
/// Connection, query, COPY or pg_dump failures, and [`FormatError::RowSecurity`] for a
/// table whose rows row-level security would filter (then the caller aborts the backup
/// and no snapshot is recorded).
pub fn backup(b: &Backup<'_>, src: &PgSource, opts: &DirectOptions) -> Result<SourceInfo> {
    let rt = runtime()?;
    let main = src.connect(&rt)?;
    rt.block_on(main.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        .map_err(|e| pg_err("BEGIN", e))?;
    let snapshot = first(&rt, &main, "SELECT pg_export_snapshot()")?;
    let version = first(&rt, &main, "SHOW server_version")?;
    let role = first(&rt, &main, "SELECT current_user")?;
    let tables: Vec<Table> = rows(&rt, &main, TABLES_SQL)?
        .into_iter()
        .map(|r| Table {
            schema: r[0].clone().unwrap_or_default(),
            name: r[1].clone().unwrap_or_default(),
            owner: r[2].clone().unwrap_or_default(),
            columns: r[3].clone().unwrap_or_default(),
            pages: r[4].as_deref().and_then(|p| p.parse().ok()).unwrap_or(0),
            filter: r[5].clone(),
        })
        .collect();
    let rls = opts.enable_row_security;
    let sel = &opts.selection;
    sel.validate()?;

    // Pre-data first, so the snapshot's parts read in restore order.
    let pre = without_closing(&run_pg_dump_pre(src, &snapshot, rls, sel)?);
    let created = |kind: &str| -> std::collections::HashSet<(String, String)> {
        entries(&pre)
            .into_iter()
            .filter_map(|e| e.header)
            .filter(|h| h.kind == kind)
            .map(|h| (h.schema, h.name))
            .collect()
    };
    let tables: Vec<Table> = {
        let candidates: Vec<Candidate<'_>> = tables
            .iter()
            .map(|t| Candidate {
                schema: &t.schema,
                name: &t.name,
                config: t.filter.is_some(),
            })
            .collect();
        let keep = select::copied(&rt, &main, sel, &candidates, &created("TABLE"))?;
        let mut all: Vec<Option<Table>> = tables.into_iter().map(Some).collect();
        keep.into_iter().filter_map(|i| all[i].take()).collect()
    };
    let restrict_key = entries(&pre).first().and_then(|e| {
        e.text
            .lines()
            .find_map(|l| l.strip_prefix("\\restrict ").map(|k| k.trim().to_string()))
    });
    let session = session_sql(&script_encoding(&pre), rls);
    b.add_part(
        PartInput {
            name: PRE_DATA.into(),
            kind: PRE_DATA.into(),
            chunking: Chunking::Lines(SCHEMA_CHUNKS),
            meta: {
                let mut m = sel.to_meta();
                m.insert(
                    super::dump::SCHEMA_BLAKE3.into(),
                    super::dump::schema_blake3(pre.as_bytes()).into(),
                );
                m
            },
            ..Default::default()
        },
        pre.as_bytes(),
    )?;
    let copied: Vec<(&str, &str)> = tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .collect();
    let mut data_run = DataRun::start(src, &snapshot, &copied, rls, sel)?;
    // Largest first (popped from the end): parallel copies end together.
    let order: Vec<usize> = {
        let mut idx: Vec<usize> = (0..tables.len()).collect();
        idx.sort_by_key(|&i| tables[i].pages);
        idx
    };
    let queue = Mutex::new(order);
    let head = std::thread::scope(|s| -> Result<String> {
        let head = s.spawn(|| data_run.read_head());
        let workers: Vec<_> = (0..opts.jobs.max(1))
            .map(|_| {
                s.spawn(|| {
                    let r = copy_worker(b, src, &snapshot, &session, &role, &tables, &queue);
                    if r.is_err() {
                        // The others stop after their current table.
                        if let Ok(mut q) = queue.lock() {
                            q.clear();
                        }
                    }
                    r
                })
            })
            .collect();
        let mut failed = None;
        for w in workers {
            let r = w
                .join()
                .map_err(|_| FormatError::io("copy worker", std::io::Error::other("panicked")))?;
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        head.join()
            .map_err(|_| FormatError::io("pg_dump", std::io::Error::other("panicked")))?
    })?;

    if data_run.at_large_objects() {
        let fp = std::cell::RefCell::new(TextFingerprint::default());
        let reader = Tee {
            r: data_run.large_objects(),
            w: &fp,
        };
        b.add_part_then(LARGE_OBJECTS, Chunking::Lines(TABLE_CHUNKS), reader, || {
            let lo = std::mem::take(&mut *fp.borrow_mut()).finish();
            PartInput {
                name: LARGE_OBJECTS.into(),
                kind: LARGE_OBJECTS.into(),
                rows: Some(lo.count),
                meta: lo.to_meta(),
                chunking: Chunking::Lines(TABLE_CHUNKS),
            }
        })
        .map_err(FormatError::Core)?;
    }
    let excluded_all = data_run.excluded_all;
    let tail = data_run.finish()?;

    // Post-data: pg_dump's data-section entries (sequence values), then its post-data
    // entries, then the closing block under the pre-data's restriction key.
    let mut post = String::new();
    // Only objects the (selected) pre-data created get their values or refreshes.
    let in_dump = |kind: &str| {
        let made = created(kind);
        move |schema: &str, name: &str| made.contains(&(schema.to_string(), name.to_string()))
    };
    if excluded_all && !sel.schema_only {
        post.push_str(&sequence_sets(&rt, &main, &in_dump("SEQUENCE"))?);
    }
    let from_pg_dump = format!("{}{}", entries_only(&head), entries_only(&tail));
    if sel.schema_only {
        // pg_dump files materialized-view refreshes under post-data, but its
        // --schema-only leaves them out as data.
        for e in entries(&from_pg_dump) {
            if e.header.is_some_and(|h| h.kind != "MATERIALIZED VIEW DATA") {
                post.push_str(&e.text);
            }
        }
    } else {
        post.push_str(&from_pg_dump);
    }
    if excluded_all && !sel.schema_only {
        post.push_str(&matview_refreshes(
            &rt,
            &main,
            &in_dump("MATERIALIZED VIEW"),
        )?);
    }
    post.push_str("--\n-- PostgreSQL database dump complete\n--\n\n");
    if let Some(k) = restrict_key {
        post.push_str(&format!("\\unrestrict {k}\n\n"));
    }
    b.add_part(
        PartInput {
            name: POST_DATA.into(),
            kind: POST_DATA.into(),
            chunking: Chunking::Lines(SCHEMA_CHUNKS),
            meta: [(
                super::dump::SCHEMA_BLAKE3.to_string(),
                super::dump::schema_blake3(post.as_bytes()).into(),
            )]
            .into(),
            ..Default::default()
        },
        post.as_bytes(),
    )?;
    rt.block_on(main.batch_execute("COMMIT"))
        .map_err(|e| pg_err("COMMIT", e))?;
    let mut notes = Vec::new();
    if !sel.is_whole() {
        notes.push(sel.note());
    }
    if rls {
        notes.push(format!(
            "backed up with --enable-row-security as role {role:?}: tables with row-level security hold only the rows that role could see"
        ));
    }
    Ok(SourceInfo {
        kind: "postgres".into(),
        identity: src.describe(),
        format: FORMAT.into(),
        server_version: Some(version),
        notes,
    })
}

/// Passes a reader's bytes through a writer too.
struct Tee<'a, R: Read> {
    r: R,
    w: &'a std::cell::RefCell<TextFingerprint>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        std::io::Write::write_all(&mut *self.w.borrow_mut(), &buf[..n])?;
        Ok(n)
    }
}

/// The statement that reads a table's rows: the whole table, or an extension
/// configuration table through its filter (as pg_dump does).
fn copy_out_sql(t: &Table, q: &str) -> String {
    match t.filter.as_deref() {
        None if t.columns.is_empty() => format!("COPY {q} TO STDOUT"),
        None => format!("COPY {q} ({}) TO STDOUT", t.columns),
        Some(filter) => {
            let cols = if t.columns.is_empty() {
                "*"
            } else {
                &t.columns
            };
            format!("COPY (SELECT {cols} FROM {q} {filter}) TO STDOUT")
        }
    }
}

/// A name for a comment line: newlines as spaces, as pg_dump writes its headers (the
/// exact name is in the COPY statement).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn copy_worker(
    b: &Backup<'_>,
    src: &PgSource,
    snapshot: &str,
    session: &str,
    role: &str,
    tables: &[Table],
    queue: &Mutex<Vec<usize>>,
) -> Result<()> {
    let rt = runtime()?;
    let c = src.connect(&rt)?;
    rt.block_on(c.batch_execute(session))
        .map_err(|e| pg_err("setting up the session as pg_dump does", e))?;
    let setup = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    );
    rt.block_on(c.batch_execute(&setup))
        .map_err(|e| pg_err("adopting the exported snapshot", e))?;
    loop {
        let next = queue
            .lock()
            .map_err(|_| FormatError::io("queue", std::io::Error::other("poisoned")))?
            .pop();
        let Some(i) = next else { break };
        let t = &tables[i];
        let q = qualified(&t.schema, &t.name);
        let cols = if t.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.columns)
        };
        let copy_line = format!("COPY {q}{cols} FROM stdin;");
        let head = format!(
            "--\n-- Data for Name: {}; Type: TABLE DATA; Schema: {}; Owner: {}\n--\n\n{copy_line}\n",
            one_line(&t.name),
            one_line(&t.schema),
            one_line(&t.owner)
        );
        let sql = copy_out_sql(t, &q);
        let stream = rt.block_on(c.copy_out(&sql)).map_err(|e| {
            let rls = e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
                && e.as_db_error()
                    .is_some_and(|d| d.message().contains("row-level security"));
            if rls {
                FormatError::RowSecurity {
                    table: q.clone(),
                    role: role.to_string(),
                }
            } else {
                pg_err(&sql, e)
            }
        })?;
        let stats = std::cell::RefCell::new(CopyStats {
            rows: 0,
            hasher: dbvault_core::hash::AlignedHasher::default(),
        });
        let reader = CopyReader {
            rt: &rt,
            stream: Box::pin(stream),
            head: std::io::Cursor::new(head.into_bytes()),
            data: bytes::Bytes::new(),
            pos: 0,
            tail: None,
            stats: &stats,
            table: q.clone(),
        };
        b.add_part_then(
            &format!("{}.{}", t.schema, t.name),
            Chunking::Lines(TABLE_CHUNKS),
            reader,
            || {
                let st = stats.borrow();
                let (rows, hash) = (st.rows, st.hasher.finalize().to_hex().to_string());
                let meta = TablePart {
                    schema: t.schema.clone(),
                    table: t.name.clone(),
                    copy: Some(copy_line.clone()),
                    copy_blake3: Some(hash),
                }
                .to_meta();
                PartInput {
                    name: format!("{}.{}", t.schema, t.name),
                    kind: TABLE_DATA.into(),
                    rows: Some(rows),
                    meta,
                    chunking: Chunking::Lines(TABLE_CHUNKS),
                }
            },
        )
        .map_err(FormatError::Core)?;
    }
    rt.block_on(c.batch_execute("COMMIT"))
        .map_err(|e| pg_err("COMMIT", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scripts_encoding() {
        assert_eq!(
            script_encoding("SET statement_timeout = 0;\nSET client_encoding = 'LATIN1';\n"),
            "LATIN1"
        );
        assert_eq!(script_encoding("SET x = 1;\n"), "UTF8");
    }

    #[test]
    fn configuration_tables_are_read_through_their_filter() {
        let t = Table {
            schema: "public".into(),
            name: "settings".into(),
            owner: "me".into(),
            columns: "key, value".into(),
            pages: 0,
            filter: Some("WHERE NOT builtin".into()),
        };
        assert_eq!(
            copy_out_sql(&t, "public.settings"),
            "COPY (SELECT key, value FROM public.settings WHERE NOT builtin) TO STDOUT"
        );
        let plain = Table { filter: None, ..t };
        assert_eq!(
            copy_out_sql(&plain, "public.settings"),
            "COPY public.settings (key, value) TO STDOUT"
        );
    }
}
