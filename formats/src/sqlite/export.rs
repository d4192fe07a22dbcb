//! Query results written so that they load back: CSV as PostgreSQL's `\copy … CSV`
//! reads it, `INSERT` statements as sqlite3 reads them, and the table and JSON forms of
//! `dbvault sql`.

use super::remote::Cell;

/// A value as the query's table shows it (a blob as `x'…'`).
#[must_use]
pub fn text(v: &Cell) -> String {
    match v {
        Cell::Null => "NULL".into(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(f) => f.to_string(),
        Cell::Text(t) => t.clone(),
        Cell::Blob(b) => format!("x'{}'", hex::encode(b)),
    }
}

/// A value as JSON (a blob as `x'…'`).
#[must_use]
pub fn json(v: &Cell) -> serde_json::Value {
    match v {
        Cell::Integer(i) => (*i).into(),
        Cell::Real(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Cell::Text(t) => t.clone().into(),
        Cell::Blob(b) => format!("x'{}'", hex::encode(b)).into(),
        _ => serde_json::Value::Null,
    }
}

/// A text field as PostgreSQL's CSV COPY reads it.
#[must_use]
pub fn csv_field(s: &str) -> String {
    // An empty string is quoted so it loads as '' and not as NULL, and `\.` alone is
    // quoted so that COPY does not take it for the end of the data.
    if s.is_empty() || s == "\\." || s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A float as text that reads back as the same value (shortest round trip), in the
/// spelling PostgreSQL's float8 input takes.
fn real(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

/// One CSV field as PostgreSQL's CSV COPY reads it (bytea as `\x…`, NULL empty, `''`
/// quoted).
#[must_use]
pub fn csv_cell(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(f) => real(*f),
        Cell::Text(t) => csv_field(t),
        Cell::Blob(b) => format!("\\x{}", hex::encode(b)),
    }
}

/// One value as an SQLite literal.
#[must_use]
pub fn sql_literal(c: &Cell) -> String {
    match c {
        Cell::Integer(i) => i.to_string(),
        // SQLite has no NaN (it stores NULL) and reads 1e999 as infinity.
        Cell::Real(f) if f.is_nan() => "NULL".into(),
        Cell::Real(f) if f.is_infinite() => if *f > 0.0 { "1e999" } else { "-1e999" }.into(),
        Cell::Real(f) => format!("{f:?}"),
        Cell::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Cell::Blob(b) => format!("X'{}'", hex::encode(b)),
        _ => "NULL".into(),
    }
}

/// `"name"` with inner quotes doubled.
#[must_use]
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One row as an `INSERT` statement sqlite3 loads as it is.
#[must_use]
pub fn insert_statement(table: &str, columns: &[String], row: &[Cell]) -> String {
    let cols: Vec<String> = columns.iter().map(|n| ident(n)).collect();
    let vals: Vec<String> = row.iter().map(sql_literal).collect();
    format!(
        "INSERT INTO {}({}) VALUES({});",
        ident(table),
        cols.join(","),
        vals.join(",")
    )
}
