//! One table as it was at a point in time, from a physical snapshot: the cluster recovered
//! to the target on a throwaway server, the table taken from it as a logical backup into a
//! scratch repository beside it, and restored from there by the logical restore itself, so
//! the table comes back exactly as a logical table restore brings it (its indexes,
//! constraints, sequences and defaults; `--rename-table`; `--clean`), with every change
//! made to it up to the target.

use std::sync::Arc;

use dbvault_core::keyfile::KdfParams;
use dbvault_core::{RepoConfig, Repository, Snapshot, SnapshotMeta};

use super::relay::Served;
use super::throwaway::{with_recovered, RecoverOptions};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::postgres::backup::{backup, DirectOptions};
use crate::postgres::{RestoreOptions, Selection, Target};

/// Restores `opts.tables` of database `database`, as they were at `o.target`, to `target`.
/// Returns what the relay handed over (for the caller to tell where recovery went).
///
/// # Errors
/// No table named; recovery failing (a target past the archive's end, damage); the table
/// missing from the recovered database; the logical restore's own errors. Nothing is
/// written to `target` unless recovery succeeded and the table was found.
pub fn restore_tables_at(
    repo: &Repository,
    snap: &Snapshot,
    o: &RecoverOptions<'_>,
    database: &str,
    opts: &RestoreOptions,
    target: Target<'_>,
    notify: Notify<'_>,
) -> Result<Served> {
    if opts.tables.is_empty() {
        return Err(FormatError::Invalid(
            "a physical snapshot gives back single tables (--table NAME); the whole cluster restores --to pgdata:DIR".into(),
        ));
    }
    let (_, served) = with_recovered(repo, snap, o, notify, |rec| {
        if let Some((name, why)) = rec.served().failures.first() {
            return Err(FormatError::Invalid(format!(
                "recovery stopped early: WAL file {name} could not be read from the archive ({why}); nothing was restored"
            )));
        }
        let src = rec.source(database)?;
        // The scratch repository lives and dies with the throwaway directory; its key
        // protects nothing, so it is cheap to derive.
        let mut pass = [0u8; 32];
        dbvault_core::crypto::fill_random(&mut pass)?;
        let backend = Arc::new(dbvault_core::backend::local::LocalBackend::new(
            rec.dir.join("copy"),
        ));
        let cheap = KdfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        };
        let scratch = Repository::init(backend, &pass, cheap, RepoConfig::default())?;
        scratch.lock(
            dbvault_core::lock::LockKind::Shared,
            &dbvault_core::lock::LockOptions::new(
                "restore (table as of a time)",
                std::time::Duration::ZERO,
            ),
        )?;
        let b = scratch.start_backup()?;
        let selection = Selection {
            table: opts.tables.clone(),
            ..Selection::default()
        };
        let direct = DirectOptions {
            jobs: 2,
            enable_row_security: false,
            selection,
        };
        let source = match backup(&b, &src, &direct) {
            Ok(s) => s,
            Err(e) => {
                b.abort();
                return Err(e);
            }
        };
        let sum = b.finish(SnapshotMeta {
            time: snap.time,
            name: "as-of".into(),
            tags: Vec::new(),
            source,
        })?;
        if crate::postgres::meta::tables(&sum.snapshot)
            .next()
            .is_none()
        {
            return Err(FormatError::Invalid(format!(
                "database {database:?} had no table matching {} at that time; nothing was restored",
                opts.tables.join(", ")
            )));
        }
        crate::postgres::restore(&scratch, &sum.snapshot, opts, target, notify)
    })?;
    Ok(served)
}
