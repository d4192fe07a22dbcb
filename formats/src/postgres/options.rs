//! What a PostgreSQL restore is asked to do, and where it goes.

use std::io::Write;

use super::conn::PgSource;

/// How to restore a PostgreSQL snapshot.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Only these tables (`orders`, `public.orders`, `"Mixed Case"`); empty: everything.
    pub tables: Vec<String>,
    /// Restore the one table under this name.
    pub rename_table: Option<String>,
    /// Only the schema.
    pub schema_only: bool,
    /// Only the data.
    pub data_only: bool,
    /// Replace a table of the same name; for a whole database, drop what the snapshot
    /// creates first (otherwise a target holding any of it is refused, unchanged).
    pub clean: bool,
    /// Into a database: create it (from `template0`) when it does not exist.
    pub create: bool,
    /// A snapshot made from a custom-format archive: the SQL script, not the archive.
    pub plain: bool,
    /// Into a database: sessions loading tables at once (`None`: the cores plus one).
    pub jobs: Option<usize>,
}

/// Where a restore goes.
#[non_exhaustive]
pub enum Target<'a> {
    /// A script for psql, written here.
    Script(&'a mut (dyn Write + Send)),
    /// Into this database.
    Database(&'a PgSource),
}
