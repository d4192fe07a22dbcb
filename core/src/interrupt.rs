//! What an interrupted command must not leave behind: its repository locks and its temp
//! files. Each is registered while it exists; a front end that catches SIGINT/SIGTERM
//! calls [`clean_up`] before it exits, so the next command neither waits on the lock of a
//! process that is gone nor finds debris (a lock would otherwise only be taken over, as
//! stale, once its process is seen gone).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

type Release = Box<dyn Fn() + Send>;

static LOCKS: Mutex<BTreeMap<u64, Release>> = Mutex::new(BTreeMap::new());
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static GROUPS: Mutex<Vec<i64>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Creates a lock object with `create` and registers `release` for it, both under the
/// registry's lock, which [`clean_up`] keeps until the process exits: a lock object
/// written at the moment of a signal is either released by it or never written.
pub(crate) fn create_lock<T>(
    create: impl FnOnce() -> crate::Result<T>,
    release: impl FnOnce(&T) -> Release,
) -> crate::Result<(T, u64)> {
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    let made = create()?;
    let t = NEXT.fetch_add(1, Ordering::Relaxed);
    locks.insert(t, release(&made));
    Ok((made, t))
}

/// Replaces how the lock of `token` is released (once its holder knows more).
pub(crate) fn replace_lock(token: u64, release: Release) {
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token, release);
}

/// The lock of `token` was released (or lost) by its holder: call it after the object
/// is removed, so a signal in between still removes it.
pub(crate) fn unregister_lock(token: u64) {
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&token);
}

/// Creates a temp file at `path` with `create` and registers it, both under the
/// registry's lock: [`clean_up`] keeps that lock until the process exits, so no temp file
/// is created behind its back (one created at that moment is either seen by it or never
/// made).
pub(crate) fn create_temp<T>(
    path: PathBuf,
    create: impl FnOnce(&std::path::Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut temps = TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    let made = create(&path)?;
    temps.push(path);
    Ok(made)
}

/// The temp file at `path` is gone (renamed into place or removed).
pub(crate) fn unregister_temp(path: &std::path::Path) {
    TEMPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p != path);
}

/// A child process group (a `--command` producer and its children) to stop if this
/// process is interrupted: without it, SIGTERM to dbvault alone would leave the producer
/// running (a `pg_dump` holding its connection) with nobody reading its output.
/// Unregistered when dropped (after the child was waited for).
pub struct ChildGroup(i64);

impl ChildGroup {
    /// Registers child `pid`; with `leads_group`, the process group it leads (spawned
    /// with `process_group(0)`), so that its own children stop too.
    pub fn register(pid: u32, leads_group: bool) -> ChildGroup {
        let target = if leads_group {
            -i64::from(pid)
        } else {
            i64::from(pid)
        };
        GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(target);
        ChildGroup(target)
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.0);
    }
}

/// What [`clean_up`] removed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cleaned {
    /// Repository locks released.
    pub locks: usize,
    /// Temp files removed.
    pub temps: usize,
    /// Child process groups stopped.
    pub children: usize,
}

/// Releases every registered lock and removes every registered temp file: for a process
/// about to exit on a signal (it keeps both registries locked: call it once, then exit).
/// Safe to call from any thread; best effort.
pub fn clean_up() -> Cleaned {
    // Locks first, then temps: writing a lock object may make a temp file, so that is
    // the order everything else takes them in. Both are held until the process exits: no
    // lock object or temp file is made after this look.
    let mut locks_guard = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    let locks = std::mem::take(&mut *locks_guard);
    std::mem::forget(locks_guard);
    let mut guard = TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    let temps: Vec<PathBuf> = std::mem::take(&mut *guard);
    std::mem::forget(guard);
    let mut c = Cleaned::default();
    for g in std::mem::take(&mut *GROUPS.lock().unwrap_or_else(|p| p.into_inner())) {
        // SAFETY: kill(2) signals a child (or with a negative pid its process group); no
        // memory is touched.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(g as libc::pid_t, libc::SIGTERM) };
        if sent == 0 {
            c.children += 1;
        }
    }
    for t in temps {
        if std::fs::remove_file(&t).is_ok() {
            c.temps += 1;
        }
    }
    for (_, release) in locks {
        release();
        c.locks += 1;
    }
    c
}
