//! SQL text for SQLite: identifier quoting, renaming a table inside CREATE statements, and
//! a table as a loadable SQL script.

use std::io::Write;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::error::{FormatError, Result};
use crate::sqlite::plan_table;

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str, String), // raw text, unquoted value
    Other(&'a str),
}

fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        if c == b'"' || c == b'`' || c == b'[' {
            let close = if c == b'[' { b']' } else { c };
            i += 1;
            let mut val = String::new();
            while i < b.len() {
                if b[i] == close {
                    if close != b']' && i + 1 < b.len() && b[i + 1] == close {
                        val.push(close as char);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch_len = utf8_len(b[i]);
                val.push_str(&sql[i..(i + ch_len).min(b.len())]);
                i += ch_len;
            }
            out.push(Tok::Ident(&sql[start..i], val));
        } else if c == b'\'' {
            i += 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if i + 1 < b.len() && b[i + 1] == b'\'' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push(Tok::Other(&sql[start..i]));
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Tok::Other(&sql[start..i]));
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(b.len());
            out.push(Tok::Other(&sql[start..i]));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            let w = &sql[start..i];
            out.push(Tok::Ident(w, w.to_string()));
        } else {
            i += utf8_len(c);
            out.push(Tok::Other(&sql[start..i.min(b.len())]));
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

const KEYWORDS_BEFORE_NAME: &[&str] = &[
    "CREATE",
    "TEMP",
    "TEMPORARY",
    "UNIQUE",
    "TABLE",
    "INDEX",
    "TRIGGER",
    "VIEW",
    "IF",
    "NOT",
    "EXISTS",
];

/// Rewrites a CREATE TABLE / INDEX / TRIGGER statement: the object's own name becomes
/// `object_name` (for a table: `new_table`), and every identifier naming table `old_table`
/// becomes `new_table` (the ON clause of an index or trigger, a trigger's body, a
/// self-referencing foreign key).
pub fn rename_object(
    sql: &str,
    old_table: &str,
    new_table: &str,
    object_name: Option<&str>,
) -> String {
    let toks = tokens(sql);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut seen_name = false;
    let mut is_table = false;
    let mut prev_word = String::new();
    for t in &toks {
        match t {
            Tok::Ident(raw, val) => {
                let upper = raw.to_ascii_uppercase();
                let after_references = prev_word == "REFERENCES";
                prev_word = upper.clone();
                if !seen_name && raw == val && KEYWORDS_BEFORE_NAME.contains(&upper.as_str()) {
                    if upper == "TABLE" {
                        is_table = true;
                    }
                    out.push_str(raw);
                } else if !seen_name {
                    seen_name = true;
                    let name = if is_table {
                        Some(new_table)
                    } else {
                        object_name
                    };
                    match name {
                        Some(n) => out.push_str(&quote_ident(n)),
                        None => out.push_str(raw),
                    }
                } else if val.eq_ignore_ascii_case(old_table) && !is_table {
                    out.push_str(&quote_ident(new_table));
                } else if is_table && after_references && val.eq_ignore_ascii_case(old_table) {
                    // a self-reference (REFERENCES t): keep it pointing at itself
                    out.push_str(&quote_ident(new_table));
                } else {
                    out.push_str(raw);
                }
            }
            Tok::Other(s) => out.push_str(s),
        }
    }
    out
}

fn literal(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) if f.is_nan() => "NULL".into(),
        ValueRef::Real(f) if f.is_infinite() => (if f > 0.0 { "9e999" } else { "-9e999" }).into(),
        ValueRef::Real(f) => {
            let s = format!("{f:?}"); // shortest text that reads back as the same f64
            s
        }
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t).replace('\'', "''")),
        ValueRef::Blob(b) => {
            let mut s = String::with_capacity(b.len() * 2 + 3);
            s.push_str("X'");
            for x in b {
                s.push_str(&format!("{x:02X}"));
            }
            s.push('\'');
            s
        }
    }
}

