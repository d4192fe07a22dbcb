//! How a job tells its caller what it is doing: progress of long steps, notes and
//! warnings. The command line implements [`Events`] with its spinner and stderr lines
//! (quiet under `--json`); a daemon or a web page implements it with its own channel;
//! [`Quiet`] drops everything.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use dbvault_core::backup::BackupSummary;

/// What a front end is told while a job runs. Called from the job's thread; an
/// implementation must not block for long.
pub trait Events: Sync {
    /// A long step starts (`label`, e.g. "backing up shop"); `bytes` counts what it has
    /// read so far. The step ends when the returned value's [`Step::finish`] is called.
    fn step(&self, label: &str, bytes: Arc<AtomicU64>) -> Box<dyn Step>;
    /// [`Events::step`] for a step whose size is known (`total` bytes: a file's, a
    /// database's), so a front end can show a percentage and an estimate.
    fn step_of(&self, label: &str, bytes: Arc<AtomicU64>, total: Option<u64>) -> Box<dyn Step> {
        let _ = total;
        self.step(label, bytes)
    }
    /// Something the user should know that is not a problem (e.g. which snapshot
    /// `latest` is, what a prune is doing).
    fn note(&self, message: &str);
    /// Something that went wrong without stopping the job.
    fn warn(&self, message: &str);
    /// A follower recorded a snapshot (`requests`: to the store, when counted).
    fn snapshot(&self, summary: &BackupSummary, requests: Option<u64>) {
        let _ = (summary, requests);
    }
}

/// A long step in progress.
pub trait Step {
    /// The step ended (done or failed: the job's result says which).
    fn finish(self: Box<Self>);
}

/// Events that go nowhere: for callers that only want the results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

struct NoStep;

impl Step for NoStep {
    fn finish(self: Box<Self>) {}
}

impl Events for Quiet {
    fn step(&self, _: &str, _: Arc<AtomicU64>) -> Box<dyn Step> {
        Box::new(NoStep)
    }
    fn note(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}
