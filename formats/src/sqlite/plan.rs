//! What it takes to recreate one table of an SQLite database: its CREATE statement,
//! columns, and indexes and triggers, renamed when it is restored under a new name.

use rusqlite::Connection;

use super::names::{quote_ident, rename_object};
use crate::error::{FormatError, Result};

/// Finds a table in a database by name (SQLite names are case-insensitive).
pub(crate) fn find_table(
    c: &Connection,
    schema: &str,
    table: &str,
) -> Result<Option<(String, String)>> {
    let q = format!("SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE");
    match c.query_row(&q, [table], |r| Ok((r.get(0)?, r.get(1)?))) {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(FormatError::sqlite("reading the schema", e)),
    }
}

pub(crate) fn table_names(c: &Connection, schema: &str) -> Result<String> {
    let q = format!("SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
    let mut st = c
        .prepare(&q)
        .map_err(|e| FormatError::sqlite("reading the schema", e))?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(|e| FormatError::sqlite("reading the schema", e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| FormatError::sqlite("reading the schema", e))?;
    Ok(names.join(", "))
}

/// The pieces needed to recreate one table.
pub(crate) struct TablePlan {
    pub name: String,
    pub create: String,
    /// Columns to copy (generated columns excluded), quoted.
    pub columns: Vec<String>,
    pub rowid: bool,
    /// (create sql) of its indexes and triggers, renamed as needed.
    pub extras: Vec<String>,
}

pub(crate) fn plan_table(
    c: &Connection,
    schema: &str,
    table: &str,
    new_name: Option<&str>,
) -> Result<TablePlan> {
    let (name, sql) = find_table(c, schema, table)?.ok_or_else(|| FormatError::NoSuchTable {
        table: table.to_string(),
        available: table_names(c, schema).unwrap_or_default(),
    })?;
    let dest = new_name.unwrap_or(&name).to_string();
    let create = rename_object(&sql, &name, &dest, None);
    let q = format!("PRAGMA {schema}.table_xinfo({})", quote_ident(&name));
    let mut st = c
        .prepare(&q)
        .map_err(|e| FormatError::sqlite("reading columns", e))?;
    let columns: Vec<String> = st
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(6)?)))
        .map_err(|e| FormatError::sqlite("reading columns", e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| FormatError::sqlite("reading columns", e))?
        .into_iter()
        .filter(|(_, hidden)| *hidden == 0)
        .map(|(n, _)| quote_ident(&n))
        .collect();
    let rowid = !sql.to_ascii_uppercase().contains("WITHOUT ROWID");
    let q = format!(
        "SELECT name, sql FROM {schema}.sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY type, name"
    );
    let mut st = c
        .prepare(&q)
        .map_err(|e| FormatError::sqlite("reading indexes", e))?;
    let extras: Vec<String> = st
        .query_map([&name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| FormatError::sqlite("reading indexes", e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| FormatError::sqlite("reading indexes", e))?
        .into_iter()
        .map(|(obj, sql)| {
            let renamed = (dest != name).then(|| format!("{dest}_{obj}"));
            rename_object(&sql, &name, &dest, renamed.as_deref())
        })
        .collect();
    Ok(TablePlan {
        name: dest,
        create,
        columns,
        rowid,
        extras,
    })
}
