//! Tables of a PostgreSQL snapshot loaded into an SQLite database, so `dbvault sql` can
//! query last night's rows without a PostgreSQL server. Only the named tables' parts are
//! read (and the pre-data, for the column types); rows stream in, so memory stays flat.
//!
//! Types map by the column's type in the snapshot's `CREATE TABLE`:
//! `smallint`, `integer`, `bigint` → INTEGER; `boolean` → INTEGER 1/0; `real`, `double
//! precision`, `numeric` → REAL (binary floating point: exact decimal digits are in
//! PostgreSQL, not here); `bytea` → BLOB; everything else (text, varchar, dates and
//! timestamps as PostgreSQL prints them, uuid, json, arrays, …) → TEXT. A value that does
//! not parse as its type is kept as TEXT rather than lost. NULL stays NULL.

use std::io::Write;

use dbvault_core::{Repository, Snapshot};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::postgres::meta::{self, TablePart};
use crate::postgres::restore::find_table;
use crate::postgres::script::entries;
use crate::read::{part_bytes, write_part};

/// SQLite's type for a column, from PostgreSQL's type as pg_dump prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// `smallint`, `integer`, `bigint`.
    Integer,
    /// `boolean` (1/0).
    Boolean,
    /// `real`, `double precision`, `numeric`.
    Real,
    /// `bytea`.
    Blob,
    /// Everything else, as PostgreSQL prints it.
    Text,
}

impl Affinity {
    /// Maps a PostgreSQL type name (`integer`, `numeric(12,2)`, `text[]`, …).
    pub fn of(pg_type: &str) -> Affinity {
        let t = pg_type.trim().to_ascii_lowercase();
        if t.contains('[') {
            return Affinity::Text;
        }
        let base = t.split('(').next().unwrap_or("").trim();
        match base {
            "smallint" | "integer" | "bigint" | "int" | "int2" | "int4" | "int8" => {
                Affinity::Integer
            }
            "boolean" | "bool" => Affinity::Boolean,
            "real" | "double precision" | "numeric" | "decimal" | "float4" | "float8" => {
                Affinity::Real
            }
            "bytea" => Affinity::Blob,
            _ => Affinity::Text,
        }
    }

    /// The SQLite column type.
    pub fn sqlite(self) -> &'static str {
        match self {
            Affinity::Integer | Affinity::Boolean => "INTEGER",
            Affinity::Real => "REAL",
            Affinity::Blob => "BLOB",
            Affinity::Text => "TEXT",
        }
    }

    fn value(self, field: Vec<u8>) -> Value {
        let text = || Value::Text(String::from_utf8_lossy(&field).into_owned());
        let s = std::str::from_utf8(&field).unwrap_or("");
        match self {
            Affinity::Integer => s.parse().map_or_else(|_| text(), Value::Integer),
            Affinity::Boolean => match s {
                "t" => Value::Integer(1),
                "f" => Value::Integer(0),
                _ => text(),
            },
            Affinity::Real => s.parse().map_or_else(|_| text(), Value::Real),
            Affinity::Blob => match s.strip_prefix("\\x").and_then(|h| hex::decode(h).ok()) {
                Some(b) => Value::Blob(b),
                None => text(),
            },
            Affinity::Text => text(),
        }
    }
}

/// One loaded table.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Its name in the SQLite database (the table's own name; `schema.table` when two
    /// loaded tables share it).
    pub name: String,
    /// `schema.table` in the snapshot.
    pub source: String,
    /// Rows loaded.
    pub rows: u64,
    /// Columns: name, PostgreSQL type, SQLite type.
    pub columns: Vec<(String, String, Affinity)>,
}

