//! A backend wrapper for a host that must not be able to destroy backups (the database host
//! in the append-only split): every write is create-only already (see the backend
//! contract), and this refuses every deletion outside `locks/`, so `forget` and `prune`
//! fail at once and nothing a compromised client asks for can remove data.
//!
//! This is the client's half. The store's half is credentials that cannot delete (an IAM
//! policy without `s3:DeleteObject` outside `locks/*`, see docs/security.md); with both, an
//! intruder on the database host cannot erase the history even with a patched dbvault.

use std::sync::Arc;

use super::{Backend, ObjectInfo};
use crate::{Error, Result};

/// Refuses [`Backend::remove`] outside `locks/`; everything else passes through.
pub struct AppendOnly {
    inner: Arc<dyn Backend>,
}

impl AppendOnly {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> AppendOnly {
        AppendOnly { inner }
    }
}

impl Backend for AppendOnly {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create(path, data)
    }
    fn create_unique(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create_unique(path, data)
    }
    fn spool(&self) -> Result<Option<Box<dyn super::Spool>>> {
        self.inner.spool()
    }
    fn create_unique_owned(&self, path: &str, data: Vec<u8>) -> (Result<()>, Vec<u8>) {
        self.inner.create_unique_owned(path, data)
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn read_pieces(&self, path: &str, pieces: &[(u64, u64)]) -> Result<Vec<u8>> {
        self.inner.read_pieces(path, pieces)
    }
    fn size(&self, path: &str) -> Result<u64> {
        self.inner.size(path)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    /// Temporary files and unfinished uploads are not data (an append-only IAM policy keeps
    /// `s3:AbortMultipartUpload` for the same reason).
    fn remove_incomplete(&self, prefix: &str) -> Result<usize> {
        self.inner.remove_incomplete(prefix)
    }
    fn remove(&self, path: &str) -> Result<()> {
        if path.starts_with("locks/") {
            self.inner.remove(path)
        } else {
            Err(Error::DeleteRefused {
                path: path.to_string(),
            })
        }
    }
    fn cached_range(&self, path: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        self.inner.cached_range(path, offset, len)
    }
    fn keep_range(&self, path: &str, offset: u64, data: &[u8]) {
        self.inner.keep_range(path, offset, data);
    }
    fn keeps_ranges(&self) -> bool {
        self.inner.keeps_ranges()
    }
    fn forget_range(&self, path: &str, offset: u64, len: u64) {
        self.inner.forget_range(path, offset, len);
    }
    fn requests(&self) -> Option<u64> {
        self.inner.requests()
    }
    fn remote(&self) -> bool {
        self.inner.remote()
    }
    fn uploads(&self) -> usize {
        self.inner.uploads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn deletes_only_locks() {
        let dir = tempfile::tempdir().unwrap();
        let b = AppendOnly::new(Arc::new(LocalBackend::new(dir.path())));
        b.create("locks/a", b"l").unwrap();
        b.create("snapshots/s", b"s").unwrap();
        b.remove("locks/a").unwrap();
        let e = b.remove("snapshots/s").unwrap_err();
        assert!(matches!(e, Error::DeleteRefused { .. }), "{e}");
        assert_eq!(b.read("snapshots/s").unwrap(), b"s");
    }
}
