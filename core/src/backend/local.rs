//! A repository in a local directory.
//!
//! Durable create: write `<dir>/.tmp-<random>`, fsync it, hard-link it to the final name
//! (which fails if the name is taken, so objects are never overwritten), remove the temp
//! name, fsync the directory. Temp files left by a crash start with `.tmp-` and are never
//! listed. Files are 0600 and directories 0700: repository files are not world-readable.
//!
//! One repository, several users (a nightly `run` as root, `wal-push` as `postgres`): the
//! repository's root directory says who it belongs to. Its group bits are given to every
//! file (read) and directory (as the root has them) this process creates, whatever the
//! umask, and when root writes into a repository another user owns, what it creates is
//! handed to that user, so root never leaves a file the owner cannot read or remove. A
//! user who may not write is told whose the repository is.
//! A spooled object ([`Backend::spool`]: a pack written blob by blob) is the same temp file
//! in `data/`, written as it comes, then fsynced and linked into place the same way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, ObjectInfo, Spool};
use crate::{Error, Result};

const TMP_PREFIX: &str = ".tmp-";

/// A repository rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    owner: std::sync::OnceLock<Owner>,
}

/// Whose the repository is (its root directory's owner, group and group bits), and what
/// this process does about it.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    /// The root directory's group permission bits (`0o070` at most).
    group_bits: u32,
    /// This process is root and the repository is another user's: hand new files over.
    give: bool,
}

/// The effective user id of this process (`/proc/self` belongs to it).
fn euid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The name of user `uid` (from `/etc/passwd`), else the number.
fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

impl LocalBackend {
    /// Calls `f` with every file (not directory) under `prefix`, depth first; a missing
    /// directory is empty (a repository's directories appear as objects are written).
    fn walk(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&fs::DirEntry, &str) -> Result<()>,
    ) -> Result<()> {
        let mut stack = vec![self.full(prefix.trim_end_matches('/'))];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(dir.display().to_string(), e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| Error::io(dir.display().to_string(), e))?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                } else {
                    f(&entry, &entry.file_name().to_string_lossy())?;
                }
            }
        }
        Ok(())
    }

    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            owner: std::sync::OnceLock::new(),
        }
    }

    /// The repository's owner, once its root exists.
    fn owner(&self) -> Option<Owner> {
        use std::os::unix::fs::MetadataExt;
        if let Some(o) = self.owner.get() {
            return Some(*o);
        }
        let m = fs::metadata(&self.root).ok()?;
        let me = euid();
        let o = Owner {
            uid: m.uid(),
            gid: m.gid(),
            group_bits: m.mode() & 0o070,
            give: me == Some(0) && m.uid() != 0,
        };
        Some(*self.owner.get_or_init(|| o))
    }

    /// Gives a file or directory this process created the repository's group bits
    /// (`dir`: all of them; a file: read) and, as root, to the repository's owner. Best
    /// effort: a failure leaves it private, as before.
    fn adopt(&self, path: &Path, dir: bool) {
        use std::os::unix::fs::PermissionsExt;
        let Some(o) = self.owner() else { return };
        if o.give {
            let _ = std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid));
        } else if o.group_bits != 0 {
            let _ = std::os::unix::fs::lchown(path, None, Some(o.gid));
        }
        if o.group_bits != 0 {
            let mode = if dir {
                0o700 | o.group_bits
            } else {
                0o600 | (o.group_bits & 0o040)
            };
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
        }
    }

    /// A storage error for `path`; permission refused names whose the repository is.
    fn map_err(&self, path: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::PermissionDenied {
            if let Some(o) = self.owner() {
                if euid() != Some(o.uid) {
                    return Error::io(
                        path,
                        io::Error::new(
                            e.kind(),
                            format!(
                                "{e}: the repository {} belongs to {}; run dbvault as {} (e.g. runuser -u {} -- dbvault …), or share it with a group (chgrp -R GROUP, chmod -R g+rwX)",
                                self.root.display(),
                                user_name(o.uid),
                                user_name(o.uid),
                                user_name(o.uid)
                            ),
                        ),
                    );
                }
            }
        }
        map_err(path, e)
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| self.map_err(&dir.display().to_string(), e))?;
        // The directories made now (up to the root) become the repository's.
        let mut d = Some(dir);
        while let Some(p) = d.filter(|p| p.starts_with(&self.root) && *p != self.root) {
            self.adopt(p, true);
            d = p.parent();
        }
        Ok(())
    }
}

fn map_err(path: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_string(),
        },
        io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            path: path.to_string(),
        },
        _ => Error::io(path, e),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new private temp file in `dir`.
fn temp_file(dir: &Path) -> Result<io::Result<(File, PathBuf)>> {
    let mut rnd = [0u8; 8];
    crate::crypto::fill_random(&mut rnd)?;
    let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
    Ok(crate::interrupt::create_temp(tmp.clone(), |p| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
    })
    .map(|f| (f, tmp)))
}

/// Makes the temp file `tmp` (written through `f`) the object at `target` in `dir`: fsync
/// it, hard-link it to `target` (refused, `AlreadyExists`, if the name is taken), remove
/// the temp name, fsync the directory. The temp name is removed whatever happens.
fn put_in_place(f: File, tmp: &Path, target: &Path, dir: &Path) -> io::Result<()> {
    let linked = f.sync_all().and_then(|()| {
        drop(f);
        // link() refuses an existing target: create-only without a check-then-act race.
        fs::hard_link(tmp, target)
    });
    let _ = fs::remove_file(tmp);
    crate::interrupt::unregister_temp(tmp);
    linked?;
    fsync_dir(dir)
}

