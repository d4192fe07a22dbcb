//! Restoring one database of a whole-server snapshot (`backup --all-databases`): its roles
//! and tablespaces first (`pg_dumpall --globals-only`, existing ones kept), the database
//! created when missing (with its original owner), then its parts as a one-database
//! snapshot.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{anyhow, bail, Result};
use dbvault_core::{Id, Repository, Snapshot};

use super::restore_pg::{self, part_bytes, PgTarget};
use crate::args::RestoreArgs;
use crate::pg::PgUrl;

/// The databases of a whole-server snapshot, with their owners.
pub fn databases(snap: &Snapshot) -> BTreeMap<String, String> {
    snap.part("globals")
        .and_then(|g| g.meta.get("databases"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// One database's parts as a one-database snapshot.
pub fn sub_snapshot(snap: &Snapshot, db: &str) -> Snapshot {
    let prefix = format!("{db}/");
    let mut sub = snap.clone();
    sub.parts = snap
        .parts
        .iter()
        .filter_map(|p| {
            p.name.strip_prefix(&prefix).map(|n| {
                let mut q = p.clone();
                q.name = n.to_string();
                q
            })
        })
        .collect();
    sub
}

pub fn restore(repo: &Repository, id: &Id, snap: &Snapshot, a: &RestoreArgs) -> Result<()> {
    let globals = snap.part("globals");
    let dbs = databases(snap);
    let names = dbs.keys().cloned().collect::<Vec<_>>().join(", ");
    let Some(db) = &a.database else {
        bail!(
            "snapshot {} holds every database of a server ({names}): choose one with --database NAME",
            id.short()
        );
    };
    let owner = dbs.get(db).ok_or_else(|| {
        anyhow!(
            "snapshot {} has no database {db:?} (it has: {names})",
            id.short()
        )
    })?;
    let sub = sub_snapshot(snap, db);
    if a.to == "-" {
        if let Some(g) = globals {
            if a.tables.is_empty() && !a.data_only {
                std::io::stdout().write_all(&part_bytes(repo, g)?)?;
            }
        }
        return restore_pg::restore(repo, &sub, a, PgTarget::Stdout);
    }
    if !(a.to.starts_with("postgres://") || a.to.starts_with("postgresql://")) {
        bail!("a PostgreSQL snapshot restores --to postgres://… or --to -");
    }
    let url = PgUrl::parse(&a.to)?;
    let target_db = url.database().unwrap_or_else(|| db.clone());
    let url = url.with_database(&target_db);
    let server = url.with_database("postgres");
    if let (Some(g), false) = (globals, a.data_only) {
        let script = part_bytes(repo, g)?;
        // Roles that exist already (the installing superuser at least) give errors that
        // are expected; everything else is created.
        server.psql("restoring roles and tablespaces", false, |w| {
            w.write_all(b"\\set ON_ERROR_STOP off\n")?;
            w.write_all(&script)?;
            Ok(())
        })?;
        eprintln!("restored roles and tablespaces (existing ones kept)");
    }
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let exists = server.query(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{}'",
        target_db.replace('\'', "''")
    ))? != "0";
    if !exists {
        server.query(&format!(
            "CREATE DATABASE {} OWNER {}",
            quoted(&target_db),
            quoted(owner)
        ))?;
        eprintln!("created database {target_db} (owner {owner})");
    }
    restore_pg::restore(repo, &sub, a, PgTarget::Database(url))
}
