//! Restoring one database of a whole-server snapshot (`backup --all-databases`): its roles
//! and tablespaces first (`pg_dumpall --globals-only`, existing ones kept), the database
//! created when missing (with its original owner), then its parts as a one-database
//! snapshot.

use std::collections::BTreeMap;

use dbvault_core::{Id, Repository, Snapshot};

use super::meta::{section, GLOBALS};
use super::restore::{self, part_bytes, Notice, Notify, RestoreOptions, Target};
use super::server::Globals;
use crate::error::{FormatError, Result};

/// The databases of a whole-server snapshot, with their owners.
///
/// # Errors
/// The globals part's record does not read.
pub fn databases(snap: &Snapshot) -> Result<BTreeMap<String, String>> {
    Ok(section(snap, GLOBALS)
        .map(Globals::of)
        .transpose()?
        .map(|g| g.databases)
        .unwrap_or_default())
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

/// Restores database `db` of a whole-server snapshot: into `target`'s server (roles and
/// tablespaces first, existing ones kept; the database created with its owner when
/// missing; into the database the URL names, else `db`), or as a script (the globals,
/// then the database's script).
///
/// # Errors
/// [`FormatError::NoSuchDatabase`]; as [`restore::restore`].
pub fn restore_database_of_server(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    db: &str,
    opts: &RestoreOptions,
    target: Target<'_>,
    notify: Notify<'_>,
) -> Result<()> {
    let globals = section(snap, GLOBALS);
    let dbs = databases(snap)?;
    let owner = dbs.get(db).ok_or_else(|| FormatError::NoSuchDatabase {
        snapshot: id.short(),
        database: db.to_string(),
        available: dbs.keys().cloned().collect::<Vec<_>>().join(", "),
    })?;
    let sub = sub_snapshot(snap, db);
    let url = match target {
        Target::Script(out) => {
            if let Some(g) = globals {
                if opts.tables.is_empty() && !opts.data_only {
                    out.write_all(&part_bytes(repo, g, notify)?)?;
                }
            }
            return restore::restore(repo, &sub, opts, Target::Script(out), notify);
        }
        Target::Database(url) => url,
    };
    let target_db = url.url_database().unwrap_or_else(|| db.to_string());
    let url = url.for_database(&target_db);
    let server = url.for_database("postgres");
    if let (Some(g), false) = (globals, opts.data_only) {
        let script = part_bytes(repo, g, notify)?;
        // Roles that exist already (the installing superuser at least) give errors that
        // are expected; everything else is created.
        server.psql("restoring roles and tablespaces", false, |w| {
            w.write_all(b"\\set ON_ERROR_STOP off\n")?;
            w.write_all(&script)?;
            Ok(())
        })?;
        notify(Notice::Done(
            "restored roles and tablespaces (existing ones kept)".into(),
        ));
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
        notify(Notice::Done(format!(
            "created database {target_db} (owner {owner})"
        )));
    }
    restore::restore(repo, &sub, opts, Target::Database(&url), notify)
}
