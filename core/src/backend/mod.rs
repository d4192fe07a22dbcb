//! Storage backends: where repository objects live.
//!
//! # Contract
//!
//! A backend stores immutable objects under `/`-separated paths such as
//! `data/ab/ab12…` or `snapshots/9f…`. Every backend, local or remote, must:
//!
//! - [`Backend::create`]: store a new object **only if the path is free**, atomically (no
//!   reader ever sees a partial object) and durably (once `Ok` is returned, a crash or power
//!   loss does not lose it). An occupied path gives [`Error::AlreadyExists`] and leaves the
//!   existing object untouched.
//! - [`Backend::create_unique`]: the same for a name unique to the bytes (a content hash or
//!   a random id): an object already there is success, and the backend need not look first.
//! - [`Backend::read`] / [`Backend::read_range`] / [`Backend::read_pieces`]: return exactly
//!   the stored bytes, or [`Error::NotFound`]. A range past the end is an error, never a
//!   short read.
//! - [`Backend::size`]: the size of a complete object, or [`Error::NotFound`].
//! - [`Backend::list`]: every complete object under a prefix with its size, in no particular
//!   order; never a temporary or partial object.
//! - [`Backend::remove`]: delete an object; removing a missing object is not an error
//!   (removal is idempotent, so an interrupted prune can simply run again).
//! - [`Backend::remove_incomplete`]: delete what interrupted writes left under a prefix
//!   (temporary files, unfinished uploads); never a complete object. Called by prune under
//!   its exclusive lock, when no writer can be live.
//!
//! The conformance suite in [`conformance`] checks these points; every backend runs it.

pub mod append_only;
pub mod cache;
pub mod conformance;
pub mod local;
pub(crate) mod pieces;
pub mod recent;
pub mod s3;

use crate::Error;
use crate::Result;

/// One stored object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full path inside the repository, e.g. `data/ab/ab12…`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Storage for repository objects. See the module docs for the contract.
pub trait Backend: Send + Sync {
    /// Human-readable location (for messages); never contains credentials.
    fn location(&self) -> String;

    /// Stores a new object at `path`, atomically and durably, only if `path` is free.
    ///
    /// # Errors
    /// [`crate::Error::AlreadyExists`] if the path is taken; [`crate::Error::Storage`] otherwise.
    fn create(&self, path: &str, data: &[u8]) -> Result<()>;

    /// Stores an object whose name is unique to its bytes: a hash of them, or a random id.
    /// An object already at `path` can only hold these very bytes, so finding one is
    /// success, and a backend may skip the look [`Backend::create`] makes first (one
    /// request less on a store that ignores `If-None-Match`). Atomic and durable like
    /// `create`.
    ///
    /// # Errors
    /// [`crate::Error::Storage`].
    fn create_unique(&self, path: &str, data: &[u8]) -> Result<()> {
        match self.create(path, data) {
            Err(Error::AlreadyExists { .. }) => Ok(()),
            r => r,
        }
    }

    /// [`Backend::create_unique`] taking the bytes by value, so that a store which sends
    /// them from memory (S3) need not copy them first. The buffer comes back whatever the
    /// outcome. Why: a backup's pack buffers are recycled, and a copy per upload in flight
    /// was two more packs in memory on S3; a buffer lost on a failed upload would leave the
    /// packer waiting for it for ever.
    ///
    /// # Errors
    /// As [`Backend::create_unique`], in the first element.
    fn create_unique_owned(&self, path: &str, data: Vec<u8>) -> (Result<()>, Vec<u8>) {
        (self.create_unique(path, &data), data)
    }

    /// Starts an object written piece by piece: a backup then streams each pack to a file
    /// as its blobs are sealed instead of holding it whole in memory (17 MiB per pack). A
    /// local disk writes the object's own temp file; S3 writes a local file and uploads it
    /// when finished. `None` (the default): the store takes whole buffers
    /// ([`Backend::create_unique_owned`]).
    ///
    /// # Errors
    /// The store's error (a directory that cannot be made).
    fn spool(&self) -> Result<Option<Box<dyn Spool>>> {
        Ok(None)
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] if absent; [`crate::Error::Storage`] otherwise.
    fn read(&self, path: &str) -> Result<Vec<u8>>;