/// Loads the tables named in `tables` (as `restore --table` takes them) from a PostgreSQL
/// snapshot into `conn`.
///
/// # Errors
/// A table not in the snapshot (listing those that are), damage and storage errors, and
/// SQLite errors.
pub fn load_tables(
    repo: &Repository,
    snap: &Snapshot,
    tables: &[String],
    conn: &mut Connection,
    notify: Notify<'_>,
) -> Result<Vec<Loaded>> {
    let parts = tables
        .iter()
        .map(|t| find_table(snap, t))
        .collect::<Result<Vec<_>>>()?;
    let pre = match meta::section(snap, meta::PRE_DATA) {
        Some(p) => String::from_utf8_lossy(&part_bytes(repo, p, notify)?).into_owned(),
        None => String::new(),
    };
    let pre = entries(&pre);
    let metas: Vec<TablePart> = parts
        .iter()
        .map(|p| TablePart::of(p))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (part, tp) in parts.iter().zip(&metas) {
        let shared = metas.iter().filter(|m| m.table == tp.table).count() > 1;
        let name = if shared {
            format!("{}.{}", tp.schema, tp.table)
        } else {
            tp.table.clone()
        };
        let ddl = pre
            .iter()
            .find(|e| {
                e.header.as_ref().is_some_and(|h| {
                    h.kind == "TABLE" && h.name == tp.table && h.schema == tp.schema
                })
            })
            .map(|e| e.text.as_str())
            .unwrap_or("");
        let types = column_types(ddl);
        conn.execute_batch("BEGIN")
            .map_err(|e| FormatError::sqlite("loading", e))?;
        let mut loader = RowLoader {
            conn: &mut *conn,
            table: name.clone(),
            types,
            columns: Vec::new(),
            insert: None,
            line: Vec::new(),
            state: State::Header,
            rows: 0,
            error: None,
        };
        let wrote = write_part(repo, part, &mut loader, notify);
        if let Some(e) = loader.error.take() {
            return Err(e);
        }
        wrote?;
        if loader.insert.is_none() {
            // No rows (or an --inserts dump, which has no COPY): the table still exists.
            let cols = match (&tp.copy, loader.columns.is_empty()) {
                (Some(c), true) => copy_columns(c),
                _ => loader.columns.clone(),
            };
            loader.columns = cols;
            loader.create()?;
        }
        let loaded = Loaded {
            name,
            source: format!("{}.{}", tp.schema, tp.table),
            rows: loader.rows,
            columns: loader
                .columns
                .iter()
                .map(|c| {
                    let t = loader.type_of(c);
                    (c.clone(), t.to_string(), Affinity::of(t))
                })
                .collect(),
        };
        conn.execute_batch("COMMIT")
            .map_err(|e| FormatError::sqlite("loading", e))?;
        out.push(loaded);
    }
    Ok(out)
}

/// A scratch SQLite database with loaded tables, read-only once loaded: a temporary file
/// (a big table costs disk, not memory), removed when this is dropped.
pub struct Scratch {
    conn: Connection,
    _file: tempfile::NamedTempFile,
}

impl Scratch {
    /// Loads `tables` of `snap` (see [`load_tables`]) into a new scratch database.
    ///
    /// # Errors
    /// As [`load_tables`]; the temporary file cannot be made.
    pub fn load(
        repo: &Repository,
        snap: &Snapshot,
        tables: &[String],
        notify: Notify<'_>,
    ) -> Result<(Scratch, Vec<Loaded>)> {
        let file = tempfile::Builder::new()
            .prefix(".dbvault-sql-")
            .tempfile()
            .map_err(|e| FormatError::io("a temporary file", e))?;
        let err = |e| FormatError::sqlite("the scratch database", e);
        let mut conn = Connection::open(file.path()).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            .map_err(err)?;
        let loaded = load_tables(repo, snap, tables, &mut conn, notify)?;
        // For reading: a query that writes is refused, as on an SQLite snapshot.
        conn.execute_batch("PRAGMA query_only = 1").map_err(err)?;
        Ok((Scratch { conn, _file: file }, loaded))
    }

