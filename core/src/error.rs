//! The one public error type of the engine.
//!
//! Rules, so that the binary can tell the user what really happened:
//! - An error keeps its kind up to the binary. A storage failure stays
//!   [`Error::Storage`] with its [`StorageKind`]: a timeout is never reported as damage,
//!   and damage ([`Error::Corrupt`], [`Error::MissingBlob`], a missing object) is never
//!   reported as a passing failure to retry.
//! - Wrapping adds context (which part, which pack) without changing the kind; a caller
//!   that must decide reads [`Error::is_damage`] and [`Error::damaged_pack`], never the
//!   message text.
//! - Messages are one line, name the cause, and never contain a passphrase or a secret.

use std::io;

use crate::Id;

/// What kind of storage failure an [`Error::Storage`] is: whether trying again may help,
/// and what the user should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageKind {
    /// Timeouts, dropped connections, throttling, server errors: may work next time.
    Transient,
    /// The store or file system refused: credentials, permissions, a read-only mount.
    Permission,
    /// A container (a bucket, a directory) is not there.
    NotFound,
    /// Anything else (a full disk, an unexpected answer).
    Other,
}

/// What a failure means to a script, a scheduler or the binary's exit status. Read from
/// the error a command returned; wrapping (context, a format's error around a storage one)
/// keeps it, and nothing turns damage or a temporary failure into a plain one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Stored data is damaged or missing: retrying will not help; `check` says what, and
    /// `repair` what can be done.
    Damage,
    /// Worth retrying later as it is: another process holds the repository lock, or the
    /// store did not answer (after retries).
    Temporary,
    /// Anything else: the input, the configuration, the command line, the database.
    Failure,
}

impl StorageKind {
    /// The kind of a local I/O error.
    pub fn of(e: &io::Error) -> StorageKind {
        use io::ErrorKind as K;
        match e.kind() {
            K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof => StorageKind::Transient,
            K::PermissionDenied | K::ReadOnlyFilesystem => StorageKind::Permission,
            K::NotFound => StorageKind::NotFound,
            _ => StorageKind::Other,
        }
    }
}

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine (see the rules above).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    Storage {
        /// Object path (or location) the operation was on.
        path: String,
        /// What kind of failure.
        kind: StorageKind,
        /// The underlying error (also in the message: one line whoever prints it).
        #[source]
        cause: io::Error,
    },
    /// An object failed authentication or does not parse.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// Which object (e.g. `pack data/ab/ab12…`, `part "public.orders"`).
        what: String,
        /// What was wrong.
        detail: String,
        /// The pack the damage is in, when it is in one.
        pack: Option<Id>,
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
    /// The snapshot `latest` would mean is gone without `forget`: restoring the next older
    /// one would silently give older data.
    #[error("{detail}: `latest` would be older data; restore a snapshot by its id if that is what you want, and find out who deleted it")]
    SnapshotVanished {
        /// Which snapshot, of which source, from when.
        detail: String,
    },
    /// The snapshot `latest` would mean (the newest of its source this client saw) cannot
    /// be read: the next older one would silently be older data.
    #[error("{detail}: `latest` would be older data; restore a snapshot by its id if that is what you want, or remove the damaged one with `dbvault repair snapshots`")]
    NewestDamaged {
        /// Which snapshot, of which source, from when.
        detail: String,
    },
    /// The stored retention policy is older than one this client has seen.
    #[error("the retention policy in the repository is older than the one this client saw stored at {seen} (found: {}): newer policy objects were deleted; set the policy again with `dbvault policy`", found.as_deref().unwrap_or("none"))]
    PolicyRolledBack {
        /// When the policy this client saw was stored.
        seen: String,
        /// When the policy found was stored, if any.
        found: Option<String>,
    },
    /// A deletion this append-only client refuses to make.
    #[error("this repository is opened append-only: deleting {path} is refused")]
    DeleteRefused {
        /// The object.
        path: String,
    },
    /// A command that deletes (forget, prune) on a host without the right to.
    #[error("{operation} needs the right to delete from the store, which this host does not have ({cause}): run it on the admin host, with credentials that may delete")]
    NeedsDeleteRights {
        /// The command.
        operation: String,
        /// The refusal: an append-only client, or the store's own answer.
        #[source]
        cause: Box<Error>,
    },
    /// `latest` without a source name in a repository of several sources.
    #[error("`latest` of which source? the repository holds {count}: {names}; say which with --name NAME")]
    LatestOfWhich {
        /// How many sources.
        count: usize,
        /// Their names.
        names: String,
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
    #[error("blob {id} is missing from the repository index (`dbvault check` says whether a pack no index names holds it: then `dbvault repair index` brings it back)")]
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
    /// A create-only object exists with other content (a WAL segment pushed twice with
    /// different bytes): nothing was overwritten.
    #[error("{path}: {detail}")]
    Conflict {
        /// The object.
        path: String,
        /// What differs.
        detail: String,
    },
    /// Invalid argument given to an engine function.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with the object path it concerns (its kind from the error).
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Error::Storage {
            path: path.into(),
            kind: StorageKind::of(&source),
            cause: source,
        }
    }

    /// A storage error of a given kind, with a message.
    pub fn storage(path: impl Into<String>, kind: StorageKind, message: impl Into<String>) -> Self {
        Error::Storage {
            path: path.into(),
            kind,
            cause: io::Error::other(message.into()),
        }
    }

    /// A damaged-object error.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
            pack: None,
        }
    }

    /// The same error, saying which pack it concerns when it is damage that does not say
    /// yet (an object missing from the store is damage too).
    pub fn in_pack(self, id: Id) -> Self {
        match self {
            Error::Corrupt {
                what,
                detail,
                pack: None,
            } => Error::Corrupt {
                what,
                detail,
                pack: Some(id),
            },
            Error::NotFound { path } => Error::Corrupt {
                what: path,
                detail: "the pack is missing".into(),
                pack: Some(id),
            },
            other => other,
        }
    }

    /// Whether this is damage to the repository (as opposed to a failure to reach it, a
    /// lock, or bad input).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::MissingBlob { .. } | Error::NotFound { .. }
        )
    }

    /// What this failure means to whoever decides what to do next (see [`FailureKind`]).
    pub fn failure_kind(&self) -> FailureKind {
        if self.is_damage() {
            return FailureKind::Damage;
        }
        match self {
            Error::NewestDamaged { .. } => FailureKind::Damage,
            Error::Locked { .. } | Error::LockLost { .. } => FailureKind::Temporary,
            Error::Storage {
                kind: StorageKind::Transient,
                ..
            } => FailureKind::Temporary,
            _ => FailureKind::Failure,
        }
    }

    /// The damaged pack, when the damage is known to be in one.
    pub fn damaged_pack(&self) -> Option<Id> {
        match self {
            Error::Corrupt { pack, .. } => *pack,
            _ => None,
        }
    }

    /// The storage kind, for a storage error.
    pub fn storage_kind(&self) -> Option<StorageKind> {
        match self {
            Error::Storage { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