/// Writes one table of database `db` as an SQL script that `sqlite3` loads: CREATE TABLE,
/// its rows as INSERTs, then its indexes and triggers, in one transaction.
///
/// # Errors
/// [`FormatError::NoSuchTable`], SQLite or write errors.
pub fn table_as_sql(
    db: &Path,
    table: &str,
    new_name: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64> {
    let c = Connection::open(db).map_err(|e| FormatError::sqlite(db.display().to_string(), e))?;
    let plan = plan_table(&c, "main", table, new_name)?;
    let source: String = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE type='table' AND name = ?1 COLLATE NOCASE",
            [table],
            |r| r.get(0),
        )
        .map_err(|e| FormatError::sqlite("reading the schema", e))?;
    let w = |out: &mut dyn Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| FormatError::io("output", e))
    };
    w(out, "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")?;
    w(out, &format!("{};\n", plan.create))?;
    let cols = plan.columns.join(",");
    let (sel, ins) = if plan.rowid {
        (format!("rowid,{cols}"), format!("rowid,{cols}"))
    } else {
        (cols.clone(), cols)
    };
    let q = format!("SELECT {sel} FROM {}", quote_ident(&source));
    let mut st = c
        .prepare(&q)
        .map_err(|e| FormatError::sqlite("reading rows", e))?;
    let n = st.column_count();
    let mut rows = st
        .query([])
        .map_err(|e| FormatError::sqlite("reading rows", e))?;
    let mut count = 0u64;
    let target = quote_ident(&plan.name);
    while let Some(r) = rows
        .next()
        .map_err(|e| FormatError::sqlite("reading rows", e))?
    {
        let mut line = format!("INSERT INTO {target}({ins}) VALUES(");
        for i in 0..n {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&literal(
                r.get_ref(i)
                    .map_err(|e| FormatError::sqlite("reading rows", e))?,
            ));
        }
        line.push_str(");\n");
        w(out, &line)?;
        count += 1;
    }
    for sql in &plan.extras {
        w(out, &format!("{sql};\n"))?;
    }
    w(out, "COMMIT;\n")?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_tables_indexes_and_triggers() {
        assert_eq!(
            rename_object("CREATE TABLE orders(id INTEGER PRIMARY KEY, parent REFERENCES \"orders\"(id))", "orders", "orders_old", None),
            "CREATE TABLE \"orders_old\"(id INTEGER PRIMARY KEY, parent REFERENCES \"orders_old\"(id))"
        );
        assert_eq!(
            rename_object(
                "CREATE UNIQUE INDEX IF NOT EXISTS idx_o ON orders (id)",
                "orders",
                "o2",
                Some("o2_idx_o")
            ),
            "CREATE UNIQUE INDEX IF NOT EXISTS \"o2_idx_o\" ON \"o2\" (id)"
        );
        assert_eq!(
            rename_object(
                "CREATE TRIGGER t AFTER INSERT ON [Orders] BEGIN UPDATE orders SET x='orders'; END",
                "orders",
                "n",
                Some("n_t")
            ),
            "CREATE TRIGGER \"n_t\" AFTER INSERT ON \"n\" BEGIN UPDATE \"n\" SET x='orders'; END"
        );
        assert_eq!(
            rename_object("CREATE TABLE \"wé\"\"ird\" (a)", "wé\"ird", "x", None),
            "CREATE TABLE \"x\" (a)"
        );
        assert_eq!(
            rename_object("CREATE TABLE t (t INT, p REFERENCES t)", "t", "u", None),
            "CREATE TABLE \"u\" (t INT, p REFERENCES \"u\")"
        );
    }

    #[test]
    fn literals_round_trip() {
        assert_eq!(literal(ValueRef::Text(b"it's")), "'it''s'");
        assert_eq!(literal(ValueRef::Blob(&[0, 255])), "X'00FF'");
        assert_eq!(literal(ValueRef::Real(0.1)), "0.1");
        assert_eq!(
            literal(ValueRef::Real(1e300)).parse::<f64>().ok(),
            Some(1e300)
        );
        assert_eq!(literal(ValueRef::Null), "NULL");
    }
}
