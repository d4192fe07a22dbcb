//! Progress of long operations, for whoever shows it: a restore's parts, a check's packs,
//! a copy's snapshots, a prune's repacking. The engine counts into [`Task`]s; a front end
//! that wants to show them installs a [`ProgressSink`] on the repository and reads the
//! counters on its own schedule (the engine never waits on a display). Without a sink a
//! task is a counter nobody reads.
//!
//! An operation made of steps (a whole restore: many parts) opens an *overall* task with
//! [`Repository::overall_task`]; the tasks opened inside it count into it too, so a display
//! can show one percentage and estimate for the whole and a line per part in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Repository;

/// What a task counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (of plaintext, unless the label says otherwise).
    Bytes,
    /// Things: packs, snapshots, files.
    Items,
}

/// One long operation's progress.
#[derive(Debug)]
pub struct Task {
    /// What it is, for people ("restoring public.orders").
    pub label: String,
    /// How much there is to do, when known.
    pub total: Option<u64>,
    /// What the counts are.
    pub unit: Unit,
    done: Arc<AtomicU64>,
    finished: AtomicBool,
    parent: Option<Arc<Task>>,
}

impl Task {
    /// Done so far.
    #[must_use]
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Whether it ended (done or failed: the operation's result says which).
    #[must_use]
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Whether it is a part of a larger task (shown under it).
    #[must_use]
    pub fn is_child(&self) -> bool {
        self.parent.is_some()
    }

    /// Whether it is all of its overall task (one part: the same numbers twice).
    #[must_use]
    pub fn is_whole_of_parent(&self) -> bool {
        self.parent
            .as_ref()
            .is_some_and(|p| p.total.is_some() && p.total == self.total)
    }
}

/// Receives each task as it starts. Called on the operation's thread: it must not block.
pub trait ProgressSink: Send + Sync {
    /// A task started; it is finished when [`Task::finished`] says so.
    fn started(&self, task: Arc<Task>);
}

/// A running task: count into it; it finishes when dropped.
#[derive(Debug)]
pub struct TaskGuard {
    task: Arc<Task>,
    overall: Option<Arc<Mutex<Option<Arc<Task>>>>>,
}

impl TaskGuard {
    /// A task of no repository over a counter already counting (a backup's bytes read):
    /// the caller shows it itself.
    #[must_use]
    pub fn standalone(label: &str, total: Option<u64>, done: Arc<AtomicU64>) -> TaskGuard {
        TaskGuard {
            task: Arc::new(Task {
                label: label.to_string(),
                total,
                unit: Unit::Bytes,
                done,
                finished: AtomicBool::new(false),
                parent: None,
            }),
            overall: None,
        }
    }

    /// Counts `n` more done (and into the overall task it belongs to).
    pub fn inc(&self, n: u64) {
        self.task.done.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = &self.task.parent {
            p.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The task.
    #[must_use]
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.task.finished.store(true, Ordering::Relaxed);
        if let Some(slot) = &self.overall {
            if let Ok(mut g) = slot.lock() {
                *g = None;
            }
        }
    }
}

/// The repository's progress state: its sink and the overall task open, if any.
#[derive(Default)]
pub(crate) struct Slot {
    sink: Mutex<Option<Arc<dyn ProgressSink>>>,
    overall: Arc<Mutex<Option<Arc<Task>>>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("progress::Slot")
    }
}

impl Repository {
    /// Shows this repository's operations' progress through `sink` from now on.
    pub fn set_progress(&self, sink: Arc<dyn ProgressSink>) {
        if let Ok(mut g) = self.progress_slot().sink.lock() {
            *g = Some(sink);
        }
    }

    /// Starts a task (inside the overall task, if one is open).
    #[must_use]
    pub fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> TaskGuard {
        let parent = self
            .progress_slot()
            .overall
            .lock()
            .ok()
            .and_then(|g| g.clone());
        self.start_task(label, total, unit, parent, None)
    }

    /// Starts an operation's overall task: the tasks started until it is dropped count
    /// into it. One at a time per repository handle; a second replaces the first.
    #[must_use]
    pub fn overall_task(&self, label: &str, total: Option<u64>, unit: Unit) -> TaskGuard {
        let slot = self.progress_slot().overall.clone();
        let g = self.start_task(label, total, unit, None, Some(slot.clone()));
        if let Ok(mut s) = slot.lock() {
            *s = Some(g.task.clone());
        }
        g
    }

    fn start_task(
        &self,
        label: &str,
        total: Option<u64>,
        unit: Unit,
        parent: Option<Arc<Task>>,
        overall: Option<Arc<Mutex<Option<Arc<Task>>>>>,
    ) -> TaskGuard {
        let task = Arc::new(Task {
            label: label.to_string(),
            total,
            unit,
            done: Arc::default(),
            finished: AtomicBool::new(false),
            parent,
        });
        self.announce(&task);
        TaskGuard { task, overall }
    }

    fn announce(&self, task: &Arc<Task>) {
        let sink = self
            .progress_slot()
            .sink
            .lock()
            .ok()
            .and_then(|g| g.clone());
        if let Some(s) = sink {
            s.started(task.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_count_into_the_overall_one_and_finish_when_dropped() {
        let slot = Slot::default();
        let overall = Arc::new(Task {
            label: "all".into(),
            total: Some(10),
            unit: Unit::Bytes,
            done: Arc::default(),
            finished: AtomicBool::new(false),
            parent: None,
        });
        *slot.overall.lock().expect("lock") = Some(overall.clone());
        let child = TaskGuard {
            task: Arc::new(Task {
                label: "one".into(),
                total: Some(4),
                unit: Unit::Bytes,
                done: Arc::default(),
                finished: AtomicBool::new(false),
                parent: Some(overall.clone()),
            }),
            overall: None,
        };
        child.inc(3);
        let t = child.task().clone();
        drop(child);
        assert_eq!((t.done(), t.finished()), (3, true));
        assert_eq!((overall.done(), overall.finished()), (3, false));
    }
}
