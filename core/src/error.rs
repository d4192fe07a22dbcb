//! The one public error type of the engine.

use std::io;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine. Messages are one line, name the cause, and
/// never contain a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository (no `config` object) at the location.
    #[error("no repository at {location} (create one with `dbvault init`)")]
    RepoNotFound {
        /// Where we looked.
        location: String,
    },
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {location}")]
    RepoExists {
        /// Where it is.
        location: String,
    },
    /// No key file opens with the given passphrase.
    #[error("wrong passphrase: none of the {keys} key(s) in the repository opens with it")]
    WrongPassphrase {
        /// How many key files were tried.
        keys: usize,
    },
    /// An object that should exist does not.
    #[error("{path}: not found")]
    NotFound {
        /// Object path inside the repository.
        path: String,
    },
    /// A create-only write found the object already present.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// Object path inside the repository.
        path: String,
    },
    /// A storage operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// Object path (or location) the operation was on.
        path: String,
        /// The underlying error (in the message, so not also a `source`).
        cause: io::Error,
    },
    /// An object failed authentication or does not parse.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// Which object (e.g. `pack data/ab/ab12…`).
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The repository was written by a newer dbvault.
    #[error("repository format version {found} is not supported (this dbvault reads version {supported})")]
    UnsupportedVersion {
        /// Version in `config`.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// A snapshot selector matched nothing.
    #[error("no snapshot matches {selector:?}")]
    SnapshotNotFound {
        /// What the user asked for.
        selector: String,
    },
    /// A snapshot id prefix matched several snapshots.
    #[error(
        "snapshot id prefix {prefix:?} is ambiguous: it matches {count} snapshots ({examples})"
    )]
    AmbiguousSnapshot {
        /// What the user asked for.
        prefix: String,
        /// How many matched.
        count: usize,
        /// Some of the matching ids.
        examples: String,
    },
    /// A blob that a snapshot needs is not in any index.
    #[error("blob {id} is missing from the repository index")]
    MissingBlob {
        /// Blob id (hex).
        id: String,
    },
    /// Reading the data to back up failed.
    #[error("reading the source failed: {0}")]
    Source(io::Error),
    /// Writing restored data failed.
    #[error("writing the restored data failed: {0}")]
    Output(io::Error),
    /// A part named by the user is not in the snapshot.
    #[error("snapshot {snapshot} has no part {part:?}")]
    NoSuchPart {
        /// Snapshot id.
        snapshot: String,
        /// Requested part.
        part: String,
    },
    /// Another process holds a conflicting repository lock and did not let go in time.
    #[error("the repository is in use: {holder}; gave up after waiting {waited_secs} s (wait longer with --lock-wait)")]
    Locked {
        /// Who holds it: command, host, process, since when.
        holder: String,
        /// How long this process waited.
        waited_secs: u64,
    },
    /// This process's lock was taken over or could not be refreshed: continuing could
    /// race with a prune, so the operation stops before recording anything.
    #[error("lost the repository lock ({reason}); stopped before recording anything, run the command again")]
    LockLost {
        /// Why.
        reason: String,
    },
    /// An operation that needs a repository lock was called without one.
    #[error("internal error: {operation} needs {kind} repository lock")]
    NotLocked {
        /// What was attempted.
        operation: String,
        /// `a shared` or `an exclusive`.
        kind: String,
    },
    /// Invalid argument given to an engine function.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with the object path it concerns.
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A damaged-object error.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
