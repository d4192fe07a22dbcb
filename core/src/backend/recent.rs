//! A small in-memory store of recent pack bytes, for a process that backs up the same
//! database again and again (`backup --follow`): each snapshot reads the previous one's
//! chunk lists and the bases of its deltas, which are mostly the packs it wrote itself a
//! few seconds before, or ranges it read the time before. On an object store each of those
//! reads is a request; kept here they cost none.
//!
//! Packs are immutable and named by their content, and every blob read from one is
//! authenticated and checked against its id by the caller, so a kept copy needs no
//! invalidation: it is dropped when the pack is removed, or when the budget needs room
//! (oldest first). Only `data/` objects are kept; everything else passes through.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{Backend, ObjectInfo};
use crate::{Error, Result};

/// Packs larger than this are not kept whole when written (their ranges still are when
/// read).
const WHOLE_MAX: usize = 4 << 20;

/// What is kept: whole packs this process wrote, and ranges it read.
#[derive(Default)]
struct Kept {
    /// `(path, offset, bytes)`; offset 0 with the whole object for written packs.
    items: VecDeque<(String, u64, Vec<u8>)>,
    bytes: usize,
}

impl Kept {
    fn find(&self, path: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        self.items.iter().rev().find_map(|(p, off, b)| {
            let end = off + b.len() as u64;
            (p == path && *off <= offset && offset + len <= end).then(|| {
                let s = (offset - off) as usize;
                b[s..s + len as usize].to_vec()
            })
        })
    }

    fn add(&mut self, path: &str, offset: u64, data: Vec<u8>, budget: usize) {
        if data.len() > budget {
            return;
        }
        self.bytes += data.len();
        self.items.push_back((path.to_string(), offset, data));
        while self.bytes > budget {
            match self.items.pop_front() {
                Some((_, _, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }

    fn drop_path(&mut self, path: &str) {
        self.items.retain(|(p, ..)| p != path);
        self.bytes = self.items.iter().map(|(_, _, b)| b.len()).sum();
    }
}

/// Keeps up to `budget` bytes of recently written or read pack data in memory.
pub struct Recent {
    inner: Arc<dyn Backend>,
    kept: Mutex<Kept>,
    budget: usize,
}

impl Recent {
    /// Wraps `inner`, keeping at most `budget` bytes.
    pub fn new(inner: Arc<dyn Backend>, budget: usize) -> Recent {
        Recent {
            inner,
            kept: Mutex::new(Kept::default()),
            budget,
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves nothing half-done that matters here.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keep_written(&self, path: &str, data: &[u8]) {
        if path.starts_with("data/") && data.len() <= WHOLE_MAX {
            self.kept().add(path, 0, data.to_vec(), self.budget);
        }
    }
}

impl Backend for Recent {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create(path, data)?;
        self.keep_written(path, data);
        Ok(())
    }
    fn create_unique(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.create_unique(path, data)?;
        self.keep_written(path, data);
        Ok(())
    }
    fn create_unique_owned(&self, path: &str, data: Vec<u8>) -> (Result<()>, Vec<u8>) {
        let (r, data) = self.inner.create_unique_owned(path, data);
        if r.is_ok() {
            self.keep_written(path, &data);
        }
        (r, data)
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if !path.starts_with("data/") {
            return self.inner.read_range(path, offset, len);
        }
        if let Some(b) = self.kept().find(path, offset, len) {
            return Ok(b);
        }
        let b = self.inner.read_range(path, offset, len)?;
        if b.len() as u64 != len {
            return Err(Error::corrupt(path, "short range read"));
        }
        self.kept().add(path, offset, b.clone(), self.budget);
        Ok(b)
    }
    fn read_pieces(&self, path: &str, pieces: &[(u64, u64)]) -> Result<Vec<u8>> {
        if !path.starts_with("data/") {
            return self.inner.read_pieces(path, pieces);
        }
        let found: Option<Vec<Vec<u8>>> = {
            let kept = self.kept();
            pieces.iter().map(|&(o, l)| kept.find(path, o, l)).collect()
        };
        if let Some(found) = found {
            return Ok(found.concat());
        }
        let b = self.inner.read_pieces(path, pieces)?;
        if b.len() as u64 != super::pieces::wanted(pieces) {
            return Err(Error::corrupt(path, "short range read"));
        }
        let mut kept = self.kept();
        let mut at = 0;
        for &(o, l) in pieces {
            kept.add(path, o, b[at..at + l as usize].to_vec(), self.budget);
            at += l as usize;
        }
        Ok(b)
    }
    fn size(&self, path: &str) -> Result<u64> {
        self.inner.size(path)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn remove_incomplete(&self, prefix: &str) -> Result<usize> {
        self.inner.remove_incomplete(prefix)
    }
    fn remove(&self, path: &str) -> Result<()> {
        self.kept().drop_path(path);
        self.inner.remove(path)
    }
    fn cached_range(&self, path: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        self.inner
            .cached_range(path, offset, len)
            .or_else(|| self.kept().find(path, offset, len))
    }
    fn keep_range(&self, path: &str, offset: u64, data: &[u8]) {
        self.inner.keep_range(path, offset, data);
    }
    fn keeps_ranges(&self) -> bool {
        self.inner.keeps_ranges()
    }
    fn forget_range(&self, path: &str, offset: u64, len: u64) {
        // A damaged copy here is impossible short of a memory fault; drop it all the same.
        self.kept().drop_path(path);
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
    fn the_backend_contract_holds_and_kept_bytes_are_the_stored_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let r = Recent::new(local, 1 << 20);
        crate::backend::conformance::run(&r).expect("conformance");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        r.create("data/ab/abcd", &data).expect("create");
        // Served from memory even once the file is gone behind its back.
        std::fs::remove_file(dir.path().join("data/ab/abcd")).expect("rm");
        assert_eq!(
            r.read_range("data/ab/abcd", 10, 20).expect("kept"),
            data[10..30]
        );
        // Removal through the wrapper forgets it.
        r.remove("data/ab/abcd").expect("remove");
        assert!(r.read_range("data/ab/abcd", 10, 20).is_err());
        // The budget holds: old entries give way.
        for i in 0..30u8 {
            let p = format!("data/cd/{i:02}");
            r.create(&p, &vec![i; 100_000]).expect("create");
        }
        assert!(r.kept().bytes <= 1 << 20);
        assert_eq!(
            r.read_range("data/cd/29", 0, 3).expect("newest"),
            vec![29u8; 3]
        );
    }
}
