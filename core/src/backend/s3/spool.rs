//! Packs spooled to a local file and uploaded from it ([`Backend::spool`] on S3).
//!
//! A backup to S3 used to build each pack in memory and keep it there until its upload
//! returned: three 17 MiB buffers. Here the pack goes to a temp file in the spool
//! directory as its blobs are sealed, and the upload streams from that file (re-read from
//! the start when the SDK retries an attempt), so a pack costs disk, not memory. The file
//! is a buffer, not the durable copy (the store is), so it is never fsynced; it is removed
//! when the upload returns or the spool is dropped. Files a killed process left behind are
//! removed by the next spool once a day old (no live backup keeps one that long: an
//! upload attempt times out after minutes).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, Length};
use bytes::Bytes;

use super::{S3Backend, MULTIPART_ABOVE, PART_SIZE};
use crate::backend::Spool;
use crate::error::StorageKind;
use crate::{Error, Result};

/// Names of spool files; only these are ever removed from the directory.
const PREFIX: &str = "dbvault-pack-";
/// Age after which a spool file is a left-over of a killed process.
const STALE: Duration = Duration::from_secs(24 * 3600);
/// What a spool's errors name before the pack has a name.
const WHAT: &str = "a new pack (spooled for upload)";

/// What an upload sends: bytes in memory, or a spooled file.
pub(super) enum Source {
    /// Shared with each attempt's request, not copied.
    Mem(Bytes),
    /// A file of `len` bytes, re-opened for each attempt, with the CRC32 of the whole
    /// and of each `PART_SIZE` piece (a multipart upload's parts).
    File {
        path: PathBuf,
        len: u64,
        crc: u32,
        part_crcs: Vec<u32>,
    },
}