    /// Reads `len` bytes at `offset`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] if absent; [`crate::Error::Corrupt`] if the object is
    /// shorter than `offset + len`; [`crate::Error::Storage`] otherwise.
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Reads `pieces` (offset, length; sorted by offset, not overlapping) of one object
    /// with one read of the span that covers them, and returns them one after the other.
    /// A store that streams (S3) drops the bytes between them as they arrive, so only the
    /// pieces are ever held. The default reads the span with [`Backend::read_range`].
    ///
    /// # Errors
    /// As [`Backend::read_range`] for the span.
    fn read_pieces(&self, path: &str, pieces: &[(u64, u64)]) -> Result<Vec<u8>> {
        let Some((offset, len)) = pieces::span(pieces) else {
            return Ok(Vec::new());
        };
        Ok(pieces::cut(
            &self.read_range(path, offset, len)?,
            offset,
            pieces,
        ))
    }

    /// Size of an object.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] if absent; [`crate::Error::Storage`] otherwise.
    fn size(&self, path: &str) -> Result<u64>;

    /// Lists every complete object whose path starts with `prefix` (a directory such as
    /// `snapshots/`).
    ///
    /// # Errors
    /// [`crate::Error::Storage`] when the store cannot be listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes the left-overs of interrupted writes under `prefix`; returns how many.
    ///
    /// # Errors
    /// [`crate::Error::Storage`] when the store refuses.
    fn remove_incomplete(&self, prefix: &str) -> Result<usize>;

    /// Removes an object; a missing object is not an error.
    ///
    /// # Errors
    /// [`crate::Error::Storage`] when the store refuses.
    fn remove(&self, path: &str) -> Result<()>;

    /// A kept copy of a range of a pack (chunk lists: every backup reads its parent's),
    /// from a caching wrapper; `None` without one. The caller verifies it and, when it is
    /// damaged, calls [`Backend::forget_range`].
    fn cached_range(&self, _path: &str, _offset: u64, _len: u64) -> Option<Vec<u8>> {
        None
    }

    /// Asks a caching wrapper to keep a copy of a range of a pack (best effort).
    fn keep_range(&self, _path: &str, _offset: u64, _data: &[u8]) {}

    /// Whether [`Backend::keep_range`] keeps anything (a caching wrapper is in the stack).
    /// A spooled pack then holds copies of its small blobs (lists, deltas) to hand over
    /// once it is stored, since its bytes are not in memory to take them from.
    fn keeps_ranges(&self) -> bool {
        false
    }

    /// Drops a kept copy of a range found damaged.
    fn forget_range(&self, _path: &str, _offset: u64, _len: u64) {}

    /// Requests made to a remote store so far (`None` for local storage).
    fn requests(&self) -> Option<u64> {
        None
    }

    /// Whether this is a remote store, where a request costs more than the bytes it moves
    /// (so reads are batched and metadata is cached).
    fn remote(&self) -> bool {
        self.requests().is_some()
    }

    /// How many pack uploads a backup keeps in flight: 1 for a local disk (the disk is
    /// the limit), more for a remote store (latency is).
    fn uploads(&self) -> usize {
        1
    }
}

/// An object being written piece by piece ([`Backend::spool`]), put in place whole by
/// [`Spool::finish_unique`]. Dropped unfinished, it leaves nothing behind: a reader never
/// sees part of an object.
pub trait Spool: Send {
    /// Appends `data`.
    ///
    /// # Errors
    /// The store's error (a full disk).
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// Puts what was written at `path`, durably, as [`Backend::create_unique`] does: an
    /// object already there holds these very bytes (its name is their hash), so it is
    /// success.
    ///
    /// # Errors
    /// As [`Backend::create_unique`].
    fn finish_unique(self: Box<Self>, path: &str) -> Result<()>;
}
