//! What happened to one table, read from the WAL: the committed transactions that
//! deleted or updated its rows, truncated it, rewrote it (`ALTER TABLE … TYPE`, `VACUUM
//! FULL`, `CLUSTER`) or dropped it, with the other tables each touched.
//!
//! The WAL names files. The table's file is known from a base backup's [`Catalog`]; a
//! transaction that removes that file at commit either dropped the table (it dropped the
//! table's statistics too, keyed by its OID) or gave it a new file: the first file the
//! transaction created that survives it. That file then holds the table: a rewrite wrote
//! rows into it, a TRUNCATE did not. (A TRUNCATE of several tables in one statement
//! creates their files in the statement's order; dbvault follows the first, which is the
//! table's own when it is the only one or the first named.)

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::catalog::{Catalog, Database};
use super::waldump::{End, Fact, FileId, HeapOp};

/// What a transaction did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `DROP TABLE`.
    Drop,
    /// `TRUNCATE`.
    Truncate,
    /// A rewrite into a new file (`ALTER TABLE … TYPE`, `VACUUM FULL`, `CLUSTER`).
    Rewrite,
    /// Rows deleted and/or updated.
    Rows,
}

/// One committed transaction that changed the table.
#[derive(Clone, Debug, Serialize)]
pub struct TableEvent {
    /// What it did.
    pub change: Change,
    /// The (top-level) transaction id.
    pub xid: u32,
    /// Its commit record's LSN (`X/Y`).
    pub lsn: String,
    /// The same as a number.
    #[serde(skip)]
    pub lsn_value: u64,
    /// When it committed.
    pub time: DateTime<Utc>,
    /// Rows deleted (heap records).
    pub deleted: u64,
    /// Rows updated.
    pub updated: u64,
    /// The other tables it changed rows of (or files, when no catalog names them).
    pub other_tables: Vec<String>,
}

#[derive(Default)]
struct Xact {
    deleted: u64,
    updated: u64,
    created: Vec<FileId>,
    written: HashSet<FileId>,
    touched: HashSet<FileId>,
}

/// Follows one table through the facts of the WAL.
pub struct Tracker<'a> {
    db: &'a Database,
    /// The table's OID (what `dropped stats` names).
    oid: u32,
    /// Its current heap file.
    file: FileId,
    /// Files it had (toast included) that are not "other tables".
    own: HashSet<FileId>,
    open: HashMap<u32, Xact>,
    /// Set once dropped: nothing after matters.
    gone: bool,
    /// The events, oldest first.
    pub events: Vec<TableEvent>,
    catalogs: &'a [Catalog],
}

impl<'a> Tracker<'a> {
    /// Follows table `oid` of `db`, whose heap is `filenode` when the WAL begins. `names`
    /// are every catalog known (base backups'), to name the other tables.
    #[must_use]
    pub fn new(
        db: &'a Database,
        oid: u32,
        filenode: u32,
        toast: u32,
        names: &'a [Catalog],
    ) -> Self {
        let file = (db.oid, filenode);
        let mut own: HashSet<FileId> = [file].into();
        if toast != 0 {
            own.insert((db.oid, toast));
        }
        Tracker {
            db,
            oid,
            file,
            own,
            open: HashMap::new(),
            gone: false,
            events: Vec::new(),
            catalogs: names,
        }
    }

    /// Takes the next fact.
    pub fn fact(&mut self, f: Fact) {
        if self.gone {
            return;
        }
        match f {
            Fact::Heap { xid, file, op } => {
                if file.0 != self.db.oid || file.1 < 16384 {
                    return;
                }
                let x = self.open.entry(xid).or_default();
                match op {
                    HeapOp::Delete if file == self.file => x.deleted += 1,
                    HeapOp::Update if file == self.file => x.updated += 1,
                    HeapOp::Write => {
                        x.written.insert(file);
                    }
                    _ => {}
                }
                if op != HeapOp::Write || !x.created.contains(&file) {
                    x.touched.insert(file);
                }
            }
            Fact::Created { xid, file } => {
                self.open.entry(xid).or_default().created.push(file);
            }
            Fact::End(e) => self.end(*e),
        }
    }

    fn end(&mut self, e: End) {
        let mut x = self.open.remove(&e.xid).unwrap_or_default();
        for s in &e.subxacts {
            if let Some(sub) = self.open.remove(s) {
                x.deleted += sub.deleted;
                x.updated += sub.updated;
                x.created.extend(sub.created);
                x.written.extend(sub.written);
                x.touched.extend(sub.touched);
            }
        }
        if !e.committed {
            return;
        }
        let removed = e.dropped_files.contains(&self.file);
        let change = if removed {
            let new_file = x
                .created
                .iter()
                .find(|f| f.0 == self.db.oid && !e.dropped_files.contains(f))
                .copied();
            match new_file {
                Some(f) if !e.dropped_relations.contains(&(self.db.oid, self.oid)) => {
                    let rewritten = x.written.contains(&f);
                    self.file = f;
                    self.own.insert(f);
                    // The new TOAST file is among the others created: not another table.
                    self.own.extend(x.created.iter().copied());
                    if rewritten {
                        Change::Rewrite
                    } else {
                        Change::Truncate
                    }
                }
                _ => {
                    self.gone = true;
                    Change::Drop
                }
            }
        } else if x.deleted + x.updated > 0 {
            Change::Rows
        } else {
            return;
        };
        let mut other_tables: Vec<String> = x
            .touched
            .iter()
            .filter(|f| !self.own.contains(f) && !x.created.contains(f))
            .map(|f| self.name_of(*f))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        other_tables.sort();
        self.events.push(TableEvent {
            change,
            xid: e.xid,
            lsn: super::waldump::lsn_text(e.lsn),
            lsn_value: e.lsn,
            time: e.time,
            deleted: x.deleted,
            updated: x.updated,
            other_tables,
        });
    }

    fn name_of(&self, f: FileId) -> String {
        self.catalogs
            .iter()
            .rev()
            .filter_map(|c| c.databases.iter().find(|d| d.oid == f.0))
            .find_map(|d| d.by_filenode(f.1))
            .map_or_else(
                || format!("(file {})", f.1),
                super::catalog::Relation::qualified,
            )
    }
}
