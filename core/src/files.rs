//! Files kept beside the snapshots under names the caller chooses (PostgreSQL's WAL
//! segments): the bytes are stored like a snapshot's part (chunked, deduplicated,
//! compressed, encrypted, in packs), and a small sealed record at
//! `files/<namespace>/<name>` names the part.
//!
//! - The name is in the clear in the path, so listing a namespace needs no reads (a WAL
//!   segment's name tells its timeline and position, nothing of its content); the record
//!   repeats namespace and name inside the seal, so a record moved to another path is
//!   refused.
//! - Records are create-only: storing a name again with the same bytes succeeds without
//!   writing; with other bytes it is [`Error::Conflict`] and the stored file is untouched.
//! - Write order: packs and index first, the record last, so a record never names data
//!   that is not durably stored; a crash before the record leaves only unreferenced packs.
//! - Prune keeps every blob a record needs, and check walks records as it walks snapshots.

use std::io::Read;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::input::{Chunking, PartInput};
use crate::snapshot::{Part, SourceInfo};
use crate::{Error, Id, Repository, Result, Snapshot};

const AAD: &[u8] = b"dbvault file";
const ROOT: &str = "files/";
/// WAL segments are 16 MiB by default: 16 chunks, each compressed on its own (as well as
/// the whole segment at once, within 1%).
const CHUNK: u32 = 1 << 20;
/// zstd level: files are written once and compress a quarter better at 6 than at 1 (a
/// 16 MiB WAL segment of pgbench: 4.2 MB at 1, 3.6 MB at 3, 3.1 MB at 6), 0.16 s each.
const LEVEL: i32 = 6;

/// A stored file's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// Its namespace (e.g. `wal-<system id>`).
    pub namespace: String,
    /// Its name within it.
    pub name: String,
    /// When it was stored.
    pub time: DateTime<FixedOffset>,
    /// Its bytes.
    pub part: Part,
}

/// What [`Repository::put_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored now; this many bytes were added to the repository.
    New {
        /// Bytes added (packs, index, record).
        bytes_added: u64,
    },
    /// The same bytes were already stored under this name.
    Same,
}

fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {s:?}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// The object path of a record.
pub fn file_path(namespace: &str, name: &str) -> String {
    format!("{ROOT}{namespace}/{name}")
}

impl FileRecord {
    fn encode(&self, keys: &crate::crypto::Keys) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Invalid(e.to_string()))?;
        keys.seal(&json, AAD)
    }

    fn decode(keys: &crate::crypto::Keys, path: &str, sealed: &[u8]) -> Result<FileRecord> {
        let plain = keys.open(sealed, AAD, &|| path.to_string())?;
        let r: FileRecord =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt(path, e.to_string()))?;
        if file_path(&r.namespace, &r.name) != path {
            return Err(Error::corrupt(
                path,
                format!(
                    "the record is that of {}: it was moved",
                    file_path(&r.namespace, &r.name)
                ),
            ));
        }
        Ok(r)
    }
}

impl Repository {
    /// Stores `reader`'s bytes as file `name` of `namespace`, create-only (see the module
    /// docs). The handle must hold a shared lock.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the name holds other bytes; [`Error::Invalid`] for a bad
    /// name; [`Error::Source`] reading; storage errors (then no record is written).
    pub fn put_file(&self, namespace: &str, name: &str, reader: impl Read) -> Result<Stored> {
        self.put_file_at(namespace, name, reader, chrono::Local::now().fixed_offset())
    }

    /// As [`Repository::put_file`], recording `time` as when it was stored (a copy keeps
    /// the time its original was archived).
    ///
    /// # Errors
    /// As [`Repository::put_file`].
    pub fn put_file_at(
        &self,
        namespace: &str,
        name: &str,
        reader: impl Read,
        time: DateTime<FixedOffset>,
    ) -> Result<Stored> {
        self.put_file_full(namespace, name, reader, time, Default::default())
    }

