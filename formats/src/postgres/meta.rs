//! What a PostgreSQL snapshot's parts are and what they record: the part kinds, and the
//! metadata of a table's part, written and read by this one type.

use std::collections::BTreeMap;

use dbvault_core::{Part, Snapshot};
use serde::{Deserialize, Serialize};

/// Part kind: the schema before the data (pg_dump's pre-data section).
pub const PRE_DATA: &str = "pre-data";
/// Part kind: one table's rows, in pg_dump's `COPY … FROM stdin;` text.
pub const TABLE_DATA: &str = "table-data";
/// Part kind: the large objects (see [`super::lobs`]).
pub const LARGE_OBJECTS: &str = "large-objects";
/// Part kind: everything after the data (sequence values, indexes, constraints, …).
pub const POST_DATA: &str = "post-data";
/// Part kind: a whole server's roles and tablespaces (`pg_dumpall --globals-only`).
pub const GLOBALS: &str = "globals";

/// The format name of PostgreSQL snapshots in manifests (`SourceInfo::format`).
pub const FORMAT: &str = "pg_dump";

/// What a table's data part records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePart {
    /// Schema (raw name).
    #[serde(default)]
    pub schema: String,
    /// Table (raw name).
    #[serde(default)]
    pub table: String,
    /// The part's `COPY … FROM stdin;` line (absent for an `--inserts` dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// BLAKE3 of the COPY text as the server sent it (direct backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_blake3: Option<String>,
}

impl TablePart {
    /// The part meta that records it.
    pub fn to_meta(&self) -> BTreeMap<String, serde_json::Value> {
        crate::partmeta::to_meta(self)
    }

    /// What a part recorded (empty fields for a part that is not a table's).
    ///
    /// # Errors
    /// The record does not read as this type (a newer dbvault wrote it).
    pub fn of(part: &dbvault_core::Part) -> crate::error::Result<TablePart> {
        crate::partmeta::from_meta(part, "table")
    }

    /// `schema.table`, quoted as pg_dump quotes names.
    pub fn qualified(&self) -> String {
        super::ident::qualified(&self.schema, &self.table)
    }
}

/// The first part of a kind.
pub fn section<'a>(snap: &'a Snapshot, kind: &str) -> Option<&'a Part> {
    snap.parts.iter().find(|p| p.kind == kind)
}

/// The table-data parts, in order.
pub fn tables(snap: &Snapshot) -> impl Iterator<Item = &Part> {
    snap.parts.iter().filter(|p| p.kind == TABLE_DATA)
}

/// Whether a snapshot that lost `part`'s data (`repair snapshots`) is still worth keeping:
/// a table's rows are, as the rest of the dump restores without them; schema is not.
pub fn can_lose(part: &Part) -> bool {
    part.kind == TABLE_DATA
}

/// Whether a part holds data rather than schema (for `--schema-only` / `--data-only`).
pub fn is_data(part: &Part) -> bool {
    part.kind == TABLE_DATA || part.kind == LARGE_OBJECTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_meta_round_trips_with_the_keys_older_snapshots_have() {
        let t = TablePart {
            schema: "app".into(),
            table: "orders".into(),
            copy: Some("COPY app.orders (id) FROM stdin;".into()),
            copy_blake3: None,
        };
        let meta = t.to_meta();
        assert_eq!(meta["schema"], "app");
        assert_eq!(meta["copy"], "COPY app.orders (id) FROM stdin;");
        assert!(!meta.contains_key("copy_blake3"));
        let part = Part {
            name: "app.orders".into(),
            kind: TABLE_DATA.into(),
            size: 0,
            rows: None,
            blake3: String::new(),
            chunks: 0,
            lists: Vec::new(),
            depth: 0,
            meta,
        };
        assert_eq!(TablePart::of(&part).expect("reads"), t);
        assert_eq!(t.qualified(), "app.orders");
        // A field that does not read is an error naming the part, never a default.
        let mut bad = part.clone();
        bad.meta
            .insert("table".into(), serde_json::json!(["not", "a name"]));
        let e = TablePart::of(&bad).expect_err("a list is no table name");
        assert!(
            e.to_string().contains("app.orders") && e.to_string().contains("does not read"),
            "{e}"
        );
    }
}
