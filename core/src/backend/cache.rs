//! A local cache in front of a remote backend for the small objects every command reads:
//! keys, index files and snapshots.
//!
//! These objects are immutable and named by the BLAKE3 hash of their bytes, so a cached copy
//! is valid exactly when its bytes still hash to its name: no expiry, no invalidation
//! protocol. A copy that fails the check is dropped and fetched again. Listings always go to
//! the remote store (they are how other hosts' writes and prunes become visible), and a
//! listing drops cached copies of objects that are gone. Pack data is never cached.
//!
//! The cache is an optimisation only: when its directory cannot be written, commands go on
//! without it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::local::LocalBackend;
use super::{Backend, ObjectInfo};
use crate::{Id, Result};

/// Prefixes whose objects are content-addressed and cached.
const CACHED: [&str; 4] = ["keys/", "index/", "snapshots/", "reports/"];

/// Where kept pack ranges live: `ranges/<pack id>/<offset>-<len>`.
const RANGES: &str = "ranges/";

/// The cache path of a range of a pack (`data/ab/<id>`); none for other objects.
fn range_key(path: &str, offset: u64, len: u64) -> Option<String> {
    let pack = path.strip_prefix("data/")?.rsplit('/').next()?;
    Some(format!(
        "{RANGES}{}/{pack}/{offset}-{len}",
        &pack[..pack.len().min(2)]
    ))
}

fn cacheable(path: &str) -> bool {
    CACHED.iter().any(|p| path.starts_with(p))
}

/// Whether `bytes` are what an object named `path` must hold (its name is their hash).
fn matches_name(path: &str, bytes: &[u8]) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| Id::hash_of(bytes).to_string() == name)
}

/// A backend that serves keys, index files and snapshots from a local directory when it
/// has them. See the module docs.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: LocalBackend,
    dir: PathBuf,
}

impl CachedBackend {
    /// `inner` with a cache in `dir` (created when first written, mode 0700).
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        CachedBackend {
            inner,
            cache: LocalBackend::new(&dir),
            dir,
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn keep(&self, path: &str, data: &[u8]) {
        // Best effort: a full or read-only cache directory (or a copy already there) costs
        // requests, not correctness.
        let _ = self.cache.create(path, data);
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create(path, data)?;
        if cacheable(path) && matches_name(path, data) {
            self.keep(path, data);
        }
        Ok(())
    }

    fn create_unique(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create_unique(path, data)?;
        if cacheable(path) && matches_name(path, data) {
            self.keep(path, data);
        }
        Ok(())
    }

    fn create_unique_owned(&self, path: &str, data: Vec<u8>) -> (Result<()>, Vec<u8>) {
        let (r, data) = self.inner.create_unique_owned(path, data);
        if r.is_ok() && cacheable(path) && matches_name(path, &data) {
            self.keep(path, &data);
        }
        (r, data)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        if !cacheable(path) {
            return self.inner.read(path);
        }
        if let Ok(bytes) = self.cache.read(path) {
            if matches_name(path, &bytes) {
                return Ok(bytes);
            }
            let _ = self.cache.remove(path);
        }
        let bytes = self.inner.read(path)?;
        if matches_name(path, &bytes) {
            self.keep(path, &bytes);
        }
        Ok(bytes)
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn read_pieces(&self, path: &str, pieces: &[(u64, u64)]) -> Result<Vec<u8>> {
        self.inner.read_pieces(path, pieces)
    }

    fn cached_range(&self, path: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        let bytes = self.cache.read(&range_key(path, offset, len)?).ok()?;
        (bytes.len() as u64 == len).then_some(bytes)
    }

    fn keep_range(&self, path: &str, offset: u64, data: &[u8]) {
        if let Some(key) = range_key(path, offset, data.len() as u64) {
            self.keep(&key, data);
        }
    }

    fn keeps_ranges(&self) -> bool {
        true
    }

    fn spool(&self) -> Result<Option<Box<dyn super::Spool>>> {
        self.inner.spool()
    }

    fn forget_range(&self, path: &str, offset: u64, len: u64) {
        if let Some(key) = range_key(path, offset, len) {
            let _ = self.cache.remove(&key);
        }
    }

    fn size(&self, path: &str) -> Result<u64> {
        self.inner.size(path)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let out = self.inner.list(prefix)?;
        if prefix == "data/" {
            // Ranges of packs that are gone (pruned, maybe by another host) go too.
            let live: HashSet<&str> = out
                .iter()
                .filter_map(|o| o.path.rsplit('/').next())
                .collect();
            for o in self.cache.list(RANGES).unwrap_or_default() {
                let pack = o.path.split('/').nth(2).unwrap_or_default();
                if !live.contains(pack) {
                    let _ = self.cache.remove(&o.path);
                }
            }
        }
        if cacheable(prefix) {
            let live: HashSet<&str> = out.iter().map(|o| o.path.as_str()).collect();
            for o in self.cache.list(prefix).unwrap_or_default() {
                if !live.contains(o.path.as_str()) {
                    let _ = self.cache.remove(&o.path);
                }
            }
        }
        Ok(out)
    }

    fn remove_incomplete(&self, prefix: &str) -> Result<usize> {
        let _ = self.cache.remove_incomplete(prefix);
        self.inner.remove_incomplete(prefix)
    }

    fn remove(&self, path: &str) -> Result<()> {
        self.inner.remove(path)?;
        if cacheable(path) {
            let _ = self.cache.remove(path);
        }
        Ok(())
    }

    fn requests(&self) -> Option<u64> {
        self.inner.requests()
    }

    fn uploads(&self) -> usize {
        self.inner.uploads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let b = CachedBackend::new(inner, dir.path().join("cache"));
        crate::backend::conformance::run(&b).unwrap();
    }

    #[test]
    fn serves_cached_copies_and_drops_bad_or_vanished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let b = CachedBackend::new(inner.clone(), dir.path().join("cache"));
        let data = b"an index file".to_vec();
        let path = format!("index/{}", Id::hash_of(&data));
        b.create(&path, &data).unwrap();
        let cached = dir.path().join("cache").join(&path);
        assert!(cached.exists(), "written objects are cached");
        // Served from the cache even when the store would now fail.
        inner.remove(&path).unwrap();
        assert_eq!(b.read(&path).unwrap(), data);
        // A listing that lacks it drops the cached copy.
        assert!(b.list("index/").unwrap().is_empty());
        assert!(!cached.exists());
        // A damaged cached copy is never served.
        inner.create(&path, &data).unwrap();
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::write(&cached, b"damaged").unwrap();
        assert_eq!(b.read(&path).unwrap(), data);
        assert_eq!(std::fs::read(&cached).unwrap(), data);
        // Not-content-addressed paths pass through uncached.
        b.create("config", b"{}").unwrap();
        assert!(!dir.path().join("cache/config").exists());
    }
}