impl Source {
    pub(super) fn len(&self) -> u64 {
        match self {
            Source::Mem(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// The CRC32 the store is to check the bytes from `offset` against (base64, as the
    /// `x-amz-checksum-crc32` header has it): a file's, which the SDK cannot sign as it
    /// signs bytes in memory. `None` for bytes in memory (the SDK checksums those itself).
    pub(super) fn crc32(&self, offset: u64) -> Option<String> {
        match self {
            Source::Mem(_) => None,
            Source::File {
                crc,
                part_crcs,
                len,
                ..
            } => {
                let c = if *len > MULTIPART_ABOVE as u64 {
                    *part_crcs.get((offset / PART_SIZE as u64) as usize)?
                } else {
                    *crc
                };
                Some(base64_4(c.to_be_bytes()))
            }
        }
    }

    /// A request body of `len` bytes from `offset`.
    pub(super) async fn body(&self, offset: u64, len: u64, url: &str) -> Result<ByteStream> {
        match self {
            Source::Mem(b) => Ok(ByteStream::from(
                b.slice(offset as usize..(offset + len) as usize),
            )),
            Source::File { path, .. } => ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| {
                    Error::storage(
                        url,
                        StorageKind::Other,
                        format!("cannot read the spooled pack {}: {e}", path.display()),
                    )
                }),
        }
    }
}

/// Base64 of four bytes (a CRC32, big-endian, as S3 wants it).
fn base64_4(b: [u8; 4]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = u32::from_be_bytes(b);
    let at = |shift: u32| A[((n >> shift) & 63) as usize] as char;
    // 32 bits: five full sextets and two bits, padded to 8 characters.
    let last = A[((n & 3) << 4) as usize] as char;
    [at(26), at(20), at(14), at(8), at(2), last, '=', '=']
        .iter()
        .collect()
}

/// Bytes gathered before a write to the spool file: blobs come a few KiB at a time, and a
/// system call each (with the kernel zeroing the rest of each page begun) held up the
/// thread the sealing waits for. Smaller than a local disk's spool buffer: an S3 command's
/// memory has less room.
const BUFFER: usize = 256 << 10;

/// A pack being written to a file in the spool directory, uploaded when finished.
pub(super) struct FileSpool {
    store: S3Backend,
    /// `None` once finished.
    file: Option<(std::io::BufWriter<File>, PathBuf)>,
    len: u64,
    /// CRC32 of everything written, and of each finished `PART_SIZE` piece plus the
    /// current one.
    crc: crc32fast::Hasher,
    parts: Vec<u32>,
    part: crc32fast::Hasher,
}

impl FileSpool {
    /// A new spool file in `dir` (made if missing, owner-only).
    pub(super) fn new(store: S3Backend, dir: &Path) -> Result<FileSpool> {
        let io = |e| Error::io(format!("{WHAT} in {}", dir.display()), e);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| remove_stale(dir));
        let mut rnd = [0u8; 8];
        crate::crypto::fill_random(&mut rnd)?;
        let path = dir.join(format!("{PREFIX}{}", hex::encode(rnd)));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        Ok(FileSpool {
            store,
            file: Some((std::io::BufWriter::with_capacity(BUFFER, f), path)),
            len: 0,
            crc: crc32fast::Hasher::new(),
            parts: Vec::new(),
            part: crc32fast::Hasher::new(),
        })
    }
}

/// Removes spool files a day old or more (best effort).
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= STALE);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Spool for FileSpool {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((f, path)) = self.file.as_mut() else {
            return Err(Error::Invalid("write to a finished spool".into()));
        };
        f.write_all(data)
            .map_err(|e| Error::io(format!("{WHAT} at {}", path.display()), e))?;
        self.crc.update(data);
        let mut rest = data;
        while !rest.is_empty() {
            let room = PART_SIZE - (self.len % PART_SIZE as u64) as usize;
            let (head, tail) = rest.split_at(room.min(rest.len()));
            self.part.update(head);
            self.len += head.len() as u64;
            if self.len % PART_SIZE as u64 == 0 {
                let done = std::mem::take(&mut self.part);
                self.parts.push(done.finalize());
            }
            rest = tail;
        }
        Ok(())
    }

    fn finish_unique(mut self: Box<Self>, path: &str) -> Result<()> {
        let Some((f, file)) = self.file.take() else {
            return Err(Error::Invalid("a spool finished twice".into()));
        };
        // Written out and closed before the upload opens it by name (its bytes are in the
        // page cache).
        if let Err(e) = f.into_inner() {
            let _ = fs::remove_file(&file);
            return Err(Error::io(
                format!("{WHAT} at {}", file.display()),
                e.into_error(),
            ));
        }
        let mut part_crcs = std::mem::take(&mut self.parts);
        if self.len % PART_SIZE as u64 != 0 {
            part_crcs.push(std::mem::take(&mut self.part).finalize());
        }
        let src = Source::File {
            path: file.clone(),
            len: self.len,
            crc: std::mem::take(&mut self.crc).finalize(),
            part_crcs,
        };
        let r = match self.store.put(path, &src, false) {
            // Named by its bytes: what is there already is this.
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&file);
        r
    }
}

impl Drop for FileSpool {
    fn drop(&mut self) {
        if let Some((_, path)) = self.file.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{base64_4, remove_stale, PREFIX};
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_spool_files_a_day_old_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, age_h: u64| {
            let p = dir.path().join(name);
            let f = std::fs::File::create(&p).expect("create");
            f.set_modified(SystemTime::now() - Duration::from_secs(age_h * 3600))
                .expect("mtime");
            p
        };
        let stale = file(&format!("{PREFIX}0011"), 25);
        let live = file(&format!("{PREFIX}2233"), 1);
        let other = file("someone-elses-file", 48);
        remove_stale(dir.path());
        assert!(!stale.exists(), "a left-over a day old is removed");
        assert!(live.exists(), "a live backup's spool is kept");
        assert!(
            other.exists(),
            "files not named as spools are never touched"
        );
    }

    #[test]
    fn crc_headers_are_base64_of_the_big_endian_crc() {
        // Values from Python's base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).
        let crc = |d: &[u8]| crc32fast::hash(d).to_be_bytes();
        assert_eq!(base64_4(crc(b"hello")), "NhCmhg==");
        assert_eq!(base64_4(crc(b"")), "AAAAAA==");
        assert_eq!(base64_4([0xff; 4]), "/////w==");
        assert_eq!(base64_4([0, 0, 0, 1]), "AAAAAQ==");
    }
}
