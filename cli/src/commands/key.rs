//! `dbvault key list | add | remove | passwd`

use anyhow::{bail, Context, Result};
use dbvault_core::keyfile::{KdfParams, DEFAULT_KDF};
use zeroize::Zeroizing;

use crate::args::{Cli, KdfArgs, KeyCommand, KeyNewArgs};
use crate::{output, repo_access};

/// The KDF cost the options ask for, checked against the bounds.
pub fn kdf_params(a: &KdfArgs) -> Result<KdfParams> {
    let kdf = KdfParams {
        m_kib: a
            .kdf_memory
            .map_or(DEFAULT_KDF.m_kib, |m| m.saturating_mul(1024)),
        t: a.kdf_passes.unwrap_or(DEFAULT_KDF.t),
        p: a.kdf_lanes.unwrap_or(DEFAULT_KDF.p),
    };
    kdf.check_bounds()
        .context("--kdf-memory/--kdf-passes/--kdf-lanes")?;
    Ok(kdf)
}

/// The new passphrase: `--new-password-file`, else a prompt (twice) on the terminal.
fn new_passphrase(a: &KeyNewArgs) -> Result<Zeroizing<String>> {
    if let Some(f) = &a.new_password_file {
        return dbvault_jobs::access::password_file(f);
    }
    if std::fs::File::open("/dev/tty").is_err() {
        bail!("no new passphrase: use --new-password-file FILE");
    }
    let p = Zeroizing::new(rpassword::prompt_password("new passphrase: ")?);
    if p.is_empty() {
        bail!("empty passphrase");
    }
    if *Zeroizing::new(rpassword::prompt_password("repeat new passphrase: ")?) != *p {
        bail!("the passphrases do not match");
    }
    Ok(p)
}

pub fn run(cli: &Cli, command: &KeyCommand) -> Result<()> {
    let repo = repo_access::open(cli)?;
    match command {
        KeyCommand::List => {
            let keys = repo.key_list()?;
            if cli.json {
                output::json(&serde_json::to_value(&keys)?);
                return Ok(());
            }
            crate::outln!(
                "{:<10} {:<8} {:<20} {:<12} {:<26} kdf",
                "id",
                "",
                "host",
                "user",
                "created"
            );
            for k in keys {
                if let Some(why) = &k.damaged {
                    crate::outln!("{:<10} {:<8} {why}", k.id.short(), "DAMAGED");
                    continue;
                }
                crate::outln!(
                    "{:<10} {:<8} {:<20} {:<12} {:<26} {} MiB, t={}, p={}",
                    k.id.short(),
                    if k.current { "current" } else { "" },
                    k.host,
                    k.user,
                    k.created,
                    k.kdf.m_kib / 1024,
                    k.kdf.t,
                    k.kdf.p
                );
            }
        }
        KeyCommand::Add(a) => {
            let kdf = kdf_params(&a.kdf)?;
            let pass = new_passphrase(a)?;
            let id = repo.key_add(pass.as_bytes(), kdf)?;
            report(cli, "added", id)?;
        }
        KeyCommand::Remove { id, force } => {
            let id = repo.key_remove(id, *force)?;
            report(cli, "removed", id)?;
        }
        KeyCommand::Passwd(a) => {
            let kdf = kdf_params(&a.kdf)?;
            let pass = new_passphrase(a)?;
            // The new key first: a crash in between leaves both passphrases working.
            let id = repo.key_add(pass.as_bytes(), kdf)?;
            let old = repo.key_path().trim_start_matches("keys/").to_string();
            repo.key_remove(&old, true)?;
            report(cli, "changed the passphrase: new key", id)?;
        }
    }
    Ok(())
}

fn report(cli: &Cli, what: &str, id: dbvault_core::Id) -> Result<()> {
    if cli.json {
        output::json(&serde_json::json!({ "done": what, "id": id.to_hex() }));
    } else {
        crate::outln!("{what} {}", id.short());
    }
    Ok(())
}
