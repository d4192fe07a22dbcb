//! `dbvault sql SNAPSHOT "SELECT …"`: a query on an SQLite snapshot, read in place.

use std::io::BufRead;

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_formats::sqlite::remote::{Cell, SnapshotDb};
use dbvault_formats::sqlite::snapshot::{database_part, FORMAT};

use crate::args::{Cli, SqlArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &SqlArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "sql")?;
    let (id, snap) = super::pick_snapshot(
        &repo,
        &a.snapshot,
        a.name.as_deref(),
        a.target_time.as_deref(),
    )?;
    if snap.source.format != FORMAT {
        bail!(
            "snapshot {} is not of an SQLite database: `dbvault sql` reads SQLite snapshots (restore a PostgreSQL table with `restore --table T --to -`)",
            id.short()
        );
    }
    let db = SnapshotDb::open(&repo, database_part(&snap)?)?;
    let queries: Vec<String> = match &a.query {
        Some(q) => vec![q.clone()],
        None => std::io::stdin()
            .lock()
            .lines()
            .map_while(std::result::Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    for q in &queries {
        query(cli, a, &db, q)?;
    }
    let r = db.reads();
    eprintln!(
        "dbvault: read {} chunk(s), {} from the repository (snapshot {} of {}, {})",
        r.chunks,
        output::bytes(r.bytes),
        id.short(),
        snap.name,
        output::bytes(snap.bytes_in)
    );
    Ok(())
}

fn text(v: &Cell) -> String {
    match v {
        Cell::Null => "NULL".into(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(f) => f.to_string(),
        Cell::Text(t) => t.clone(),
        Cell::Blob(b) => format!("x'{}'", hex::encode(b)),
        _ => String::new(),
    }
}

fn json(v: &Cell) -> serde_json::Value {
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn query(cli: &Cli, a: &SqlArgs, db: &SnapshotDb, q: &str) -> Result<()> {
    let res = db.query(q)?;
    let names = &res.columns;
    if cli.json {
        let out: Vec<serde_json::Value> = res
            .rows
            .iter()
            .map(|r| {
                serde_json::Value::Object(names.iter().cloned().zip(r.iter().map(json)).collect())
            })
            .collect();
        output::json(&serde_json::Value::Array(out));
        return Ok(());
    }
    let table: Vec<Vec<String>> = res
        .rows
        .iter()
        .map(|r| r.iter().map(text).collect())
        .collect();
    if a.csv {
        // NULL as an empty field, as sqlite3's CSV mode writes it.
        let head: Vec<String> = names.iter().map(|s| csv_field(s)).collect();
        crate::outln!("{}", head.join(","));
        for r in &res.rows {
            let line: Vec<String> = r
                .iter()
                .map(|c| match c {
                    Cell::Null => String::new(),
                    other => csv_field(&text(other)),
                })
                .collect();
            crate::outln!("{}", line.join(","));
        }
        return Ok(());
    }
    let mut width: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for r in &table {
        for (w, v) in width.iter_mut().zip(r) {
            *w = (*w).max(v.chars().count()).min(60);
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    crate::outln!("{}", line(names));
    crate::outln!(
        "{}",
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in &table {
        crate::outln!("{}", line(r));
    }
    crate::outln!(
        "({} row{})",
        table.len(),
        if table.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
