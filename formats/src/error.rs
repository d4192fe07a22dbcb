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
        /// The server's SQLSTATE (e.g. `42P01` for a missing table), when the server said
        /// it: what a caller matches on, not the text.
        sqlstate: Option<String>,
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
    /// A table name matches several tables of the snapshot.
    #[error("table name {table:?} is ambiguous: {candidates}; qualify it with the schema")]
    AmbiguousTable {
        /// Requested table.
        table: String,
        /// The tables it matches.
        candidates: String,
    },
    /// A whole restore failed and the snapshot is damaged.
    #[error("the snapshot is damaged ({detail}); {hint}")]
    Damaged {
        /// Which parts need which missing packs.
        detail: String,
        /// What can still be done.
        hint: &'static str,
        /// The error the restore stopped with.
        #[source]
        cause: Box<FormatError>,
    },
    /// A database named by the user is not in a whole-server snapshot.
    #[error("snapshot {snapshot} has no database {database:?} (it has: {available})")]
    NoSuchDatabase {
        /// Snapshot id (short).
        snapshot: String,
        /// Requested database.
        database: String,
        /// Databases present.
        available: String,
    },
    /// A request that cannot be carried out as asked (the message says why and what to do).
    #[error("{0}")]
    Invalid(String),
    /// The target table exists already.
    #[error("table {table} already exists in {target}: restore it beside the live one with --rename-table NEW, or replace it with --clean")]
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
    /// Engine error (its kind kept: storage, damage, …).
    #[error(transparent)]
    Core(dbvault_core::Error),
}

impl FormatError {
    /// The storage kind, when this is (or was caused by) a storage failure: the store or
    /// disk could not be used, which is not damage.
    pub fn storage_kind(&self) -> Option<dbvault_core::error::StorageKind> {
        match self {
            FormatError::Core(e) => e.storage_kind(),
            FormatError::Damaged { cause, .. } => cause.storage_kind(),
            _ => None,
        }
    }

    /// The server's SQLSTATE, when this is a PostgreSQL error that carried one.
    #[must_use]
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            FormatError::Postgres { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }

    /// What this failure means to whoever decides what to do next.
    pub fn failure_kind(&self) -> dbvault_core::error::FailureKind {
        use dbvault_core::error::FailureKind;
        match self {
            FormatError::Core(e) => e.failure_kind(),
            FormatError::Damaged { .. } | FormatError::Integrity(_) => FailureKind::Damage,
            _ => FailureKind::Failure,
        }
    }

    /// The damaged pack, when this is damage known to be in one.
    pub fn damaged_pack(&self) -> Option<dbvault_core::Id> {
        match self {
            FormatError::Core(e) => e.damaged_pack(),
            FormatError::Damaged { cause, .. } => cause.damaged_pack(),
            _ => None,
        }
    }

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

impl From<std::io::Error> for FormatError {
    /// Writing restored data (a script, psql's input) failed.
    fn from(e: std::io::Error) -> Self {
        FormatError::Core(dbvault_core::Error::Output(e))
    }
}