/// What a spool's errors name: the pack has no name until it is finished.
const SPOOL_WHAT: &str = "data/ (a new pack)";

/// Bytes a spool gathers before writing them to its file. Blobs arrive a few KiB at a
/// time; written one by one they were a system call each, and the kernel zeroed the rest
/// of every page a write began: the pack thread spent most of its time there while the
/// sealing threads waited for it.
const SPOOL_BUFFER: usize = 1 << 20;

/// A temp file in `data/` that becomes an object when finished.
struct LocalSpool {
    backend: LocalBackend,
    /// `None` once finished.
    file: Option<(io::BufWriter<File>, PathBuf)>,
}

impl Spool for LocalSpool {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((f, _)) = self.file.as_mut() else {
            return Err(Error::Invalid("write to a finished spool".into()));
        };
        f.write_all(data).map_err(|e| Error::io(SPOOL_WHAT, e))
    }

    fn finish_unique(mut self: Box<Self>, path: &str) -> Result<()> {
        let target = self.backend.full(path);
        let dir = target.parent().unwrap_or(&self.backend.root).to_path_buf();
        // Before the file is taken: on failure, drop removes it.
        self.backend.ensure_dir(&dir)?;
        let Some((f, tmp)) = self.file.take() else {
            return Err(Error::Invalid("a spool finished twice".into()));
        };
        let f = match f.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(SPOOL_WHAT, e.into_error()));
            }
        };
        match put_in_place(f, &tmp, &target, &dir) {
            // Named by its bytes: what is there already is this.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r.map_err(|e| self.backend.map_err(path, e)),
        }
    }
}

impl Drop for LocalSpool {
    fn drop(&mut self) {
        if let Some((_, tmp)) = self.file.take() {
            let _ = fs::remove_file(&tmp);
            crate::interrupt::unregister_temp(&tmp);
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        let target = self.full(path);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        if target.exists() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        self.ensure_dir(&dir)?;
        let (mut f, tmp) = temp_file(&dir)?.map_err(|e| self.map_err(path, e))?;
        self.adopt(&tmp, false);
        if let Err(e) = f.write_all(data) {
            let _ = fs::remove_file(&tmp);
            return Err(self.map_err(path, e));
        }
        put_in_place(f, &tmp, &target, &dir).map_err(|e| self.map_err(path, e))
    }

    fn spool(&self) -> Result<Option<Box<dyn Spool>>> {
        let dir = self.full("data");
        self.ensure_dir(&dir)?;
        Ok(Some(Box::new(LocalSpool {
            backend: self.clone(),
            file: Some(
                temp_file(&dir)?
                    .map(|(f, tmp)| {
                        self.adopt(&tmp, false);
                        (io::BufWriter::with_capacity(SPOOL_BUFFER, f), tmp)
                    })
                    .map_err(|e| self.map_err(SPOOL_WHAT, e))?,
            ),
        })))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        fs::read(self.full(path)).map_err(|e| self.map_err(path, e))
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.full(path)).map_err(|e| self.map_err(path, e))?;
        let size = f.metadata().map_err(|e| self.map_err(path, e))?.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                path,
                format!("is {size} bytes, a read of {len} bytes at {offset} runs past its end"),
            ));
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.map_err(path, e))?;
        // Read into spare capacity: zeroing the buffer first was a pass over every byte a
        // restore reads.
        let mut buf = Vec::with_capacity(
            usize::try_from(len).map_err(|_| Error::Invalid("range too large".into()))?,
        );
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.map_err(path, e))?;
        if buf.len() as u64 != len {
            return Err(map_err(path, io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(buf)
    }

    fn size(&self, path: &str) -> Result<u64> {
        Ok(fs::metadata(self.full(path))
            .map_err(|e| self.map_err(path, e))?
            .len())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.walk(prefix, &mut |entry, name| {
            if name.starts_with(TMP_PREFIX) {
                return Ok(());
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(entry.path().display().to_string(), e))?;
            if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                out.push(ObjectInfo {
                    path: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                });
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn remove_incomplete(&self, prefix: &str) -> Result<usize> {
        let mut removed = 0;
        self.walk(prefix, &mut |entry, name| {
            if name.starts_with(TMP_PREFIX) {
                let p = entry.path();
                match fs::remove_file(&p) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(p.display().to_string(), e)),
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }

    fn remove(&self, path: &str) -> Result<()> {
        match fs::remove_file(self.full(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        crate::backend::conformance::run(&LocalBackend::new(dir.path().join("repo"))).unwrap();
    }

    #[test]
    fn files_are_private_and_temp_files_are_not_listed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A private root keeps files private; a root shared with a group (0750) lets the
        // group read them; nobody else ever can, whatever the umask.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let b = LocalBackend::new(dir.path());
        b.create("data/ab/x", b"1").unwrap();
        let mode = fs::metadata(dir.path().join("data/ab/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        let shared = tempfile::tempdir().unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o750)).unwrap();
        LocalBackend::new(shared.path())
            .create("data/ab/y", b"1")
            .unwrap();
        let mode = fs::metadata(shared.path().join("data/ab/y"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "mode {mode:o}");
        fs::write(dir.path().join("data/ab/.tmp-dead"), b"partial").unwrap();
        let listed = b.list("data/").unwrap();
        assert_eq!(
            listed,
            vec![ObjectInfo {
                path: "data/ab/x".into(),
                size: 1
            }]
        );
        assert_eq!(b.remove_incomplete("data/").unwrap(), 1);
        assert!(!dir.path().join("data/ab/.tmp-dead").exists());
        assert_eq!(b.list("data/").unwrap().len(), 1);
    }
}
