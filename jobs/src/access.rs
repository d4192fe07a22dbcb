//! Reaching repositories: a store URL to a backend, the local cache and client state,
//! locks with a wait, and the repositories a configuration file names. What the command
//! line takes from flags (`--s3-*`, `--append-only`, `--no-cache`, `--lock-wait`) is an
//! [`Access`] here, so every front end opens repositories the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dbvault_core::backend::local::LocalBackend;
use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_core::backend::Backend;
use dbvault_core::lock::{LockKind, LockOptions};
use dbvault_core::Repository;
use zeroize::Zeroizing;

use crate::config::RepoConfig;

/// The first line of a passphrase file (without its line ending), wiped from memory when
/// dropped.
///
/// # Errors
/// The file cannot be read, or its first line is empty.
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

/// Reads the passphrase a repository's configuration names (wiped from memory when
/// dropped).
///
/// # Errors
/// The file or command failing, or no source of a passphrase set.
pub fn configured_passphrase(name: &str, r: &RepoConfig) -> Result<Zeroizing<String>> {
    if let Some(f) = r.password_file.as_ref().map(|f| f.get_ref()) {
        return password_file(f).with_context(|| format!("repository {name}"));
    }
    if let Some(c) = &r.password_command {
        let out = dbvault_core::secrets::scrub(&mut std::process::Command::new("sh"))
            .arg("-c")
            .arg(c)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("repository {name}: cannot run password_command"))?;
        let stdout = Zeroizing::new(out.stdout);
        let first = Zeroizing::new(
            String::from_utf8_lossy(&stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        );
        if !out.status.success() || first.is_empty() {
            bail!("repository {name}: password_command failed or printed nothing");
        }
        return Ok(first);
    }
    if let Some(p) = &r.password {
        return Ok(Zeroizing::new(p.clone()));
    }
    bail!("repository {name}: no passphrase source: set password_file or password_command")
}

/// How repositories are reached.
#[derive(Clone)]
pub struct Access {
    /// S3 settings given by the caller (a configured repository's own fill what is absent).
    pub s3: S3Options,
    /// Delete nothing but locks, whatever the repository's configuration says.
    pub append_only: bool,
    /// No local cache for remote stores.
    pub no_cache: bool,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// How long an unrefreshed lock counts as live (`None`: the library's default).
    pub stale_after: Option<Duration>,
    /// Told when a lock is waited for.
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            s3: S3Options {
                spool_dir: cache_dir().map(|d| d.join("spool")),
                ..S3Options::default()
            },
            append_only: false,
            no_cache: false,
            lock_wait: Duration::from_secs(30 * 60),
            stale_after: None,
            notify: Arc::new(|_| {}),
        }
    }
}

/// The backend of a repository URL: `s3://bucket/prefix`, `file://PATH` or a path.
///
/// # Errors
/// An empty path or a malformed S3 URL.
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

/// The backend wrapped so that it deletes nothing but locks.
#[must_use]
pub fn append_only(b: Arc<dyn Backend>) -> Arc<dyn Backend> {
    Arc::new(dbvault_core::backend::append_only::AppendOnly::new(b))
}

/// Where caches of remote repositories live: `$DBVAULT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/dbvault`, else `~/.cache/dbvault` (none without a home).
#[must_use]
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

impl Access {
    /// Opens the repository in `backend`, with the local cache for a remote store unless
    /// `no_cache`, and this client's memory of what it has seen.
    ///
    /// # Errors
    /// As [`Repository::open_cached`].
    pub fn open(&self, backend: Arc<dyn Backend>, pass: &str) -> Result<Repository> {
        let dir = cache_dir();
        let cache = (backend.remote() && !self.no_cache)
            .then(|| dir.clone())
            .flatten();
        let repo = Repository::open_cached(backend, pass.as_bytes(), cache.as_deref())?;
        // What this client has seen is kept for every repository, local too, even without
        // a cache: it is how a deleted newest snapshot is noticed.
        Ok(match dir {
            Some(d) => {
                let state = d.join(repo.config().id.to_string());
                repo.with_client_state(state)
            }
            None => repo,
        })
    }

    /// Takes a lock on an open repository (`command` names it in others' messages),
    /// waiting up to `lock_wait` for a conflicting holder and saying so through `notify`.
    ///
    /// # Errors
    /// The lock is held past the wait, or the store fails.
    pub fn lock(&self, repo: &Repository, kind: LockKind, command: &str) -> Result<()> {
        let mut opts = LockOptions::new(command, self.lock_wait);
        if let Some(s) = self.stale_after {
            opts.stale_after = s;
        }
        opts.notify = self.notify.clone();
        repo.lock(kind, &opts)?;
        Ok(())
    }

    /// S3 options for a configured repository: the caller's first, its own after; its
    /// own keys from `s3_credentials_file`.
    ///
    /// # Errors
    /// The credentials file cannot be read or lacks a key.
    pub fn s3_for(&self, rc: &RepoConfig) -> Result<S3Options> {
        let mut o = self.s3.clone();
        o.endpoint = o.endpoint.or_else(|| rc.s3_endpoint.clone());
        o.region = o.region.or_else(|| rc.s3_region.clone());
        o.path_style |= rc.s3_path_style;
        if let Some(f) = &rc.s3_credentials_file {
            o.credentials = Some(crate::credentials::s3_credentials(
                f.get_ref(),
                rc.s3_profile.as_deref(),
            )?);
        }
        Ok(o)
    }

    /// The storage of a configured repository (append-only when it or the caller says so).
    ///
    /// # Errors
    /// A malformed URL or S3 settings.
    pub fn configured_backend(&self, rc: &RepoConfig) -> Result<Arc<dyn Backend>> {
        let b = backend_for(&rc.url, &self.s3_for(rc)?)?;
        Ok(if rc.append_only || self.append_only {
            append_only(b)
        } else {
            b
        })
    }

    /// Opens (without a lock) a repository of the configuration file, with its
    /// passphrase and S3 settings.
    ///
    /// # Errors
    /// The passphrase cannot be read, or the repository cannot be opened.
    pub fn open_configured(&self, name: &str, rc: &RepoConfig) -> Result<Repository> {
        let pass = configured_passphrase(name, rc)?;
        self.open(self.configured_backend(rc)?, &pass)
    }

    /// Whether a configured repository is written append-only.
    #[must_use]
    pub fn is_append_only(&self, rc: Option<&RepoConfig>) -> bool {
        self.append_only || rc.is_some_and(|rc| rc.append_only)
    }
}
