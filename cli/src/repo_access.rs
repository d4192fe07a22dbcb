//! Finding the repository and the passphrase.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::backend::s3::S3Options;
use dbvault_core::backend::Backend;
use dbvault_core::lock::LockKind;
use dbvault_core::retention::Span;
use dbvault_core::Repository;
use dbvault_jobs::access::Access;
pub use dbvault_jobs::access::{append_only, backend_for};
use zeroize::Zeroizing;

use crate::args::Cli;

/// The backend named by `--repo` / `DBVAULT_REPO`.
pub fn backend(cli: &Cli) -> Result<Arc<dyn Backend>> {
    let url = cli
        .repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo URL or set DBVAULT_REPO"))?;
    let b = backend_for(url, &s3_options(cli))?;
    Ok(if cli.append_only { append_only(b) } else { b })
}

/// `--s3-endpoint`, `--s3-region`, `--s3-path-style`, `--s3-timeout` (the AWS variables
/// fill what is absent).
pub fn s3_options(cli: &Cli) -> S3Options {
    S3Options {
        endpoint: cli.s3_endpoint.clone(),
        region: cli.s3_region.clone(),
        path_style: cli.s3_path_style,
        credentials: None,
        attempt_timeout: cli.s3_timeout.map(std::time::Duration::from_secs),
        // Packs wait for their upload on local disk, not in memory (see docs/memory.md).
        spool_dir: dbvault_jobs::access::cache_dir().map(|d| d.join("spool")),
    }
}

/// How this invocation reaches repositories (`--s3-*`, `--append-only`, `--no-cache`,
/// `--lock-wait`, and `DBVAULT_LOCK_STALE` for tests and unusual storage).
pub fn access(cli: &Cli) -> Result<Access> {
    let wait = match &cli.lock_wait {
        Some(w) => Span::parse(w).context("--lock-wait")?.approx_seconds(),
        None => 30 * 60,
    };
    let stale_after = match std::env::var("DBVAULT_LOCK_STALE") {
        Ok(s) => Some(std::time::Duration::from_secs(
            Span::parse(&s)
                .context("DBVAULT_LOCK_STALE")?
                .approx_seconds()
                .max(1),
        )),
        Err(_) => None,
    };
    Ok(Access {
        s3: s3_options(cli),
        append_only: cli.append_only,
        no_cache: cli.no_cache,
        lock_wait: std::time::Duration::from_secs(wait),
        stale_after,
        notify: Arc::new(|m| eprintln!("dbvault: {m}")),
    })
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The passphrase: `--password-file`/`DBVAULT_PASSWORD_FILE`, else `DBVAULT_PASSWORD`, else a
/// prompt on the terminal (twice when creating a repository).
///
/// The passphrase is wiped from memory when the returned value is dropped.
pub fn passphrase(cli: &Cli, confirm: bool) -> Result<Zeroizing<String>> {
    passphrase_from(
        cli.password_file.as_deref(),
        "DBVAULT_PASSWORD",
        "repository passphrase: ",
        confirm,
    )
}

/// A passphrase from `file`, else the variable `var`, else a prompt on the terminal.
pub fn passphrase_from(
    file: Option<&Path>,
    var: &str,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        return dbvault_jobs::access::password_file(f);
    }
    if let Ok(p) = std::env::var(var) {
        let p = Zeroizing::new(p);
        if p.is_empty() {
            bail!("{var} is set but empty");
        }
        return Ok(p);
    }
    let tty = std::fs::File::open("/dev/tty").is_ok() && std::io::stderr().is_terminal();
    if !tty {
        bail!("no passphrase: set {var} or {var}_FILE, or use --{}", {
            let flag = var.trim_start_matches("DBVAULT_").to_ascii_lowercase();
            format!("{}-file", flag.replace('_', "-"))
        });
    }
    let p = Zeroizing::new(strip_newline(rpassword::prompt_password(prompt)?));
    if p.is_empty() {
        bail!("empty passphrase");
    }
    if confirm
        && *Zeroizing::new(strip_newline(rpassword::prompt_password(
            "repeat passphrase: ",
        )?)) != *p
    {
        bail!("the passphrases do not match");
    }
    Ok(p)
}

/// Opens the repository.
pub fn open(cli: &Cli) -> Result<Repository> {
    let backend = backend(cli)?;
    let pass = passphrase(cli, false)?;
    open_with(cli, backend, &pass)
}

/// Opens the repository in `backend` as [`Access::open`] does.
pub fn open_with(cli: &Cli, backend: Arc<dyn Backend>, pass: &str) -> Result<Repository> {
    let repo = access(cli)?.open(backend, pass)?;
    if let Some(d) = crate::progress::display(cli.progress, cli.quiet) {
        repo.set_progress(d);
    }
    Ok(repo)
}

/// Opens the repository and takes a lock (`command` names it in others' messages). Waits
/// up to `--lock-wait` for a conflicting holder, saying so on stderr.
pub fn open_locked(cli: &Cli, kind: LockKind, command: &str) -> Result<Repository> {
    let repo = open(cli)?;
    lock(cli, &repo, kind, command)?;
    Ok(repo)
}

/// Takes a lock on an open repository, as [`open_locked`] does.
pub fn lock(cli: &Cli, repo: &Repository, kind: LockKind, command: &str) -> Result<()> {
    access(cli)?.lock(repo, kind, command)
}
