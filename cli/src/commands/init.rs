//! `dbvault init`

use anyhow::Result;
use dbvault_core::keyfile::DEFAULT_KDF;
use dbvault_core::{RepoConfig, Repository};

use crate::args::{Cli, InitArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, _a: &InitArgs) -> Result<()> {
    let backend = repo_access::backend(cli)?;
    let pass = repo_access::passphrase(cli, true)?;
    let repo = Repository::init(
        backend.clone(),
        pass.as_bytes(),
        DEFAULT_KDF,
        RepoConfig::default(),
    )?;
    if cli.json {
        output::json(&serde_json::json!({
            "id": repo.config().id.to_hex(),
            "location": backend.location(),
        }));
    } else {
        crate::outln!(
            "created repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        crate::outln!("keep the passphrase safe: without it the backups cannot be read");
    }
    Ok(())
}
