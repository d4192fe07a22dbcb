//! Finding the repository and the passphrase.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::backend::local::LocalBackend;
use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_core::backend::Backend;
use dbvault_core::lock::{LockKind, LockOptions};
use dbvault_core::retention::Span;
use dbvault_core::Repository;
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

/// The backend wrapped so that it deletes nothing but locks.
pub fn append_only(b: Arc<dyn Backend>) -> Arc<dyn Backend> {
    Arc::new(dbvault_core::backend::append_only::AppendOnly::new(b))
}

/// `--s3-endpoint`, `--s3-region`, `--s3-path-style` (the AWS variables fill what is absent).
pub fn s3_options(cli: &Cli) -> S3Options {
    S3Options {
        endpoint: cli.s3_endpoint.clone(),
        region: cli.s3_region.clone(),
        path_style: cli.s3_path_style,
        credentials: None,
        attempt_timeout: cli.s3_timeout.map(std::time::Duration::from_secs),
        // Packs wait for their upload on local disk, not in memory (see docs/memory.md).
        spool_dir: cache_dir().map(|d| d.join("spool")),
    }
}

/// The backend of a repository URL.
pub fn backend_for(url: &str, s3: &S3Options) -> Result<Arc<dyn Backend>> {
    if url.starts_with("s3://") {
        return Ok(Arc::new(S3Backend::new(url, s3)?));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.is_empty() {
        bail!("empty repository path");
    }
    Ok(Arc::new(LocalBackend::new(Path::new(path))))
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

/// The first line of a password file, wiped from memory when dropped.
pub fn password_file(f: &Path) -> Result<Zeroizing<String>> {
    let s = Zeroizing::new(
        std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?,
    );
    let first = Zeroizing::new(s.lines().next().unwrap_or("").to_string());
    if first.is_empty() {
        bail!("the password file {} is empty", f.display());
    }
    Ok(first)
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
        return password_file(f);
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

/// Opens the repository in `backend`, with the local cache for a remote store unless
/// `--no-cache`.
pub fn open_with(cli: &Cli, backend: Arc<dyn Backend>, pass: &str) -> Result<Repository> {
    let dir = cache_dir();
    let cache = (backend.remote() && !cli.no_cache)
        .then(|| dir.clone())
        .flatten();
    let repo = Repository::open_cached(backend, pass.as_bytes(), cache.as_deref())?;
    // What this client has seen is kept for every repository, local too, even with
    // --no-cache: it is how a deleted newest snapshot is noticed.
    Ok(match dir {
        Some(d) => {
            let state = d.join(repo.config().id.to_string());
            repo.with_client_state(state)
        }
        None => repo,
    })
}

/// Where caches of remote repositories live: `$DBVAULT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/dbvault`, else `~/.cache/dbvault` (none without a home).
pub fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("DBVAULT_CACHE_DIR") {
        return Some(d.into());
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&d).join("dbvault"));
    }
    var("HOME").map(|h| Path::new(&h).join(".cache/dbvault"))
}

/// S3 options for a configured repository: its own settings, command-line flags first.
pub fn s3_options_for(cli: &Cli, rc: &crate::config::RepoConfig) -> S3Options {
    let mut o = s3_options(cli);
    o.endpoint = o.endpoint.or_else(|| rc.s3_endpoint.clone());
    o.region = o.region.or_else(|| rc.s3_region.clone());
    o.path_style |= rc.s3_path_style;
    o
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
    let wait = match &cli.lock_wait {
        Some(w) => Span::parse(w).context("--lock-wait")?.approx_seconds(),
        None => 30 * 60,
    };
    let mut opts = LockOptions::new(command, std::time::Duration::from_secs(wait));
    // For tests and unusual storage: how long an unrefreshed lock counts as live.
    if let Ok(s) = std::env::var("DBVAULT_LOCK_STALE") {
        let secs = Span::parse(&s)
            .context("DBVAULT_LOCK_STALE")?
            .approx_seconds();
        opts.stale_after = std::time::Duration::from_secs(secs.max(1));
    }
    opts.notify = Arc::new(|m| eprintln!("dbvault: {m}"));
    repo.lock(kind, &opts)?;
    Ok(())
}

/// Opens (without a lock) a repository of the configuration file, with its passphrase and
/// S3 settings; append-only when it or the command line says so.
///
/// # Errors
/// The passphrase cannot be read, or the repository cannot be opened.
pub fn open_configured(
    cli: &Cli,
    name: &str,
    rc: &crate::config::RepoConfig,
) -> Result<Repository> {
    let pass = crate::config::passphrase(name, rc)?;
    open_with(cli, configured_backend(cli, rc)?, &pass)
}

/// The storage of a configured repository (append-only when it or the command line says so).
///
/// # Errors
/// A malformed URL or S3 settings.
pub fn configured_backend(cli: &Cli, rc: &crate::config::RepoConfig) -> Result<Arc<dyn Backend>> {
    let b = backend_for(&rc.url, &s3_options_for(cli, rc))?;
    Ok(if rc.append_only || cli.append_only {
        append_only(b)
    } else {
        b
    })
}
