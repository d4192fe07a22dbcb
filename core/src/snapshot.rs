//! Snapshot manifests: one per backup, listing its parts in order.
//!
//! Stored as `snapshots/<id>` = `seal(zstd(json))`, id = BLAKE3 of the stored bytes. A part's
//! chunk ids are kept in a tree of content-defined `List` blobs (64 ids on average), so a
//! manifest stays small for a terabyte database, an unchanged table's lists dedup like its
//! data, and a changed chunk rewrites only the few small lists above it.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::{Error, Id, Result};

const AAD: &[u8] = b"dbvault snapshot";

/// Where a backup came from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// `stdin`, `command`, `postgres`, `sqlite`.
    pub kind: String,
    /// What was backed up: a command line, a database name, a file path.
    pub identity: String,
    /// Stream format: `raw`, `pg_dump`, `sqlite`.
    #[serde(default)]
    pub format: String,
    /// Server version, where there is a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Caveats about what the snapshot holds, in words for people (e.g. that rows were
    /// filtered by row-level security because the backup was asked to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One named stream of a snapshot (a table's data, a schema section, a database file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Part {
    /// Name, e.g. `pre-data`, `public.orders`, `stdin`.
    pub name: String,
    /// Kind, e.g. `raw`, `pre-data`, `table-data`, `post-data`, `sqlite-db`.
    pub kind: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Rows, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// BLAKE3 (unkeyed) of the plaintext, hex.
    pub blake3: String,
    /// Number of chunks.
    pub chunks: u64,
    /// The top of the part's chunk tree, in order: chunk ids when `depth` is 0, else ids of
    /// `List` blobs whose entries are `depth - 1` levels above the chunks.
    pub lists: Vec<Id>,
    /// Levels of `List` blobs between `lists` and the chunks.
    #[serde(default)]
    pub depth: u32,
    /// Format-specific details (e.g. the table's schema and name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// The snapshot a new one followed: the newest of the same source its client knew.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Predecessor {
    /// Its id.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<FixedOffset>,
}

/// A snapshot manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Manifest format version.
    pub version: u32,
    /// When the backup was taken (or the time given with `--time`).
    pub time: DateTime<FixedOffset>,
    /// Host that ran the backup.
    pub host: String,
    /// Source name: the group for retention and `latest`.
    pub name: String,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where the data came from.
    pub source: SourceInfo,
    /// Ordered parts.
    pub parts: Vec<Part>,
    /// Plaintext bytes over all parts.
    pub bytes_in: u64,
    /// Bytes this backup added to the repository.
    pub bytes_added: u64,
    /// Wall time of the backup in seconds.
    pub seconds: f64,
    /// dbvault version that wrote it.
    pub program: String,
    /// The snapshot of the same source this one followed (absent in the first, and in
    /// snapshots written before dbvault recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Predecessor>,
    /// For a snapshot made by `copy`: the id of the original, in the repository where the
    /// backup ran (a copy of a copy names the original too). How `copy` never copies a
    /// snapshot twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<Id>,
    /// For a snapshot `repair snapshots` rewrote without parts that lost their data: the
    /// damaged one it replaces (so that a repair interrupted before removing that one does
    /// not write a second replacement when run again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_from: Option<Id>,
}

impl Snapshot {
    /// Seals a snapshot; returns its id and bytes.
    ///
    /// # Errors
    /// Only if serialisation or the random source fails.
    pub fn encode(&self, keys: &Keys) -> Result<(Id, Vec<u8>)> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let z = zstd::bulk::compress(&json, 3).map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
        let sealed = keys.seal(&z, AAD)?;
        Ok((Id::hash_of(&sealed), sealed))
    }

    /// Opens a stored snapshot.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the snapshot when it fails authentication or does not parse.
    pub fn decode(keys: &Keys, sealed: &[u8], id: &Id) -> Result<Snapshot> {
        let what = format!("snapshot {}", id.short());
        if Id::hash_of(sealed) != *id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let z = keys.open(sealed, AAD, &|| what.clone())?;
        let json =
            zstd::stream::decode_all(&z[..]).map_err(|e| Error::corrupt(&what, e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(&what, e.to_string()))
    }

    /// The id of the backup this snapshot holds: its own, or for a copy the original's.
    pub fn origin(&self, id: &Id) -> Id {
        self.copied_from.unwrap_or(*id)
    }

    /// Finds a part by name.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// The object path of a snapshot.
pub fn snapshot_path(id: &Id) -> String {
    format!("snapshots/{id}")
}
