//! What a night (`run`) did, as its caller and the metrics read it.

use serde::Serialize;

/// What a night did.
#[derive(Clone, Debug, Serialize)]
pub struct NightReport {
    /// Every source backed up and every step succeeded.
    pub ok: bool,
    /// Wall time.
    pub seconds: f64,
    /// Each source's outcome, in the file's order per repository.
    pub sources: Vec<SourceResult>,
    /// Each maintenance step's outcome.
    pub maintenance: Vec<Step>,
}

/// One source's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct SourceResult {
    /// Source name.
    pub name: String,
    /// Repository name.
    pub repository: String,
    /// Backed up, retention applied, WAL archiving not stalled.
    pub ok: bool,
    /// The new snapshot.
    pub snapshot_id: Option<String>,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes added to the repository.
    pub bytes_added: u64,
    /// Wall time of the backup.
    pub seconds: f64,
    /// Snapshots retention forgot.
    pub forgotten: usize,
    /// Newest snapshot time (unix seconds), for the metrics.
    pub last_success: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Physical sources: the WAL archive.
    pub wal: Option<crate::wal_health::WalHealth>,
}

/// One maintenance step's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Repository name (`-` for the metrics).
    pub repository: String,
    /// `open`, `copy to NAME`, `retention`, `prune`, `check`, `metrics`.
    pub step: String,
    /// It succeeded.
    pub ok: bool,
    /// What it did, or why it failed.
    pub detail: String,
}
