//! The formats' error type.

/// What can go wrong reading or writing a database format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// SQLite reported an error.
    #[error("{context}: {message}")]
    Sqlite {
        /// What we were doing.
        context: String,
        /// SQLite's message.
        message: String,
    },
    /// PostgreSQL (the server, or one of its client programs) reported an error.
    #[error("{context}: {message}")]
    Postgres {
        /// What we were doing.
        context: String,
        /// The server's or the program's message (never a password).
        message: String,
    },
    /// A table's rows would be filtered by row-level security: a backup would hold less
    /// than the table, so it stops instead (as `pg_dump` does).
    #[error("table {table} has row-level security and role {role:?} does not bypass it, so a backup would silently miss the rows the role cannot see: back up as the table's owner, a superuser or a role with BYPASSRLS (ALTER ROLE {role} BYPASSRLS), or pass --enable-row-security to store only the rows {role:?} can see (the snapshot then says so)")]
    RowSecurity {
        /// The table (qualified, quoted as SQL).
        table: String,
        /// The role the backup connected as.
        role: String,
    },
    /// The input is not an SQLite database.
    #[error("{0} is not an SQLite database")]
    NotSqlite(String),
    /// A table named by the user is not in the snapshot.
    #[error("the snapshot has no table {table:?} (it has: {available})")]
    NoSuchTable {
        /// Requested table.
        table: String,
        /// Tables present.
        available: String,
    },
    /// The target table exists already.
    #[error("table {table:?} already exists in {target}: restore it beside the live one with --rename-table NEW, or replace it with --clean")]
    TableExists {
        /// Table name.
        table: String,
        /// Target database.
        target: String,
    },
    /// The target file exists already.
    #[error("{0} already exists: choose a new path, or use --force to replace it")]
    TargetExists(String),
    /// A restored database failed its integrity check.
    #[error("the restored database fails PRAGMA integrity_check: {0}")]
    Integrity(String),
    /// File system error.
    #[error("{path}: {cause}")]
    Io {
        /// Path concerned.
        path: String,
        /// Cause (in the message, so not also a `source`).
        cause: std::io::Error,
    },
    /// Engine error.
    #[error("{0}")]
    Core(dbvault_core::Error),
}

impl FormatError {
    /// Wraps an SQLite error with context.
    pub fn sqlite(context: impl Into<String>, e: rusqlite::Error) -> Self {
        FormatError::Sqlite {
            context: context.into(),
            message: e.to_string(),
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// Result alias for the formats.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

impl From<dbvault_core::Error> for FormatError {
    fn from(e: dbvault_core::Error) -> Self {
        FormatError::Core(e)
    }
}
