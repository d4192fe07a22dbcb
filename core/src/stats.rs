//! Repository statistics.

use serde::Serialize;

use crate::{Repository, Result};

/// Sizes and counts of a repository.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Snapshots.
    pub snapshots: usize,
    /// Distinct blobs in the index.
    pub blobs: usize,
    /// Pack files.
    pub packs: usize,
    /// Index files.
    pub index_files: usize,
    /// Bytes of every object in the repository.
    pub stored_bytes: u64,
    /// Plaintext bytes over all snapshots.
    pub snapshot_bytes: u64,
    /// `snapshot_bytes / stored_bytes`: what dedup and compression save.
    pub ratio: f64,
}

/// Gathers statistics.
///
/// # Errors
/// Backend errors or a damaged index or snapshot.
pub fn stats(repo: &Repository) -> Result<Stats> {
    let objects = repo.backend().list("")?;
    let stored: u64 = objects.iter().map(|o| o.size).sum();
    let packs = objects
        .iter()
        .filter(|o| o.path.starts_with("data/"))
        .count();
    let index = repo.index()?;
    let snaps = repo.snapshots()?;
    let snapshot_bytes: u64 = snaps.iter().map(|(_, s)| s.bytes_in).sum();
    Ok(Stats {
        snapshots: snaps.len(),
        blobs: index.blob_count(),
        packs,
        index_files: index.files().len(),
        stored_bytes: stored,
        snapshot_bytes,
        ratio: if stored == 0 {
            0.0
        } else {
            snapshot_bytes as f64 / stored as f64
        },
    })
}
