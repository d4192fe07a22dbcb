//! The relations of every database of a cluster as a base backup began: which file
//! (relfilenode) holds which table. The WAL names files, not tables; with this record a
//! table is found in the WAL even after it was dropped from the live server
//! (`super::changes`).

use dbvault_core::{Part, Repository, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::postgres::PgSource;

/// The part that holds the catalog (JSON), beside the base backup's tar.
pub const PART: &str = "catalog.json";
/// Its kind.
pub const PART_KIND: &str = "pg_catalog";

/// One table (or materialized view) of one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// `pg_class.oid`.
    pub oid: u32,
    /// The file that holds its rows (`pg_relation_filenode`).
    pub filenode: u32,
    /// Its TOAST table's file (0: none).
    #[serde(default)]
    pub toast_filenode: u32,
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
}

impl Relation {
    /// `schema.name`, each part quoted when it needs to be.
    #[must_use]
    pub fn qualified(&self) -> String {
        crate::postgres::ident::qualified(&self.schema, &self.name)
    }
}

/// One database's tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// `pg_database.oid` (the middle number of a relation's path, `base/OID/…`).
    pub oid: u32,
    /// Name.
    pub name: String,
    /// Its tables and materialized views.
    pub relations: Vec<Relation>,
}

/// Every connectable database's tables, and the WAL position they were read at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// `pg_current_wal_lsn()` when the first database was read.
    pub lsn: String,
    /// The databases.
    pub databases: Vec<Database>,
    /// Databases that could not be read, with why (the role may not connect to them):
    /// `events` cannot name their tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

impl Catalog {
    /// Reads the catalog of the cluster `src` is connected to. A database the role cannot
    /// read is listed in `unread`, not an error: a base backup does not fail for it.
    ///
    /// # Errors
    /// The cluster's list of databases cannot be read.
    pub fn read(src: &PgSource) -> Result<Catalog> {
        let lsn = src.query("SELECT pg_current_wal_lsn()")?.trim().to_string();
        let mut databases = Vec::new();
        let mut unread = Vec::new();
        for line in src.query_lines(
            "SELECT oid, datname FROM pg_database WHERE datallowconn ORDER BY datname",
        )? {
            let Some((oid, name)) = line.split_once('|') else {
                continue;
            };
            let oid: u32 = oid.parse().map_err(|_| bad(&line))?;
            // Names may hold `|`: the relation's own columns are read in hex.
            let rows = match src.for_database(name).query_lines(
                "SELECT c.oid, pg_relation_filenode(c.oid), coalesce(pg_relation_filenode(c.reltoastrelid), 0), \
                 encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%' AND pg_relation_filenode(c.oid) IS NOT NULL",
            ) {
                Ok(r) => r,
                Err(e) => {
                    unread.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let mut relations = Vec::new();
            for r in rows {
                let f: Vec<&str> = r.split('|').collect();
                let [oid, node, toast, schema, name] = f[..] else {
                    return Err(bad(&r));
                };
                relations.push(Relation {
                    oid: oid.parse().map_err(|_| bad(&r))?,
                    filenode: node.parse().map_err(|_| bad(&r))?,
                    toast_filenode: toast.parse().map_err(|_| bad(&r))?,
                    schema: unhex(schema).ok_or_else(|| bad(&r))?,
                    name: unhex(name).ok_or_else(|| bad(&r))?,
                });
            }
            databases.push(Database {
                oid,
                name: name.to_string(),
                relations,
            });
        }
        Ok(Catalog {
            lsn,
            databases,
            unread,
        })
    }

    /// The catalog a base backup recorded (`None`: taken by a dbvault that recorded none).
    ///
    /// # Errors
    /// The part cannot be read or does not parse.
    pub fn of(repo: &Repository, snap: &Snapshot) -> Result<Option<Catalog>> {
        let Some(part) = snap.part(PART) else {
            return Ok(None);
        };
        Ok(Some(read_part(repo, part)?))
    }

    /// The database named `name`.
    #[must_use]
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }
}

impl Database {
    /// The table `name` (`schema.table`, or a bare name found in any schema, `public`
    /// first).
    #[must_use]
    pub fn table(&self, name: &str) -> Option<&Relation> {
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s.trim_matches('"')), t.trim_matches('"')),
            None => (None, name.trim_matches('"')),
        };
        let mut found: Vec<&Relation> = self
            .relations
            .iter()
            .filter(|r| r.name == table && schema.is_none_or(|s| r.schema == s))
            .collect();
        found.sort_by_key(|r| r.schema != "public");
        found.first().copied()
    }

    /// The relation whose rows or TOAST live in file `filenode`.
    #[must_use]
    pub fn by_filenode(&self, filenode: u32) -> Option<&Relation> {
        self.relations.iter().find(|r| {
            r.filenode == filenode || (r.toast_filenode != 0 && r.toast_filenode == filenode)
        })
    }
}

fn read_part(repo: &Repository, part: &Part) -> Result<Catalog> {
    let mut bytes = Vec::new();
    dbvault_core::restore::restore_part(repo, part, &mut bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FormatError::Invalid(format!("the base backup's {PART} does not read: {e}")))
}

fn bad(line: &str) -> FormatError {
    FormatError::Invalid(format!("unexpected catalog row {line:?}"))
}

fn unhex(h: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..h.len() / 2)
        .map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}
