//! Repository locks: shared (backup, restore, check, forget) and exclusive (prune).
//!
//! A lock is an encrypted object `locks/<random id>` naming its kind, command, host and
//! process. Taking one: write ours, then list the others; if a conflicting live one exists,
//! remove ours and wait (or give up after the caller's wait). Because everyone writes before
//! listing, two racing lockers always see each other; at worst both back off and retry after
//! a random pause.
//!
//! A held lock is refreshed in the background (a new object, then the old one removed) every
//! sixth of the staleness limit. A lock is **stale**, and is taken over with a message, when
//! its process is gone (same host: `/proc/<pid>` is absent or belongs to a newer process) or
//! it was not refreshed for the staleness limit (30 minutes: a crashed host, a hung process).
//! So no lock ever needs removing by hand.
//!
//! Taking over a lock whose holder is only stalled (suspended, cut off from storage) is safe
//! because a holder checks its lock with [`LockHandle::ensure_held`] before every step that
//! commits something (an index file, a snapshot, a prune deletion): it must still exist and
//! have been refreshed within a third of the limit; and a holder that finds it missed its
//! refreshes for half the limit gives the lock up instead of refreshing it. A taker-over
//! needs the whole limit to pass without a refresh, so it and a stalled holder never both
//! act. Clocks of hosts sharing a repository are assumed to agree within a few minutes;
//! both the monotonic and the wall clock count (a suspended laptop's monotonic clock stops).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::crypto::Keys;
use crate::{Error, Result};

mod info;
pub use info::LockInfo;
use info::{decode, write_lock};

const AAD: &[u8] = b"dbvault lock";
/// Default staleness limit.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// What a lock allows others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LockKind {
    /// Many holders at once (backup, restore, check, forget).
    Shared,
    /// One holder, nobody else (prune).
    Exclusive,
}

/// How to take a lock.
#[derive(Clone)]
pub struct LockOptions {
    /// The command, for others' messages (`backup`, `prune`).
    pub command: String,
    /// How long to wait for a conflicting lock to go.
    pub wait: Duration,
    /// A lock not refreshed for this long is stale ([`STALE_AFTER`] unless testing).
    pub stale_after: Duration,
    /// Called with one line when waiting starts and when a stale lock is taken over.
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
}

impl LockOptions {
    /// Options for `command` with the default staleness limit and no messages.
    pub fn new(command: &str, wait: Duration) -> LockOptions {
        LockOptions {
            command: command.to_string(),
            wait,
            stale_after: STALE_AFTER,
            notify: Arc::new(|_| {}),
        }
    }
}

struct State {
    path: String,
    info: LockInfo,
    last_refresh: Instant,
    last_refresh_wall: DateTime<Utc>,
    /// When the lock object was last seen in place (written, refreshed or looked at).
    seen: Instant,
    lost: Option<String>,
    stop: bool,
}

impl State {
    /// Time since the last successful refresh, by whichever clock says longer.
    fn since_refresh(&self) -> Duration {
        let wall = Utc::now()
            .signed_duration_since(self.last_refresh_wall)
            .to_std()
            .unwrap_or_default();
        self.last_refresh.elapsed().max(wall)
    }
}

struct Shared {
    backend: Arc<dyn Backend>,
    keys: Keys,
    stale_after: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

/// A held lock. Dropping it stops the refresher and removes the lock object.
pub struct Lock {
    kind: LockKind,
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
    /// Its registration with [`crate::interrupt`].
    token: u64,
}

/// A cheap handle for checking, from any thread, that a [`Lock`] is still held.
#[derive(Clone)]
pub struct LockHandle(Arc<Shared>);

impl Lock {
    /// Takes a lock, waiting up to `opts.wait` for conflicting holders to go and taking
    /// over stale ones.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder after the wait; backend errors.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        keys: Keys,
        kind: LockKind,
        opts: &LockOptions,
    ) -> Result<Lock> {
        let started = Instant::now();
        let mut told = false;
        loop {
            let info = LockInfo::mine(kind, &opts.command);
            let (path, token) = crate::interrupt::create_lock(
                || write_lock(backend.as_ref(), &keys, &info),
                |path| {
                    let (b, p) = (backend.clone(), path.clone());
                    Box::new(move || {
                        let _ = b.remove(&p);
                    })
                },
            )?;
            match find_blocker(backend.as_ref(), &keys, kind, &path, opts) {
                Ok(None) => return Ok(Lock::held(backend, keys, kind, path, info, opts, token)),
                Ok(Some(holder)) => {
                    backend.remove(&path)?;
                    crate::interrupt::unregister_lock(token);
                    let waited = started.elapsed();
                    if waited >= opts.wait {
                        return Err(Error::Locked {
                            holder: holder.describe(),
                            waited_secs: waited.as_secs(),
                        });
                    }
                    if !told {
                        (opts.notify)(&format!(
                            "waiting for the repository: in use by {}",
                            holder.describe()
                        ));
                        told = true;
                    }
                    let mut r = [0u8; 2];
                    crate::crypto::fill_random(&mut r)?;
                    let pause = Duration::from_millis(200 + u64::from(u16::from_le_bytes(r)) % 800);
                    std::thread::sleep(pause.min(opts.wait.saturating_sub(waited)));
                }
                Err(e) => {
                    let _ = backend.remove(&path);
                    crate::interrupt::unregister_lock(token);
                    return Err(e);
                }
            }
        }
    }