    /// As [`Repository::put_file`], with `meta` in the record's part (sealed with the
    /// record: readable from the record alone, without the index).
    ///
    /// # Errors
    /// As [`Repository::put_file`].
    pub fn put_file_with(
        &self,
        namespace: &str,
        name: &str,
        reader: impl Read,
        meta: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Stored> {
        let now = chrono::Local::now().fixed_offset();
        self.put_file_full(namespace, name, reader, now, meta)
    }

    fn put_file_full(
        &self,
        namespace: &str,
        name: &str,
        reader: impl Read,
        time: DateTime<FixedOffset>,
        meta: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Stored> {
        check_name("namespace", namespace)?;
        check_name("file name", name)?;
        let path = file_path(namespace, name);
        let before = self.file(namespace, name);
        if let Ok(old) = &before {
            // Known already: read the new bytes only to compare them.
            return same_or_conflict(&path, old, reader);
        }
        let mut b = self.start_backup_at(None, LEVEL)?;
        b.add_part(
            PartInput {
                chunking: Chunking::Fixed(CHUNK),
                name: name.to_string(),
                kind: "file".into(),
                rows: None,
                meta,
            },
            reader,
        )?;
        let (mut parts, out) = b.finish_parts()?;
        let part = parts
            .pop()
            .ok_or_else(|| Error::Invalid("a file without its part".into()))?;
        let rec = FileRecord {
            namespace: namespace.to_string(),
            name: name.to_string(),
            time,
            part,
        };
        let sealed = rec.encode(self.keys())?;
        match self.backend().create(&path, &sealed) {
            Ok(()) => Ok(Stored::New {
                bytes_added: out.bytes_added + sealed.len() as u64,
            }),
            // Another pusher won the race: the same bytes, or a conflict.
            Err(Error::AlreadyExists { .. }) => {
                let old = self.file(namespace, name)?;
                if old.part.blake3 == rec.part.blake3 && old.part.size == rec.part.size {
                    Ok(Stored::Same)
                } else {
                    Err(conflict(&path, &old, &rec.part))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The record of file `name` of `namespace`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; [`Error::Corrupt`]; storage errors.
    pub fn file(&self, namespace: &str, name: &str) -> Result<FileRecord> {
        check_name("namespace", namespace)?;
        check_name("file name", name)?;
        let path = file_path(namespace, name);
        let sealed = self.backend().read(&path)?;
        FileRecord::decode(self.keys(), &path, &sealed)
    }

    /// The names of the files of `namespace`, sorted (no record is read).
    ///
    /// # Errors
    /// Storage errors.
    pub fn file_names(&self, namespace: &str) -> Result<Vec<String>> {
        check_name("namespace", namespace)?;
        let prefix = format!("{ROOT}{namespace}/");
        let mut v: Vec<String> = self
            .backend()
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| o.path.strip_prefix(&prefix).map(str::to_string))
            .filter(|n| !n.contains('/') && check_name("file name", n).is_ok())
            .collect();
        v.sort();
        Ok(v)
    }

    /// Removes files' records (their data goes at the next prune). The handle must hold a
    /// lock, and the store must allow deleting.
    ///
    /// # Errors
    /// [`Error::DeleteRefused`] on an append-only handle; storage errors.
    pub fn remove_files(&self, namespace: &str, names: &[String]) -> Result<()> {
        check_name("namespace", namespace)?;
        for n in names {
            check_name("file name", n)?;
            self.backend().remove(&file_path(namespace, n))?;
        }
        Ok(())
    }

    /// Every record in the repository, as snapshots of one part each (for prune's mark
    /// and check's walk), with the records that could not be read.
    ///
    /// # Errors
    /// Storage errors listing them.
    pub(crate) fn file_records_as_snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<Error>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for o in self.backend().list(ROOT)? {
            let read = self
                .backend()
                .read(&o.path)
                .and_then(|s| FileRecord::decode(self.keys(), &o.path, &s));
            match read {
                Ok(r) => out.push((Id::hash_of(o.path.as_bytes()), pseudo_snapshot(r))),
                Err(e) => bad.push(e),
            }
        }
        Ok((out, bad))
    }
}

fn pseudo_snapshot(r: FileRecord) -> Snapshot {
    Snapshot {
        version: 1,
        time: r.time,
        host: String::new(),
        name: format!("{ROOT}{}/{}", r.namespace, r.name),
        tags: Vec::new(),
        source: SourceInfo::default(),
        bytes_in: r.part.size,
        parts: vec![r.part],
        bytes_added: 0,
        seconds: 0.0,
        program: String::new(),
        parent: None,
        copied_from: None,
        repaired_from: None,
    }
}

fn conflict(path: &str, old: &FileRecord, new: &Part) -> Error {
    Error::Conflict {
        path: path.to_string(),
        detail: format!(
            "already stored with other content ({} bytes, BLAKE3 {}…; these are {} bytes, {}…): nothing was overwritten",
            old.part.size,
            &old.part.blake3[..16.min(old.part.blake3.len())],
            new.size,
            &new.blake3[..16.min(new.blake3.len())]
        ),
    }
}

fn same_or_conflict(path: &str, old: &FileRecord, mut reader: impl Read) -> Result<Stored> {
    let mut h = blake3::Hasher::new();
    let size = std::io::copy(&mut reader, &mut h).map_err(Error::Source)?;
    let hex = h.finalize().to_hex().to_string();
    if hex == old.part.blake3 && size == old.part.size {
        return Ok(Stored::Same);
    }
    Err(conflict(
        path,
        old,
        &Part {
            name: old.name.clone(),
            kind: "file".into(),
            size,
            rows: None,
            blake3: hex,
            chunks: 0,
            lists: Vec::new(),
            depth: 0,
            meta: Default::default(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::keyfile::KdfParams;
    use crate::lock::{LockKind, LockOptions};

    fn repo(dir: &std::path::Path) -> Repository {
        let b: Arc<dyn crate::backend::Backend> = Arc::new(LocalBackend::new(dir));
        let kdf = KdfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        };
        Repository::init(b, b"pw", kdf, Default::default()).expect("init")
    }

    #[test]
    fn files_are_create_only_kept_by_prune_and_walked_by_check() {
        let dir = tempfile::tempdir().expect("dir");
        let r = repo(dir.path());
        r.lock(
            LockKind::Shared,
            &LockOptions::new("test", Duration::from_secs(5)),
        )
        .expect("lock");
        let seg: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let name = "000000010000000000000003";
        assert!(matches!(
            r.put_file("wal-1", name, &seg[..]).expect("put"),
            Stored::New { .. }
        ));
        assert_eq!(
            r.put_file("wal-1", name, &seg[..]).expect("again"),
            Stored::Same
        );
        let mut other = seg.clone();
        other[5] ^= 1;
        let e = r.put_file("wal-1", name, &other[..]).expect_err("conflict");
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        assert!(e.to_string().contains("nothing was overwritten"), "{e}");
        assert_eq!(
            r.file_names("wal-1").expect("names"),
            vec![name.to_string()]
        );
        assert!(r.put_file("wal-1", "../x", &b""[..]).is_err());
        let rec = r.file("wal-1", name).expect("record");
        let mut back = Vec::new();
        crate::restore::restore_part(&r, &rec.part, &mut back).expect("read");
        assert!(back == seg);

        // Prune keeps what a record needs; check walks it.
        r.unlock();
        r.lock(
            LockKind::Exclusive,
            &LockOptions::new("test", Duration::from_secs(5)),
        )
        .expect("lock");
        let p = crate::prune::prune(&r, Default::default(), &|_| {}).expect("prune");
        assert_eq!(p.packs_deleted, 0);
        let c = crate::check::check(&r, crate::check::ReadData::All, &|_| {}).expect("check");
        assert!(c.ok && c.files == 1, "{:?}", c.problems);
        // Removed, its data goes at the next prune.
        r.remove_files("wal-1", &[name.to_string()])
            .expect("remove");
        let p = crate::prune::prune(&r, Default::default(), &|_| {}).expect("prune");
        assert!(p.packs_deleted >= 1);
        assert!(matches!(r.file("wal-1", name), Err(Error::NotFound { .. })));
    }
}
