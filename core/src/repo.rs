//! Opening, creating and reading a repository.

use std::sync::{Arc, Mutex};

use crate::backend::cache::CachedBackend;
use crate::backend::Backend;
use crate::crypto::Keys;
use crate::filter::SnapshotFilter;
use crate::index::Index;
use crate::keyfile::{self, KdfParams};
use crate::lock::{Lock, LockHandle, LockKind, LockOptions};
use crate::snapshot::{snapshot_path, Snapshot};
use crate::{Error, Id, Result};

pub use crate::config::{RepoConfig, FORMAT_VERSION};

/// Every listed snapshot id, the readable snapshots (oldest first), the errors of the others.
pub(crate) type SnapshotListing = (Vec<Id>, Vec<(Id, Snapshot)>, Vec<Error>);

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    keys: Keys,
    index: Mutex<Option<Arc<Index>>>,
    lock: Mutex<Option<Lock>>,
    client_state: Option<std::path::PathBuf>,
    /// The master secret (for adding keys) and the key file that opened it.
    master: zeroize::Zeroizing<[u8; 32]>,
    key_path: String,
    progress: crate::progress::Slot,
}

impl Repository {
    /// Creates a repository: one key wrapping a fresh master secret, then `config` (written
    /// last, so a half-made repository is not mistaken for one).
    ///
    /// # Errors
    /// [`Error::RepoExists`] if `config` is present; backend errors.
    pub fn init(
        backend: Arc<dyn Backend>,
        passphrase: &[u8],
        kdf: KdfParams,
        mut config: RepoConfig,
    ) -> Result<Repository> {
        match backend.read("config") {
            Ok(_) => {
                return Err(Error::RepoExists {
                    location: backend.location(),
                })
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        config.chunker.validate()?;
        config.id = Id::random()?;
        let mut master = zeroize::Zeroizing::new([0u8; 32]);
        crate::crypto::fill_random(master.as_mut())?;
        let kf = keyfile::wrap(&master, passphrase, kdf)?;
        let key_path = format!("keys/{}", Id::hash_of(&kf));
        backend.create(&key_path, &kf)?;
        let json = config.sealed_bytes(&master)?;
        backend.create("config", &json)?;
        Ok(Repository {
            backend,
            config,
            keys: Keys::from_master(&master),
            index: Mutex::new(None),
            lock: Mutex::new(None),
            client_state: None,
            master,
            key_path,
            progress: crate::progress::Slot::default(),
        })
    }

    /// Opens a repository with a passphrase. Reads only: nothing in the repository changes.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::WrongPassphrase`], [`Error::UnsupportedVersion`],
    /// [`Error::Corrupt`] for a damaged `config` or key file; backend errors.
    pub fn open(backend: Arc<dyn Backend>, passphrase: &[u8]) -> Result<Repository> {
        Self::open_cached(backend, passphrase, None)
    }

    /// Like [`Repository::open`], with keys, index files and snapshots cached under
    /// `cache/<repository id>` when `cache` is given (see [`crate::backend::cache`]).
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub fn open_cached(
        backend: Arc<dyn Backend>,
        passphrase: &[u8],
        cache: Option<&std::path::Path>,
    ) -> Result<Repository> {
        let raw = match backend.read("config") {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::RepoNotFound {
                    location: backend.location(),
                })
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig::parse(&raw)?;
        let backend: Arc<dyn Backend> = match cache {
            Some(dir) => Arc::new(CachedBackend::new(backend, dir.join(config.id.to_string()))),
            None => backend,
        };
        let keys = backend.list("keys/")?;
        // A key file that cannot be used (absurd KDF parameters, damage) must not lock the
        // others out; it is the answer only when no other key opens.
        let mut unusable = None;
        for k in &keys {
            let bytes = backend.read(&k.path)?;
            // Named by the hash of its content: one that does not open and does not match
            // its name is damaged, which would otherwise read as a wrong passphrase (or as
            // a parse error that hides the cause and the remedy).
            let name = k.path.trim_start_matches("keys/");
            let misnamed = Id::from_hex(name).is_ok_and(|id| id != Id::hash_of(&bytes));
            let damaged_key = |seen: Option<&Error>| {
                let seen = seen
                    .map(|e| format!("; reading it said: {e}"))
                    .unwrap_or_default();
                Error::corrupt(
                    format!("key file {name}"),
                    format!("content does not match its name (no intact key file opens with this passphrase; if this was its key, put back a copy of the file, or use another passphrase `key add` made{seen})"),
                )
            };
            let opened = match keyfile::unwrap(&bytes, passphrase, &k.path) {
                Ok(o) => o,
                Err(e) if e.is_damage() => {
                    unusable.get_or_insert(if misnamed { damaged_key(Some(&e)) } else { e });
                    continue;
                }
                Err(e) => return Err(e),
            };
            if opened.is_none() && misnamed {
                unusable.get_or_insert_with(|| damaged_key(None));
                continue;
            }
            if let Some((master, format)) = opened {
                config.authenticate(&master, format)?;
                let keys = Keys::from_master(&master).for_format(config.version);
                return Ok(Repository {
                    backend,
                    config,
                    keys,
                    index: Mutex::new(None),
                    lock: Mutex::new(None),
                    client_state: None,
                    master,
                    key_path: k.path.clone(),
                    progress: crate::progress::Slot::default(),
                });
            }
        }
        Err(unusable.unwrap_or(Error::WrongPassphrase { keys: keys.len() }))
    }

    /// Keeps this client's memory of the repository (the newest snapshot seen of each
    /// source, see [`crate::history`]) under `dir`, which should be private to the user.
    #[must_use]
    pub fn with_client_state(mut self, dir: std::path::PathBuf) -> Repository {
        self.client_state = Some(dir);
        self
    }

    /// Where this client's memory of the repository is kept, if anywhere.
    pub fn client_state(&self) -> Option<&std::path::Path> {
        self.client_state.as_deref()
    }

    /// The master secret (to wrap it under another passphrase).
    pub(crate) fn master(&self) -> &[u8; 32] {
        &self.master
    }

    /// Where its operations' progress goes.
    pub(crate) fn progress_slot(&self) -> &crate::progress::Slot {
        &self.progress
    }

    /// The key file this handle was opened with (`keys/<id>`).
    pub fn key_path(&self) -> &str {
        &self.key_path
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The working keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The index, loaded on first use.
    ///
    /// # Errors
    /// The index files or packs cannot be listed; backend errors.
    pub fn index(&self) -> Result<Arc<Index>> {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = guard.as_ref() {
            return Ok(i.clone());
        }
        // One damaged index file must not stop every restore: the packs no readable index
        // file names are read from their own trailers (`repair index` makes it lasting).
        let (mut idx, damaged) = Index::load_lenient(self.backend.as_ref(), &self.keys)?;
        if !damaged.is_empty() {
            for (path, e) in &damaged {
                crate::warn::warn(&format!(
                    "index file {path} is damaged ({e}): reading the packs' own trailers instead; `dbvault repair index` rebuilds it"
                ));
            }
            let (found, _) = crate::repair::unindexed_packs(self, &idx)?;
            idx.add_recovered(
                damaged.iter().map(|(p, e)| format!("{p}: {e}")).collect(),
                &found,
            );
        }
        let idx = Arc::new(idx);
        *guard = Some(idx.clone());
        Ok(idx)
    }

    /// Forgets the cached index (after this process wrote index files).
    pub fn invalidate_index(&self) {
        *self.index.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Ids of all snapshots (no decryption).
    ///
    /// # Errors
    /// Backend errors.
    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        for o in self.backend.list("snapshots/")? {
            let name = o.path.trim_start_matches("snapshots/");
            // Foreign files are ignored rather than fatal: `check` reports them.
            if let Ok(id) = Id::from_hex(name) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Loads one snapshot.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if damaged; [`Error::NotFound`] if absent.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let bytes = self.backend.read(&snapshot_path(id))?;
        Snapshot::decode(&self.keys, &bytes, id)
    }

    /// Loads every snapshot, oldest first.
    ///
    /// # Errors
    /// The first damaged or unreadable snapshot.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let (all, damaged) = self.readable_snapshots()?;
        match damaged.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(all),
        }
    }

    /// Every snapshot that can be read, oldest first, and the errors of those that cannot:
    /// one damaged manifest must not hide the others (a restore at 3 a.m. needs them).
    ///
    /// # Errors
    /// Only when the snapshot list itself cannot be read.
    pub fn readable_snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<Error>)> {
        self.listed_snapshots()
            .map(|(_, all, damaged)| (all, damaged))
    }

    /// As [`Repository::readable_snapshots`], with every listed id (damaged ones too) from
    /// the same listing.
    pub(crate) fn listed_snapshots(&self) -> Result<SnapshotListing> {
        use rayon::prelude::*;
        let ids = self.snapshot_ids()?;
        let loaded: Vec<(Id, Result<Snapshot>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_snapshot(id)))
            .collect();
        let mut all = Vec::new();
        let mut damaged = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(s) => all.push((id, s)),
                Err(e) => damaged.push(e),
            }
        }
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        order_ties(&mut all);
        Ok((ids, all, damaged))
    }

    /// Resolves `latest`, a full id or a unique id prefix. `name` restricts `latest` to
    /// one source.
    ///
    /// `latest` skips snapshots whose manifest is damaged, with a warning, and refuses
    /// when the damaged one is the newest of the source this client saw (as it refuses
    /// when that one vanished).
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], or a damaged snapshot
    /// named by id.
    pub fn find_snapshot(&self, selector: &str, name: Option<&str>) -> Result<(Id, Snapshot)> {
        let filter = SnapshotFilter {
            name: name.map(str::to_string),
            ..SnapshotFilter::default()
        };
        self.find_snapshot_in(selector, &filter)
    }

    /// As [`Repository::find_snapshot`], `latest` being the newest snapshot that `filter`
    /// matches (its source name, host and tags); an id names its snapshot whatever the
    /// filter says.
    ///
    /// # Errors
    /// As [`Repository::find_snapshot`].
    pub fn find_snapshot_in(
        &self,
        selector: &str,
        filter: &SnapshotFilter,
    ) -> Result<(Id, Snapshot)> {
        let name = filter.name.as_deref();
        if selector == "latest" {
            // Damaged manifests are skipped here (`check` reports them): the newest
            // readable snapshot is still the one to restore. A newer one that vanished is
            // not: `latest` would silently be older data.
            let audit = self.audit(false)?;
            if let Some(m) = audit
                .missing
                .iter()
                .find(|m| name.is_none_or(|n| m.name == n))
            {
                return Err(Error::SnapshotVanished {
                    detail: m.to_string(),
                });
            }
            if let Some(m) = audit
                .damaged_newest
                .iter()
                .find(|m| name.is_none_or(|n| m.name == n))
            {
                return Err(Error::NewestDamaged {
                    detail: format!(
                        "snapshot {} of {} from {}, the newest this client saw, is damaged",
                        m.id.short(),
                        m.name,
                        m.time.format("%Y-%m-%d %H:%M:%S %:z")
                    ),
                });
            }
            // A damaged manifest names no source: it may be the newest of this one.
            for e in &audit.damaged {
                crate::warn::warn(&format!(
                    "{e}: if it was the newest of its source, `latest` is an older one"
                ));
            }
            if name.is_none() {
                // The newest of several sources is rarely what was meant (an SQLite file
                // where a dump was wanted): ask.
                let mut names: Vec<&str> = audit
                    .snapshots
                    .iter()
                    .filter(|(_, s)| filter.matches(s))
                    .map(|(_, s)| s.name.as_str())
                    .collect();
                names.sort_unstable();
                names.dedup();
                if names.len() > 1 {
                    return Err(Error::LatestOfWhich {
                        count: names.len(),
                        names: names.join(", "),
                    });
                }
            }
            return audit
                .snapshots
                .into_iter()
                .rfind(|(_, s)| filter.matches(s))
                .ok_or_else(|| Error::SnapshotNotFound {
                    selector: match (name, filter.is_empty()) {
                        (_, false) => format!("latest ({})", filter.describe()),
                        (Some(n), _) => format!("latest (name {n})"),
                        (None, _) => "latest (the repository has no snapshots)".into(),
                    },
                });
        }
        let sel = selector.to_ascii_lowercase();
        if sel.is_empty() || !sel.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound {
                selector: selector.to_string(),
            });
        }
        let matches: Vec<Id> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&sel))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound {
                selector: selector.to_string(),
            }),
            1 => {
                let snap = self.load_snapshot(&matches[0])?;
                // An id with `--tag`/`--host` that it does not have: the user meant
                // another snapshot (the name is not checked: it says which source's WAL).
                let others = SnapshotFilter {
                    name: None,
                    ..filter.clone()
                };
                if !others.matches(&snap) {
                    return Err(Error::SnapshotNotFound {
                        selector: format!("{selector} with {}", others.describe()),
                    });
                }
                Ok((matches[0], snap))
            }
            n => Err(Error::AmbiguousSnapshot {
                prefix: selector.to_string(),
                count: n,
                // Each shown long enough to tell it from the others (and all of them
                // when few, so "matches 4" lists 4).
                examples: {
                    let len = (sel.len() + 4).max(8);
                    let mut shown: Vec<String> = matches
                        .iter()
                        .take(10)
                        .map(|id| id.to_hex()[..len.min(64)].to_string())
                        .collect();
                    if n > shown.len() {
                        shown.push(format!("and {} more", n - shown.len()));
                    }
                    shown.join(", ")
                },
            }),
        }
    }

    /// Takes a repository lock for the rest of this handle's life (or until
    /// [`Repository::unlock`]), replacing one already held. Take it before loading the
    /// index: a backup must not dedup against an index a prune is rewriting.
    ///
    /// # Errors
    /// [`Error::Locked`] when a conflicting holder stays past `opts.wait`; backend errors.
    pub fn lock(&self, kind: LockKind, opts: &LockOptions) -> Result<()> {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        let l = Lock::acquire(self.backend.clone(), self.keys.clone(), kind, opts)?;
        *guard = Some(l);
        // Whatever was cached before may predate a prune.
        self.invalidate_index();
        Ok(())
    }

    /// A handle to check the held lock from another thread (the backup's writer checks it
    /// before each index file).
    ///
    /// # Errors
    /// [`Error::NotLocked`].
    pub fn lock_handle(&self, operation: &str) -> Result<LockHandle> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .map(Lock::handle)
            .ok_or_else(|| Error::NotLocked {
                operation: operation.to_string(),
                kind: "a shared".into(),
            })
    }

    /// Releases the lock held, if any.
    pub fn unlock(&self) {
        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Checks that this handle holds a lock of at least `kind` and still owns it; call
    /// before committing anything.
    ///
    /// # Errors
    /// [`Error::NotLocked`], [`Error::LockLost`].
    pub fn ensure_lock(&self, kind: LockKind, operation: &str) -> Result<()> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(l) if kind == LockKind::Shared || l.kind() == LockKind::Exclusive => {
                l.ensure_held()
            }
            _ => Err(Error::NotLocked {
                operation: operation.to_string(),
                kind: match kind {
                    LockKind::Shared => "a shared".into(),
                    LockKind::Exclusive => "an exclusive".into(),
                },
            }),
        }
    }

    /// Stores a snapshot manifest (the last write of a backup). The handle must hold a
    /// lock that is still its own: if a prune took it over while this process was stalled,
    /// the data the snapshot names may be gone.
    ///
    /// # Errors
    /// [`Error::NotLocked`], [`Error::LockLost`]; backend errors.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<(Id, u64)> {
        self.ensure_lock(LockKind::Shared, "writing a snapshot")?;
        let (id, bytes) = snap.encode(&self.keys)?;
        self.backend.create_unique(&snapshot_path(&id), &bytes)?;
        self.remember(id, snap);
        Ok((id, bytes.len() as u64))
    }

    /// Fails at once, before any work, when this host may not delete from the store: an
    /// append-only client, or credentials the store refuses deletes to. Probes with the
    /// deletion of an object that does not exist, so nothing changes either way.
    ///
    /// # Errors
    /// [`Error::NeedsDeleteRights`] naming `operation`; backend errors.
    pub fn ensure_delete_rights(&self, operation: &str) -> Result<()> {
        match self.backend.remove("snapshots/.dbvault-delete-probe") {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e)
                if matches!(e, Error::DeleteRefused { .. })
                    || e.storage_kind() == Some(crate::error::StorageKind::Permission) =>
            {
                Err(Error::NeedsDeleteRights {
                    operation: operation.to_string(),
                    cause: Box::new(e),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Removes snapshot manifests (their data stays until `prune`). Needs a lock.
    ///
    /// # Errors
    /// [`Error::NotLocked`], [`Error::LockLost`]; backend errors.
    pub fn forget_snapshots(&self, ids: &[Id]) -> Result<()> {
        self.ensure_lock(LockKind::Shared, "forget")?;
        if ids.is_empty() {
            return Ok(());
        }
        self.ensure_delete_rights("forget")?;
        // The record first: a snapshot gone without one is reported as deleted behind
        // dbvault's back.
        self.record_forget(ids)?;
        for id in ids {
            self.backend.remove(&snapshot_path(id))?;
        }
        Ok(())
    }
}

/// Snapshots of the same time (two archives pg_dump made within a second, imported with
/// their own times) in the order they were taken: one whose parent is another of them
/// comes after it, so `latest` is the one backed up last.
fn order_ties(all: &mut [(Id, Snapshot)]) {
    let mut start = 0;
    while start < all.len() {
        let t = all[start].1.time;
        let end = start + all[start..].iter().take_while(|(_, s)| s.time == t).count();
        if end - start > 1 {
            let run = &mut all[start..end];
            let ids: std::collections::HashMap<Id, Option<Id>> = run
                .iter()
                .map(|(id, s)| (*id, s.parent.as_ref().map(|p| p.id)))
                .collect();
            let depth = |id: Id| {
                let mut d = 0usize;
                let mut cur = ids.get(&id).copied().flatten();
                while let Some(p) = cur.filter(|p| ids.contains_key(p)) {
                    d += 1;
                    if d > ids.len() {
                        break;
                    }
                    cur = ids.get(&p).copied().flatten();
                }
                d
            };
            run.sort_by_cached_key(|(id, _)| (depth(*id), *id));
        }
        start = end;
    }
}
