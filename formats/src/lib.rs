//! Database stream formats on top of the repository engine.
//!
//! A format turns one source (a pipe, a database) into the ordered parts of a snapshot and
//! back. This crate knows nothing about where the repository lives.

use std::fmt;

pub mod error;
pub mod listing;
pub mod notice;
mod partmeta;
pub mod postgres;
pub mod read;
pub mod sqlite;
pub mod verify;

pub use error::{FormatError, Result};

/// Part kind of a raw stream's one part.
pub const RAW_PART: &str = "raw";

/// Backs up a stream (stdin, a command's output) as the parts of its format: a pg_dump
/// plain dump split into its parts, or any bytes as one part. Returns the server version
/// a dump names.
///
/// # Errors
/// [`FormatError::Invalid`] for an SQLite file (it needs the online backup API, from a
/// path); a truncated dump; read and storage errors.
pub fn backup_stream(
    b: &dbvault_core::Backup<'_>,
    format: StreamFormat,
    reader: impl std::io::Read,
) -> Result<Option<String>> {
    match format {
        StreamFormat::PgDump => postgres::dump::backup_stream(b, reader),
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
            Ok(None)
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
            "pg_dump" | "pgdump" => Ok(StreamFormat::PgDump),
            "sqlite" => Ok(StreamFormat::Sqlite),
            other => Err(format!(
                "unknown format {other:?}: use pg_dump, sqlite or raw"
            )),
        }
    }

    /// Guesses the format from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> StreamFormat {
        if head.starts_with(b"SQLite format 3\0") {
            StreamFormat::Sqlite
        } else if head.starts_with(b"--\n-- PostgreSQL database dump\n--") {
            StreamFormat::PgDump
        } else {
            StreamFormat::Raw
        }
    }

    /// The name stored in snapshot manifests.
    pub fn name(self) -> &'static str {
        match self {
            StreamFormat::Raw => "raw",
            StreamFormat::PgDump => "pg_dump",
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
