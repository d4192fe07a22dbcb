//! `dbvault wal-push %p` and `dbvault wal-fetch %f %p`: PostgreSQL's archive and restore
//! commands. Quiet on success (PostgreSQL logs what they print); one line on failure.

use std::process::ExitCode;

use anyhow::Result;
use dbvault_core::files::Stored;
use dbvault_core::lock::LockKind;
use dbvault_formats::postgres::wal;

use crate::args::{Cli, WalFetchArgs, WalPushArgs};
use crate::{output, repo_access};

pub fn push(cli: &Cli, a: &WalPushArgs) -> Result<()> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-push")?;
    let p = wal::push(&repo, &a.name, &a.path)?;
    repo.unlock();
    if cli.json {
        let added = match p.stored {
            Stored::New { bytes_added } => Some(bytes_added),
            Stored::Same => None,
        };
        output::json(&serde_json::json!({
            "name": p.name,
            "stored": added.is_some(),
            "bytes_added": added.unwrap_or(0),
            "requests": repo.backend().requests(),
        }));
    }
    Ok(())
}

pub fn fetch(cli: &Cli, a: &WalFetchArgs) -> Result<ExitCode> {
    let repo = repo_access::open_locked(cli, LockKind::Shared, "wal-fetch")?;
    let found = wal::fetch(&repo, &a.name, &a.file, &a.dest)?;
    repo.unlock();
    if !found {
        eprintln!("dbvault: {} is not in the archive of {}", a.file, a.name);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
