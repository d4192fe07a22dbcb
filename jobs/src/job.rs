//! A backup to take: what `backup`'s arguments and a configured source both describe.

use std::path::Path;

use anyhow::{bail, Result};
use dbvault_formats::postgres::Selection;

/// Where the bytes come from, resolved from a job.
pub enum Input<'a> {
    /// Standard input.
    Stdin,
    /// A command's output.
    Command(&'a str),
    /// An SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL URL.
    Postgres(&'a str),
}

/// One backup to take: what `backup`'s arguments and a configured source (`run`) both
/// describe.
pub struct Job {
    /// `postgres://…`, `sqlite:PATH` or `-`.
    pub source: Option<String>,
    /// A command whose output is backed up.
    pub command: Option<String>,
    /// Source name.
    pub name: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Parallel COPY connections.
    pub jobs: Option<usize>,
    /// A whole PostgreSQL server.
    pub all_databases: bool,
    /// PostgreSQL: store only the rows row-level security lets the role see.
    pub enable_row_security: bool,
    /// PostgreSQL: pg_dump's `--table`, `--exclude-table`, … (whole database by default).
    pub selection: Selection,
    /// PostgreSQL: a base backup of the cluster, waiting this long for its WAL.
    pub physical: Option<std::time::Duration>,
    /// With `physical`, on the database host: its data directory, read directly.
    pub pgdata: Option<std::path::PathBuf>,
    /// A stream may be empty (refused otherwise).
    pub allow_empty: bool,
}

/// Where `a`'s bytes come from.
///
/// # Errors
/// An unknown source.
pub fn input(a: &Job) -> Result<Input<'_>> {
    if let Some(cmd) = &a.command {
        return Ok(Input::Command(cmd));
    }
    let src = a.source.as_deref().unwrap_or("-");
    if src == "-" {
        return Ok(Input::Stdin);
    }
    if let Some(p) = src.strip_prefix("sqlite:") {
        if p.is_empty() {
            bail!("sqlite: needs a path, e.g. sqlite:/var/lib/app/app.db");
        }
        return Ok(Input::Sqlite(Path::new(p)));
    }
    if src.starts_with("postgres://") || src.starts_with("postgresql://") {
        return Ok(Input::Postgres(src));
    }
    bail!("unknown source {src:?}: use sqlite:PATH, `-` (stdin) or --command 'CMD'")
}
