//! A table of an SQLite database as a loadable SQL script.

use std::io::Write;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::names::quote_ident;
use super::plan::plan_table;
use crate::error::{FormatError, Result};

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
    use super::super::names::rename_object;
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