    /// Runs one query.
    ///
    /// # Errors
    /// SQLite's error for it.
    pub fn query(&self, sql: &str) -> Result<crate::sqlite::remote::Rows> {
        crate::sqlite::remote::query(&self.conn, sql)
    }
}

#[derive(PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
}

/// Takes a table-data part's bytes (comment header, `COPY … FROM stdin;`, rows, `\.`)
/// and inserts its rows.
struct RowLoader<'c> {
    /// Held by `&mut`, so the loader can be handed to the reading thread.
    conn: &'c mut Connection,
    table: String,
    /// Column name → PostgreSQL type, from the `CREATE TABLE`.
    types: Vec<(String, String)>,
    columns: Vec<String>,
    /// The INSERT statement, once the table exists.
    insert: Option<String>,
    line: Vec<u8>,
    state: State,
    rows: u64,
    /// The first SQLite error (a `Write` can only return I/O errors).
    error: Option<FormatError>,
}

impl RowLoader<'_> {
    fn type_of(&self, column: &str) -> &str {
        self.types
            .iter()
            .find(|(n, _)| n == column)
            .map_or("text", |(_, t)| t.as_str())
    }

    fn create(&mut self) -> Result<()> {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", q(c), Affinity::of(self.type_of(c)).sqlite()))
            .collect();
        let sql = format!("CREATE TABLE {} ({})", q(&self.table), cols.join(", "));
        self.conn
            .execute_batch(&sql)
            .map_err(|e| FormatError::sqlite(format!("creating {}", self.table), e))?;
        let marks = vec!["?"; self.columns.len()].join(", ");
        self.insert = Some(format!("INSERT INTO {} VALUES ({marks})", q(&self.table)));
        Ok(())
    }

    fn take_line(&mut self, line: &[u8]) -> Result<()> {
        match self.state {
            State::Header => {
                let s = String::from_utf8_lossy(line);
                if s.starts_with("COPY ") && s.trim_end().ends_with(" FROM stdin;") {
                    self.columns = copy_columns(&s);
                    self.create()?;
                    self.state = State::Rows;
                }
            }
            State::Rows => {
                if line == b"\\." {
                    self.state = State::Done;
                    return Ok(());
                }
                let affinities: Vec<Affinity> = self
                    .columns
                    .iter()
                    .map(|c| Affinity::of(self.type_of(c)))
                    .collect();
                let values: Vec<Value> = line
                    .split(|b| *b == b'\t')
                    .zip(affinities.iter().chain(std::iter::repeat(&Affinity::Text)))
                    .map(|(f, a)| match unescape(f) {
                        None => Value::Null,
                        Some(v) => a.value(v),
                    })
                    .collect();
                if values.len() != self.columns.len() {
                    return Err(FormatError::Invalid(format!(
                        "table {}: a row has {} fields for {} columns",
                        self.table,
                        values.len(),
                        self.columns.len()
                    )));
                }
                if let Some(sql) = &self.insert {
                    let err = |e| FormatError::sqlite(format!("loading {}", self.table), e);
                    self.conn
                        .prepare_cached(sql)
                        .and_then(|mut st| st.execute(rusqlite::params_from_iter(values)))
                        .map_err(err)?;
                }
                self.rows += 1;
            }
            State::Done => {}
        }
        Ok(())
    }
}

