//! `dbvault policy`: the retention policy stored in the repository.

use anyhow::Result;
use dbvault_core::lock::LockKind;
use dbvault_core::retention::Policy;

use crate::args::{Cli, KeepArgs, PolicyArgs};
use crate::repo_access;

/// The rules given on the command line, or `None` when no `--keep-…` option was given.
pub fn from_args(k: &KeepArgs) -> Result<Option<Policy>> {
    if k.is_empty() {
        return Ok(None);
    }
    Ok(Some(k.policy()?))
}

pub fn run(cli: &Cli, a: &PolicyArgs) -> Result<()> {
    let new = from_args(&a.keep)?;
    let repo = match new {
        Some(_) => repo_access::open_locked(cli, LockKind::Shared, "policy")?,
        None => repo_access::open(cli)?,
    };
    let policy = match new {
        Some(p) => {
            if p.is_empty() {
                anyhow::bail!("a policy needs at least one rule above zero");
            }
            repo.set_policy(&p)?;
            Some(p)
        }
        None => repo.policy()?,
    };
    if cli.json {
        crate::output::json(&serde_json::json!({
            "policy": policy,
            "rules": policy.map(|p| p.describe()),
        }));
    } else {
        match policy {
            Some(p) if new.is_some() => crate::outln!("stored retention policy: {}", p.describe()),
            Some(p) => crate::outln!("retention policy: {}", p.describe()),
            None => crate::outln!(
                "no retention policy stored (set one with `dbvault policy --keep-daily 7 --keep-weekly 4 --keep-monthly 12`)"
            ),
        }
    }
    Ok(())
}
