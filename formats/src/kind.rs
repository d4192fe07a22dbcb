//! What a snapshot holds, as this crate records it in the manifest's `source.format`: one
//! enum, so callers route on a type, never on a string. The spellings are the stored ones
//! (version 1 of each name); a name this build does not know was written by a newer
//! dbvault and is an error, not a guess.

use dbvault_core::Snapshot;
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};

/// The kind of a snapshot's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SnapshotFormat {
    /// A logical PostgreSQL backup: pg_dump's plain script in parts (a custom-format
    /// archive is this too, with the archive's own parts beside).
    #[serde(rename = "pg_dump")]
    PgDump,
    /// A PostgreSQL base backup, with its WAL archived apart.
    #[serde(rename = "pg_physical")]
    PgPhysical,
    /// An SQLite database file.
    #[serde(rename = "sqlite")]
    Sqlite,
    /// A stream stored as it came.
    #[serde(rename = "raw")]
    Raw,
}

impl SnapshotFormat {
    /// Every kind, for listings and tests.
    pub const ALL: [SnapshotFormat; 4] = [
        SnapshotFormat::PgDump,
        SnapshotFormat::PgPhysical,
        SnapshotFormat::Sqlite,
        SnapshotFormat::Raw,
    ];

    /// The name stored in manifests.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SnapshotFormat::PgDump => crate::postgres::meta::FORMAT,
            SnapshotFormat::PgPhysical => crate::postgres::physical::FORMAT,
            SnapshotFormat::Sqlite => crate::sqlite::snapshot::FORMAT,
            SnapshotFormat::Raw => "raw",
        }
    }

    /// The kind a stored name means.
    ///
    /// # Errors
    /// A name this build does not know (a newer dbvault wrote it).
    pub fn parse(name: &str) -> Result<SnapshotFormat> {
        SnapshotFormat::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                FormatError::Invalid(format!(
                    "snapshot format {name:?} is not one this dbvault reads (written by a newer version?)"
                ))
            })
    }

    /// The kind of `snap`.
    ///
    /// # Errors
    /// As [`SnapshotFormat::parse`].
    pub fn of(snap: &Snapshot) -> Result<SnapshotFormat> {
        SnapshotFormat::parse(&snap.source.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_refused() {
        for f in SnapshotFormat::ALL {
            assert_eq!(SnapshotFormat::parse(f.name()).expect("parse"), f);
            let json = serde_json::to_string(&f).expect("json");
            assert_eq!(json, format!("\"{}\"", f.name()));
        }
        assert!(SnapshotFormat::parse("pg_dump_v9").is_err());
    }
}
