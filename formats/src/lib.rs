//! Database stream formats on top of the repository engine.
//!
//! A format turns one source (a pipe, a database) into the ordered parts of a snapshot and
//! back. This crate knows nothing about where the repository lives.

use std::fmt;

pub mod check;
pub mod compressed;
pub mod error;
pub mod kind;
pub mod listing;
pub mod names;
pub mod notice;
mod partmeta;
pub mod postgres;
pub mod read;
pub mod sqlite;
pub mod verify;

pub use error::{FormatError, Result};

/// Part kind of a raw stream's one part.
pub const RAW_PART: &str = "raw";

/// What a stream's format learnt while it was read.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    /// The server version a dump names.
    pub server_version: Option<String>,
    /// When a pg_dump archive says it was made (pg_dump's local time): year, month, day,
    /// hour, minute, second.
    pub created: Option<(i64, i64, i64, i64, i64, i64)>,
    /// Caveats and facts for the snapshot's notes.
    pub notes: Vec<String>,
}

/// Backs up a stream (stdin, a command's output) as the parts of its format: a pg_dump
/// plain dump or custom-format archive split into its parts, or any bytes as one part.
///
/// # Errors
/// [`FormatError::Invalid`] for an SQLite file (it needs the online backup API, from a
/// path); a truncated dump or archive; read and storage errors.
pub fn backup_stream(
    b: &dbvault_core::Backup<'_>,
    format: StreamFormat,
    reader: impl std::io::Read,
) -> Result<StreamInfo> {
    match format {
        StreamFormat::PgDump => Ok(StreamInfo {
            server_version: postgres::dump::backup_stream(b, reader)?,
            ..StreamInfo::default()
        }),
        StreamFormat::PgCustom => {
            let a = postgres::archive::backup::backup_archive(b, reader)?;
            Ok(StreamInfo {
                server_version: Some(a.server_version),
                created: Some(a.created),
                notes: vec![a.note],
            })
        }
        StreamFormat::Sqlite => Err(FormatError::Invalid(
            "an SQLite file must come on stdin or as sqlite:PATH".into(),
        )),
        StreamFormat::Raw => {
            b.add_part(
                dbvault_core::PartInput {
                    name: "stdin".into(),
                    kind: RAW_PART.into(),
                    ..Default::default()
                },
                reader,
            )?;
            Ok(StreamInfo::default())
        }
    }
}

/// The format of a stream given on stdin or by `--command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFormat {
    /// Any bytes: one part, restored byte for byte.
    Raw,
    /// pg_dump's plain SQL format.
    PgDump,
    /// pg_dump's custom-format archive (`-Fc`).
    PgCustom,
    /// An SQLite database file.
    Sqlite,
}

impl StreamFormat {
    /// Parses the `--format` value.
    ///
    /// # Errors
    /// A message listing the accepted values.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(StreamFormat::Raw),
            "pg_dump" | "pgdump" | "plain" => Ok(StreamFormat::PgDump),
            "custom" | "pg_dump_custom" => Ok(StreamFormat::PgCustom),
            "sqlite" => Ok(StreamFormat::Sqlite),
            other => Err(format!(
                "unknown format {other:?}: use pg_dump (plain), custom (pg_dump -Fc), sqlite or raw"
            )),
        }
    }

    /// Guesses the format from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> StreamFormat {
        if head.starts_with(b"SQLite format 3\0") {
            StreamFormat::Sqlite
        } else if head.starts_with(b"--\n-- PostgreSQL database dump\n--") {
            StreamFormat::PgDump
        } else if head.starts_with(b"PGDMP") {
            StreamFormat::PgCustom
        } else {
            StreamFormat::Raw
        }
    }

    /// The name stored in snapshot manifests.
    pub fn name(self) -> &'static str {
        match self {
            StreamFormat::Raw => "raw",
            // Restored as pg_dump snapshots are: the parts are the same.
            StreamFormat::PgDump | StreamFormat::PgCustom => "pg_dump",
            StreamFormat::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(
            StreamFormat::detect(b"SQLite format 3\0rest"),
            StreamFormat::Sqlite
        );
        assert_eq!(
            StreamFormat::detect(b"--\n-- PostgreSQL database dump\n--\n"),
            StreamFormat::PgDump
        );
        assert_eq!(StreamFormat::detect(b"hello"), StreamFormat::Raw);
        assert_eq!(StreamFormat::parse("raw"), Ok(StreamFormat::Raw));
        assert!(StreamFormat::parse("tar").is_err());
    }
}
