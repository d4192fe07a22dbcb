//! pg_dump custom-format archives (`pg_dump -Fc`) as first-class snapshots.
//!
//! A backup reads the archive as it streams (`format`): the header and TOC are stored as
//! they came, and the archive is also converted by `pg_restore -f -` into pg_dump's plain
//! script, which is split into the same parts as a plain dump (pre-data, one row-aligned
//! part per table's COPY data, post-data). So a custom-format snapshot dedups like a
//! plain one, and every restore of a plain snapshot (into a database, one table, a table
//! renamed, schema or data only, restore-test) works on it unchanged.
//!
//! For `restore --to -` to give back the archive itself, byte for byte, each data block is
//! proven at backup to be rebuildable from the table's rows: a zlib block is decompressed
//! and recompressed at the archive's level in 4 KiB output chunks, as pg_dump writes them,
//! and compared; an uncompressed block must hold one row per chunk. A block that cannot be
//! proven (large objects, another compression, INSERT data, another zlib) is stored as it
//! came, in a part of its own. The snapshot records which blocks are which and the BLAKE3
//! of the whole archive, which the rebuilt archive is checked against.

pub mod backup;
pub mod format;
pub mod rebuild;
pub mod rows;
pub mod to_restore;

use serde::{Deserialize, Serialize};

/// Part kind: the archive's header and TOC, as they came.
pub const TOC_KIND: &str = "pg-archive-toc";
/// Part kind: a data block stored as it came (after its type byte and dump id).
pub const BLOCK_KIND: &str = "pg-archive-block";
/// The name of the TOC part.
pub const TOC_PART: &str = "archive";

/// How one data block is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rebuild {
    /// zlib at this level over the rows of table part `part`, in 4 KiB chunks.
    Zlib {
        /// zlib level (-1: zlib's default).
        level: i32,
        /// The table part.
        part: String,
    },
    /// One chunk per row of table part `part`.
    Lines {
        /// The table part.
        part: String,
    },
    /// The block's bytes, stored as part `part`.
    Stored {
        /// The block part.
        part: String,
    },
}

/// One data block, in archive order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Block type (1 data, 3 large objects).
    pub kind: u8,
    /// Dump id.
    pub id: i64,
    /// How to rebuild it.
    pub rebuild: Rebuild,
}

/// What the TOC part records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePart {
    /// The archive's int size (block headers are written with it).
    pub int_size: usize,
    /// The data blocks, in order.
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Bytes of the whole archive.
    pub size: u64,
    /// BLAKE3 of the whole archive, hex.
    pub blake3: String,
    /// Archive version, e.g. `1.14.0`.
    pub version: String,
    /// Compression, e.g. `gzip level -1`.
    pub compression: String,
    /// Bytes after the last data block, stored as they came, in this part: PostgreSQL 16's
    /// pg_dump writing to a file through its standard output opens it for appending, so
    /// its rewrite of the table of contents (with the data offsets) lands after the data.
    /// pg_restore never reads them; the archive is given back with them all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailer: Option<String>,
}

impl ArchivePart {
    /// The part meta that records it.
    pub fn to_meta(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        crate::partmeta::to_meta(self)
    }

    /// What a part recorded.
    ///
    /// # Errors
    /// The record does not read as this type (a newer dbvault wrote it).
    pub fn of(part: &dbvault_core::Part) -> crate::error::Result<ArchivePart> {
        crate::partmeta::from_meta(part, "archive")
    }

    /// Blocks rebuilt from rows, and blocks stored as they came.
    pub fn counts(&self) -> (usize, usize) {
        let stored = self
            .blocks
            .iter()
            .filter(|b| matches!(b.rebuild, Rebuild::Stored { .. }))
            .count();
        (self.blocks.len() - stored, stored)
    }
}

/// The TOC part of a snapshot made from a custom-format archive.
pub fn toc_part(snap: &dbvault_core::Snapshot) -> Option<&dbvault_core::Part> {
    snap.parts.iter().find(|p| p.kind == TOC_KIND)
}

/// Whether a part belongs to the archive's rebuild only (not to the plain script).
pub fn is_archive_only(part: &dbvault_core::Part) -> bool {
    part.kind == TOC_KIND || part.kind == BLOCK_KIND
}
