//! `dbvault sql SNAPSHOT "SELECT …"`: a query on an SQLite snapshot, read in place.

use std::io::BufRead;

use anyhow::{bail, Result};
use dbvault_core::lock::LockKind;
use dbvault_core::{Repository, Snapshot};
use dbvault_formats::postgres;
use dbvault_formats::sqlite::export::{csv_cell, csv_field, insert_statement, json, text};
use dbvault_formats::sqlite::remote::{Rows, SnapshotDb};
use dbvault_formats::sqlite::snapshot::database_part;

use crate::args::{Cli, SqlArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &SqlArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "sql")?;
    let filter = dbvault_core::SnapshotFilter {
        name: a.name.clone(),
        ..Default::default()
    };
    let (id, snap) = super::pick_snapshot(&repo, &a.snapshot, &filter, a.target_time.as_deref())?;
    let queries: Vec<String> = match &a.query {
        Some(q) => vec![q.clone()],
        None => std::io::stdin()
            .lock()
            .lines()
            .map_while(std::result::Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect(),
    };
    let format = dbvault_formats::kind::SnapshotFormat::of(&snap)?;
    if format == dbvault_formats::kind::SnapshotFormat::PgDump {
        return postgres_tables(cli, a, &repo, &snap, &queries);
    }
    if format != dbvault_formats::kind::SnapshotFormat::Sqlite {
        bail!(
            "snapshot {} is neither an SQLite nor a PostgreSQL database's: `dbvault sql` cannot read it",
            id.short()
        );
    }
    if !a.table.is_empty() {
        bail!("--table loads tables of a PostgreSQL snapshot; an SQLite snapshot is queried as it is (name its tables in the query)");
    }
    let db = SnapshotDb::open(&repo, database_part(&snap)?)?;
    for q in &queries {
        query(cli, a, &|sql| Ok(db.query(sql)?), q)?;
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

/// A PostgreSQL snapshot's tables, loaded into a scratch SQLite database, then queried.
fn postgres_tables(
    cli: &Cli,
    a: &SqlArgs,
    repo: &Repository,
    snap: &Snapshot,
    queries: &[String],
) -> Result<()> {
    if a.table.is_empty() {
        bail!("a PostgreSQL snapshot is queried through the tables you load: give --table NAME for each table the query reads (`dbvault ls SNAPSHOT` lists them)");
    }
    let (db, loaded) =
        postgres::to_sqlite::Scratch::load(repo, snap, &a.table, &crate::output::print_notice)?;
    for l in &loaded {
        let types: Vec<String> = l
            .columns
            .iter()
            .map(|(c, pg, s)| format!("{c} {pg}→{}", s.sqlite()))
            .collect();
        let more = types.len().saturating_sub(12);
        eprintln!(
            "dbvault: loaded {} as {}: {} row(s); {}{}",
            l.source,
            l.name,
            l.rows,
            types[..types.len() - more].join(", "),
            if more > 0 {
                format!(" and {more} more column(s)")
            } else {
                String::new()
            }
        );
    }
    for q in queries {
        query(cli, a, &|sql| Ok(db.query(sql)?), q)?;
    }
    Ok(())
}

fn query(cli: &Cli, a: &SqlArgs, run: &dyn Fn(&str) -> Result<Rows>, q: &str) -> Result<()> {
    let res = run(q)?;
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
        let head: Vec<String> = names.iter().map(|s| csv_field(s)).collect();
        crate::outln!("{}", head.join(","));
        for r in &res.rows {
            let line: Vec<String> = r.iter().map(csv_cell).collect();
            crate::outln!("{}", line.join(","));
        }
        return Ok(());
    }
    if let Some(t) = &a.insert {
        for r in &res.rows {
            crate::outln!("{}", insert_statement(t, names, r));
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