    fn held(
        backend: Arc<dyn Backend>,
        keys: Keys,
        kind: LockKind,
        path: String,
        info: LockInfo,
        opts: &LockOptions,
        token: u64,
    ) -> Lock {
        let shared = Arc::new(Shared {
            backend,
            keys,
            stale_after: opts.stale_after,
            state: Mutex::new(State {
                path,
                info,
                last_refresh: Instant::now(),
                last_refresh_wall: Utc::now(),
                seen: Instant::now(),
                lost: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        // On a signal, the front end releases it (crate::interrupt) before exiting.
        let s3 = shared.clone();
        crate::interrupt::replace_lock(
            token,
            Box::new(move || {
                let st = s3.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.lost.is_none() {
                    let _ = s3.backend.remove(&st.path);
                }
            }),
        );
        let s2 = shared.clone();
        let refresher = std::thread::Builder::new()
            .name("dbvault-lock".into())
            .spawn(move || refresh_loop(&s2))
            .ok();
        Lock {
            kind,
            shared,
            refresher,
            token,
        }
    }

    /// The kind held.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// A handle for [`LockHandle::ensure_held`] from other threads.
    pub fn handle(&self) -> LockHandle {
        LockHandle(self.shared.clone())
    }

    /// See [`LockHandle::ensure_held`].
    ///
    /// # Errors
    /// [`Error::LockLost`] when it was taken over or could not be refreshed.
    pub fn ensure_held(&self) -> Result<()> {
        self.handle().ensure_held()
    }
}

impl LockHandle {
    /// Checks that the lock is still ours: its object exists and it was refreshed within
    /// a third of the staleness limit. Call it right before committing anything.
    ///
    /// # Errors
    /// [`Error::LockLost`] when it was taken over or could not be refreshed.
    pub fn ensure_held(&self) -> Result<()> {
        let sh = &self.0;
        let st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &st.lost {
            return Err(Error::LockLost {
                reason: why.clone(),
            });
        }
        let since = st.since_refresh();
        if since > sh.stale_after / 3 {
            return Err(Error::LockLost {
                reason: format!("it was not refreshed for {} s", since.as_secs()),
            });
        }
        // Seen in place within the last second (written, refreshed or looked at), it is
        // still ours: a look now would leave the same race open between it and the commit
        // that follows. Saves a request per commit in short backups. Never for an
        // exclusive lock: what it guards deletes, and deserves the look every time.
        if st.info.kind == LockKind::Shared
            && st.seen.elapsed() < (sh.stale_after / 30).min(Duration::from_secs(1))
        {
            return Ok(());
        }
        let path = st.path.clone();
        drop(st);
        match sh.backend.size(&path) {
            Ok(_) => {
                sh.state.lock().unwrap_or_else(|p| p.into_inner()).seen = Instant::now();
                Ok(())
            }
            Err(Error::NotFound { .. }) => Err(Error::LockLost {
                reason: "another process took it over while this one was stalled".into(),
            }),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.lost.is_none() {
            let _ = self.shared.backend.remove(&st.path);
        }
        drop(st);
        crate::interrupt::unregister_lock(self.token);
    }
}

/// The first live lock that conflicts with taking `kind`; stale and damaged ones are
/// removed on the way (with a message).
fn find_blocker(
    backend: &dyn Backend,
    keys: &Keys,
    kind: LockKind,
    own: &str,
    opts: &LockOptions,
) -> Result<Option<LockInfo>> {
    for o in backend.list("locks/")? {
        if o.path == own {
            continue;
        }
        let info = match backend.read(&o.path) {
            Ok(b) => decode(keys, &b, &o.path),
            // Released (or refreshed) since the listing.
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                (opts.notify)(&format!("removing a damaged lock file: {e}"));
                backend.remove(&o.path)?;
                continue;
            }
        };
        if kind == LockKind::Shared && info.kind == LockKind::Shared {
            continue;
        }
        if let Some(why) = info.stale(opts.stale_after) {
            (opts.notify)(&format!(
                "taking over a stale lock: {} ({why})",
                info.describe()
            ));
            backend.remove(&o.path)?;
            continue;
        }
        return Ok(Some(info));
    }
    Ok(None)
}

fn refresh_loop(sh: &Shared) {
    let every = (sh.stale_after / 6).max(Duration::from_millis(50));
    let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (guard, _) = sh
            .wake
            .wait_timeout_while(st, every, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        st = guard;
        if st.stop || st.lost.is_some() {
            return;
        }
        let gap = st.since_refresh();
        if gap > sh.stale_after / 2 {
            // Stalled so long that another process may already count the lock as stale:
            // give it up rather than race a taker-over.
            st.lost = Some(format!(
                "this process was stalled for {} s without refreshing it",
                gap.as_secs()
            ));
            return;
        }
        let old = st.path.clone();
        let mut info = st.info.clone();
        drop(st);
        let outcome = refresh_once(sh, &old, &mut info);
        st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(Some((path, token))) => {
                st.path = path;
                st.info = info;
                st.last_refresh = Instant::now();
                st.last_refresh_wall = Utc::now();
                st.seen = Instant::now();
                // Never take the registry while holding the state: its clean-up takes
                // them the other way round.
                drop(st);
                crate::interrupt::unregister_lock(token);
                st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
            }
            Ok(None) => {
                st.lost = Some("another process took it over while this one was stalled".into())
            }
            // Storage trouble: try again next round; `ensure_held` fails if it lasts.
            Err(_) => {}
        }
    }
}

/// Replaces the lock object with a fresh one; `None` if ours was taken over meanwhile.
/// The new one comes with the registration to drop once the state names it.
fn refresh_once(sh: &Shared, old: &str, info: &mut LockInfo) -> Result<Option<(String, u64)>> {
    match sh.backend.size(old) {
        Ok(_) => {}
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    info.refreshed = Utc::now();
    // Registered on its own until the state names it, so a signal meanwhile removes it.
    let (path, token) = crate::interrupt::create_lock(
        || write_lock(sh.backend.as_ref(), &sh.keys, info),
        |path| {
            let (b, p) = (sh.backend.clone(), path.clone());
            Box::new(move || {
                let _ = b.remove(&p);
            })
        },
    )?;
    let gone = |r: Result<()>| {
        crate::interrupt::unregister_lock(token);
        r
    };
    // Taken over while the new one was written? Then the new one must not stand.
    match sh.backend.size(old) {
        Ok(_) => {}
        Err(Error::NotFound { .. }) => {
            gone(sh.backend.remove(&path))?;
            return Ok(None);
        }
        Err(e) => {
            let _ = gone(sh.backend.remove(&path));
            return Err(e);
        }
    }
    if let Err(e) = sh.backend.remove(old) {
        let _ = gone(sh.backend.remove(&path));
        return Err(e);
    }
    Ok(Some((path, token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    fn setup() -> (tempfile::TempDir, Arc<dyn Backend>, Keys) {
        let dir = tempfile::tempdir().expect("tempdir");
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        (dir, b, Keys::from_master(&[7u8; 32]))
    }

    fn opts(wait_ms: u64) -> LockOptions {
        LockOptions::new("test", Duration::from_millis(wait_ms))
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_waits() {
        let (_d, b, k) = setup();
        let a = Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &opts(0)).expect("a");
        let s = Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &opts(0)).expect("b");
        let e = Lock::acquire(b.clone(), k.clone(), LockKind::Exclusive, &opts(300));
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("in use: test (shared lock)"), "{msg}");
        drop((a, s));
        let x = Lock::acquire(b.clone(), k.clone(), LockKind::Exclusive, &opts(0)).expect("x");
        assert!(Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &opts(0)).is_err());
        x.ensure_held().expect("held");
        drop(x);
        assert!(b.list("locks/").expect("list").is_empty());
    }

    #[test]
    fn dead_process_lock_is_taken_over() {
        let (_d, b, k) = setup();
        let mut info = LockInfo::mine(LockKind::Exclusive, "prune");
        // A process start time nobody has: the holder is gone.
        info.pid_start = Some(u64::MAX);
        write_lock(b.as_ref(), &k, &info).expect("write");
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = said.clone();
        let mut o = opts(0);
        o.notify = Arc::new(move |m| s2.lock().expect("m").push(m.to_string()));
        let l = Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &o).expect("take over");
        let said = said.lock().expect("m").join("\n");
        assert!(said.contains("taking over a stale lock: prune"), "{said}");
        assert!(said.contains("is gone"), "{said}");
        drop(l);
    }

    #[test]
    fn refresh_keeps_it_alive_and_takeover_is_noticed() {
        let (_d, b, k) = setup();
        let mut o = opts(0);
        o.stale_after = Duration::from_millis(600);
        let l = Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &o).expect("lock");
        std::thread::sleep(Duration::from_millis(900));
        l.ensure_held().expect("refreshed in the background");
        drop(l);
        o.stale_after = Duration::from_secs(3);
        let l = Lock::acquire(b.clone(), k.clone(), LockKind::Shared, &o).expect("lock");
        // Someone removes it (a taker-over): the holder notices before committing, once it
        // last saw it longer ago than stale/30 (100 ms here; before that it cannot be stale).
        for f in b.list("locks/").expect("list") {
            b.remove(&f.path).expect("rm");
        }
        std::thread::sleep(Duration::from_millis(150));
        let e = l.ensure_held().expect_err("lost");
        assert!(e.to_string().contains("lost the repository lock"), "{e}");
    }
}
