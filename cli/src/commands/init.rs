//! `dbvault init`

use anyhow::Result;
use dbvault_core::{RepoConfig, Repository};

use crate::args::{Cli, InitArgs};
use crate::{output, repo_access};

pub fn run(cli: &Cli, a: &InitArgs) -> Result<()> {
    let policy = super::policy::from_args(&a.keep)?;
    if policy.is_some_and(|p| p.is_empty()) {
        anyhow::bail!("a policy needs at least one rule above zero");
    }
    let mut config = RepoConfig::default();
    if let Some(s) = &a.pack_size {
        config.pack_target = parse_size(s)?;
    }
    let kdf = super::key::kdf_params(&a.kdf)?;
    let backend = repo_access::backend(cli)?;
    let pass = repo_access::passphrase(cli, true)?;
    let repo = Repository::init(backend.clone(), pass.as_bytes(), kdf, config)?;
    if let Some(p) = &policy {
        dbvault_core::retention::save_policy(backend.as_ref(), repo.keys(), p)?;
    }
    if cli.json {
        output::json(&serde_json::json!({
            "id": repo.config().id.to_hex(),
            "location": backend.location(),
            "policy": policy.map(|p| p.describe()),
        }));
    } else {
        crate::outln!(
            "created repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        if let Some(p) = &policy {
            crate::outln!("retention policy: {}", p.describe());
        }
        crate::outln!("keep the passphrase safe: without it the backups cannot be read");
    }
    Ok(())
}

/// `16MiB`, `512KiB`, `1048576`.
fn parse_size(s: &str) -> Result<u32> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (t, 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--pack-size {s:?}: expected a size such as 16MiB"))?;
    let bytes = n.saturating_mul(mult);
    if !(64 << 10..=512 << 20).contains(&bytes) {
        anyhow::bail!("--pack-size {s:?}: must be between 64KiB and 512MiB");
    }
    Ok(bytes as u32)
}
