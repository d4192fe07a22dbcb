//! Benchmarks live in `benches/`; this holds what they share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dbvault_core::backend::local::LocalBackend;
use dbvault_core::keyfile::KdfParams;
use dbvault_core::lock::{LockKind, LockOptions};
use dbvault_core::{RepoConfig, Repository};

/// A new local repository at `path` with a cheap key derivation (benchmarks measure the
/// engine, not Argon2), holding a shared lock as a backup does.
///
/// # Panics
/// When the repository cannot be made: a benchmark has nothing to measure then.
#[must_use]
pub fn bench_repo(path: &Path) -> Repository {
    let backend = Arc::new(LocalBackend::new(path));
    let kdf = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let repo = Repository::init(backend, b"pw", kdf, RepoConfig::default()).expect("init");
    repo.lock(LockKind::Shared, &LockOptions::new("bench", Duration::ZERO))
        .expect("lock");
    repo
}