impl Write for RowLoader<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("loading stopped"));
        }
        let mut rest = buf;
        while let Some(p) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..p]);
            rest = &rest[p + 1..];
            let line = std::mem::take(&mut self.line);
            if let Err(e) = self.take_line(&line) {
                self.error = Some(e);
                return Err(std::io::Error::other("loading stopped"));
            }
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One COPY text field: `None` for `\N`, else its bytes with the escapes undone.
fn unescape(f: &[u8]) -> Option<Vec<u8>> {
    if f == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let c = f[i];
        i += 1;
        if c != b'\\' || i == f.len() {
            out.push(c);
            continue;
        }
        let e = f[i];
        i += 1;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match f.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if f.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u8;
                for _ in 0..2 {
                    match f.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// The column names of `COPY schema.table (a, "B c") FROM stdin;`.
fn copy_columns(copy: &str) -> Vec<String> {
    let Some(open) = copy.find(" (") else {
        return Vec::new();
    };
    let Some(close) = copy.rfind(") FROM stdin;") else {
        return Vec::new();
    };
    split_idents(&copy[open + 2..close])
}

/// Splits `a, "B, c", d` into names, undoing pg_dump's quoting.
fn split_idents(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Column name → type from pg_dump's `CREATE TABLE … (\n    col type …,\n …\n);`.
fn column_types(ddl: &str) -> Vec<(String, String)> {
    let Some(start) = ddl.find("CREATE TABLE ") else {
        return Vec::new();
    };
    let body = &ddl[start..];
    let mut out = Vec::new();
    for line in body.lines().skip(1) {
        let l = line.trim();
        if l.starts_with(')') {
            break;
        }
        if l.starts_with("CONSTRAINT ") {
            continue;
        }
        let (name, rest) = if let Some(q) = l.strip_prefix('"') {
            // A quoted name: up to the closing quote not followed by another.
            let mut name = String::new();
            let mut it = q.char_indices().peekable();
            let mut end = q.len();
            while let Some((i, c)) = it.next() {
                if c == '"' {
                    if it.peek().is_some_and(|(_, n)| *n == '"') {
                        name.push('"');
                        it.next();
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                name.push(c);
            }
            (name, &q[end..])
        } else {
            match l.split_once(' ') {
                Some((n, r)) => (n.to_string(), r),
                None => continue,
            }
        };
        let rest = rest.trim().trim_end_matches(',');
        // The type ends where a column option begins.
        let ty = [
            " NOT NULL",
            " DEFAULT ",
            " COLLATE ",
            " GENERATED ",
            " CONSTRAINT ",
        ]
        .iter()
        .filter_map(|k| rest.find(k))
        .min()
        .map_or(rest, |i| &rest[..i]);
        out.push((name, ty.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_unescape_as_postgres_writes_them() {
        assert_eq!(unescape(b"\\N"), None);
        assert_eq!(
            unescape(b"a\\tb\\nc\\\\d\\101\\x41\\r").expect("field"),
            b"a\tb\nc\\dAA\r".to_vec()
        );
        assert_eq!(unescape(b"\\\\N").expect("field"), b"\\N".to_vec());
    }

    #[test]
    fn columns_and_types_come_from_pg_dump_text() {
        assert_eq!(
            copy_columns("COPY public.t (id, \"Odd, \"\"name\"\"\", at) FROM stdin;"),
            vec!["id", "Odd, \"name\"", "at"]
        );
        let ddl = "CREATE TABLE public.t (\n    id integer NOT NULL,\n    \"Odd, \"\"name\"\"\" numeric(12,2) DEFAULT 0,\n    tags text[],\n    at timestamp with time zone,\n    CONSTRAINT c CHECK ((id > 0))\n);\n";
        let t = column_types(ddl);
        assert_eq!(
            t,
            vec![
                ("id".to_string(), "integer".to_string()),
                ("Odd, \"name\"".to_string(), "numeric(12,2)".to_string()),
                ("tags".to_string(), "text[]".to_string()),
                ("at".to_string(), "timestamp with time zone".to_string()),
            ]
        );
        assert_eq!(Affinity::of("numeric(12,2)"), Affinity::Real);
        assert_eq!(Affinity::of("text[]"), Affinity::Text);
        assert_eq!(Affinity::of("bigint"), Affinity::Integer);
        assert_eq!(
            Affinity::Blob.value(b"\\x00ff".to_vec()),
            Value::Blob(vec![0, 255])
        );
        assert_eq!(
            Affinity::Integer.value(b"12a".to_vec()),
            Value::Text("12a".into())
        );
    }
}
