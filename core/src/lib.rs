//! The dbvault repository engine.
//!
//! A repository is a set of immutable objects behind a [`backend::Backend`]:
//! `config` (plaintext), `keys/` (the master key wrapped by passphrases), `data/` (packs of
//! compressed, encrypted blobs), `index/` (which pack holds which blob) and `snapshots/`
//! (manifests listing the parts of one backup and their chunks). This crate knows nothing
//! about databases: a backup is an ordered list of named byte streams ("parts").
//!
//! Write order is packs, then index, then snapshot, so a crash at any instant leaves only
//! unreferenced data behind.

pub mod backend;
pub mod backup;
pub mod blobs;
pub mod check;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod delta;
pub mod diff;
pub mod error;
pub mod files;
pub mod filter;
pub mod hash;
pub mod history;
pub mod id;
pub mod index;
pub mod input;
pub mod interrupt;
pub mod keyfile;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod report;
pub mod restore;
pub mod retention;
pub mod secrets;
pub mod snapshot;
pub mod stats;
pub mod warn;
pub mod when;
mod worker;

pub use backup::{Backup, BackupSummary, Chunking, PartInput, SnapshotMeta};
pub use error::{Error, Result};
pub use filter::SnapshotFilter;
pub use id::Id;
pub use repo::{RepoConfig, Repository};
pub use snapshot::{Part, Snapshot, SourceInfo};
