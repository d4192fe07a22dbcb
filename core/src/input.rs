//! What a format says about a part before its bytes are read: its name, kind, rows and
//! metadata, and how to cut it into chunks.

use std::collections::BTreeMap;

use crate::chunker;

/// How a part is cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chunking {
    /// Content-defined (FastCDC, keyed): for streams where inserts shift later bytes.
    #[default]
    ContentDefined,
    /// Fixed-size chunks of this many bytes: for files of pages (SQLite), where changes
    /// rewrite pages in place and never shift the rest.
    Fixed(u32),
    /// Row-aligned content-defined chunks: for text with one row per line (COPY data).
    Lines(chunker::LineParams),
}

/// Describes a part before its bytes are read.
#[derive(Clone, Debug, Default)]
pub struct PartInput {
    /// How to cut it.
    pub chunking: Chunking,
    /// Part name (unique within the snapshot).
    pub name: String,
    /// Part kind.
    pub kind: String,
    /// Rows, where the source knows them.
    pub rows: Option<u64>,
    /// Format-specific details.
    pub meta: BTreeMap<String, serde_json::Value>,
}
