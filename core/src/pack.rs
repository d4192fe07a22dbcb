//! Pack files: many sealed blobs followed by a sealed trailer that lists them.
//!
//! Layout: `blob* trailer u32le(trailer length)`. Each blob is `seal(zstd(plain), aad = id)`;
//! the trailer is `seal(entries, aad = "dbvault pack trailer")`. A pack is named by the
//! BLAKE3 of its bytes and stored at `data/<first two hex digits>/<id>`. Packs target about
//! 16 MiB, so a terabyte is tens of thousands of objects, not millions.

use crate::backend::{Backend, Spool};
use crate::crypto::Keys;
use crate::{Error, Id, Result};

/// Default pack size target.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;
const TRAILER_AAD: &[u8] = b"dbvault pack trailer";
/// Bytes of one encoded entry (a delta entry has its base id, 32 more bytes).
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum BlobKind {
    /// A chunk of a part's bytes.
    Data = 0,
    /// A list of chunk ids (32 bytes each) of a part.
    List = 1,
    /// A chunk stored as a zstd delta against an earlier (full) chunk: `base id || frame`.
    /// Its trailer and index entries name the base too, so prune and check know what a
    /// delta needs without reading it.
    Delta = 2,
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// What the blob holds.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The base blob of a [`BlobKind::Delta`]; `None` for other kinds.
    pub base: Option<Id>,
}

/// The object path of a pack.
pub fn pack_path(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Appends the binary form of `entries`.
pub fn encode_entries(out: &mut Vec<u8>, entries: &[PackEntry]) {
    for e in entries {
        out.push(e.kind as u8);
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        if e.kind == BlobKind::Delta {
            out.extend_from_slice(&e.base.unwrap_or_default().0);
        }
    }
}

/// Parses `count` entries from the front of `buf`, returning them and the rest.
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when the bytes are short or malformed.
pub fn decode_entries<'a>(
    buf: &'a [u8],
    count: usize,
    what: &str,
) -> Result<(Vec<PackEntry>, &'a [u8])> {
    let short = || Error::corrupt(what, "entry list is truncated");
    if count.checked_mul(ENTRY_LEN).is_none_or(|n| n > buf.len()) {
        return Err(short());
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let id_at = |b: &[u8], i: usize| {
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[i..i + 32]);
        Id(id)
    };
    let mut out = Vec::with_capacity(count);
    let mut rest = buf;
    for _ in 0..count {
        if rest.len() < ENTRY_LEN {
            return Err(short());
        }
        let kind = match rest[0] {
            0 => BlobKind::Data,
            1 => BlobKind::List,
            2 => BlobKind::Delta,
            k => return Err(Error::corrupt(what, format!("unknown blob kind {k}"))),
        };
        let mut len = ENTRY_LEN;
        let base = if kind == BlobKind::Delta {
            len += 32;
            if rest.len() < len {
                return Err(short());
            }
            Some(id_at(rest, ENTRY_LEN))
        } else {
            None
        };
        out.push(PackEntry {
            kind,
            id: id_at(rest, 1),
            offset: u32_at(rest, 33),
            len: u32_at(rest, 37),
            raw_len: u32_at(rest, 41),
            base,
        });
        rest = &rest[len..];
    }
    Ok((out, rest))
}

/// Where a pack's bytes go while it is built.
enum Body {
    /// In memory, stored whole when finished.
    Mem(Vec<u8>),
    /// Written to the store as they come ([`Backend::spool`]), hashed on the way, since
    /// the pack's name is the hash of its bytes.
    Spool(Box<dyn Spool>, blake3::Hasher),
}

impl Default for Body {
    fn default() -> Self {
        Body::Mem(Vec::new())
    }
}

/// A finished pack's bytes: in memory, or spooled and waiting for their name.
pub enum PackBytes {
    /// The whole pack.
    Mem(Vec<u8>),
    /// Written; [`Spool::finish_unique`] puts it in place.
    Spooled(Box<dyn Spool>),
}

impl PackBytes {
    /// Stores the pack at `path` as [`Backend::create_unique`] does. Gives back the memory
    /// buffer (for reuse and for the caller's look at it), whatever the outcome.
    ///
    /// # Errors
    /// The store's error, in the first element.
    pub fn store(self, backend: &dyn Backend, path: &str) -> (Result<()>, Option<Vec<u8>>) {
        match self {
            PackBytes::Mem(data) => {
                let (r, data) = backend.create_unique_owned(path, data);
                (r, Some(data))
            }
            PackBytes::Spooled(spool) => (spool.finish_unique(path), None),
        }
    }
}

/// Builds one pack, in memory or spooled to the store.
#[derive(Default)]
pub struct PackBuilder {
    body: Body,
    len: usize,
    entries: Vec<PackEntry>,
    /// A spooled pack's small blobs (not `Data`) by offset, for a caching store to keep
    /// once the pack is stored; `None`: not kept.
    small: Option<Vec<(u32, Vec<u8>)>>,
}

impl PackBuilder {
    /// An empty pack of about `target` bytes, built in `buf` (a stored pack's, recycled, or
    /// a new one). Room is reserved exactly for the target and the blob that crosses it
    /// plus the trailer, so a pack a little over its target never doubles the buffer.
    pub fn for_target(mut buf: Vec<u8>, target: usize) -> Self {
        buf.clear();
        buf.reserve_exact(target + (1 << 20));
        PackBuilder {
            body: Body::Mem(buf),
            len: 0,
            entries: Vec::new(),
            small: None,
        }
    }

    /// An empty pack written to `spool` as blobs are added: no pack in memory.
    pub fn spooled(spool: Box<dyn Spool>) -> Self {
        PackBuilder {
            body: Body::Spool(spool, blake3::Hasher::new()),
            len: 0,
            entries: Vec::new(),
            small: None,
        }
    }

    /// A new pack for `backend`: spooled when the store can, else in `buf`.
    ///
    /// # Errors
    /// The store's error when a spool cannot be started.
    pub fn new_for(backend: &dyn Backend, buf: Vec<u8>, target: usize) -> Result<Self> {
        Ok(match backend.spool()? {
            Some(spool) => PackBuilder {
                small: backend.keeps_ranges().then(Vec::new),
                ..PackBuilder::spooled(spool)
            },
            None => PackBuilder::for_target(buf, target),
        })
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.body {
            Body::Mem(buf) => buf.extend_from_slice(data),
            Body::Spool(spool, hasher) => {
                spool.write(data)?;
                hasher.update(data);
            }
        }
        self.len += data.len();
        Ok(())
    }

    /// Appends a sealed blob (`base`: the base of a delta).
    ///
    /// # Errors
    /// A spooled pack's store error (a full disk).
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: Id,
        sealed: &[u8],
        raw_len: u32,
        base: Option<Id>,
    ) -> Result<()> {
        let offset = self.len as u32;
        self.append(sealed)?;
        if let (Some(small), false) = (&mut self.small, kind == BlobKind::Data) {
            small.push((offset, sealed.to_vec()));
        }
        self.entries.push(PackEntry {
            kind,
            id,
            offset,
            len: sealed.len() as u32,
            raw_len,
            base,
        });
        Ok(())
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the trailer; returns the pack's id, bytes, entries and length.
    ///
    /// # Errors
    /// If the random source fails; a spooled pack's store error.
    pub fn finish(mut self, keys: &Keys) -> Result<FinishedPack> {
        let mut plain = Vec::with_capacity(4 + self.entries.len() * ENTRY_LEN);
        plain.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        encode_entries(&mut plain, &self.entries);
        let trailer = keys.seal(&plain, TRAILER_AAD)?;
        self.append(&trailer)?;
        self.append(&(trailer.len() as u32).to_le_bytes())?;
        let len = self.len as u64;
        let (id, bytes) = match self.body {
            Body::Mem(buf) => (Id::hash_of(&buf), PackBytes::Mem(buf)),
            Body::Spool(spool, hasher) => {
                (Id(*hasher.finalize().as_bytes()), PackBytes::Spooled(spool))
            }
        };
        Ok(FinishedPack {
            id,
            bytes,
            entries: self.entries,
            len,
            small: self.small.unwrap_or_default(),
        })
    }
}

/// A sealed pack, ready to store.
pub struct FinishedPack {
    /// Its name: the BLAKE3 of its bytes.
    pub id: Id,
    /// Its bytes.
    pub bytes: PackBytes,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
    /// Its length in bytes.
    pub len: u64,
    /// A spooled pack's small blobs by offset, when the store keeps ranges.
    pub small: Vec<(u32, Vec<u8>)>,
}

impl FinishedPack {
    /// The pack's blobs other than `Data` (lists, deltas) as `(offset, sealed bytes)`:
    /// from `data`, the stored pack's bytes when they were in memory, else the copies a
    /// spooled pack kept.
    pub fn small_blobs<'a>(
        entries: &'a [PackEntry],
        small: &'a [(u32, Vec<u8>)],
        data: Option<&'a [u8]>,
    ) -> Vec<(u64, &'a [u8])> {
        match data {
            Some(d) => entries
                .iter()
                .filter(|e| e.kind != BlobKind::Data)
                .map(|e| {
                    (
                        u64::from(e.offset),
                        &d[e.offset as usize..(e.offset + e.len) as usize],
                    )
                })
                .collect(),
            None => small
                .iter()
                .map(|(o, b)| (u64::from(*o), b.as_slice()))
                .collect(),
        }
    }
}

/// Reads and checks the trailer of a pack given its last bytes (`tail` must hold at least
/// the trailer and the 4-byte length; `pack_size` is the whole pack's size).
///
/// # Errors
/// [`Error::Corrupt`] naming the pack when the trailer is damaged or disagrees with the size.
pub fn parse_trailer(
    keys: &Keys,
    tail: &[u8],
    pack_size: u64,
    what: &str,
) -> Result<Vec<PackEntry>> {
    let bad = |d: &str| Error::corrupt(what, d.to_string());
    if tail.len() < 4 {
        return Err(bad("too short to hold a trailer"));
    }
    let n = tail.len();
    let tlen = u32::from_le_bytes([tail[n - 4], tail[n - 3], tail[n - 2], tail[n - 1]]) as usize;
    if tlen + 4 > n {
        return Err(bad("trailer length points outside the pack"));
    }
    let plain = keys.open(&tail[n - 4 - tlen..n - 4], TRAILER_AAD, &|| {
        what.to_string()
    })?;
    if plain.len() < 4 {
        return Err(bad("trailer is empty"));
    }
    let count = u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
    let (entries, rest) = decode_entries(&plain[4..], count, what)?;
    if !rest.is_empty() {
        return Err(bad("trailer has trailing bytes"));
    }
    let body = pack_size.saturating_sub(tlen as u64 + 4);
    if entries
        .iter()
        .any(|e| u64::from(e.offset) + u64::from(e.len) > body)
    {
        return Err(bad("trailer lists a blob outside the pack"));
    }
    Ok(entries)
}

/// Reads a pack's trailer through a backend (two range reads).
///
/// # Errors
/// As [`parse_trailer`], plus backend errors.
pub fn read_trailer(
    backend: &dyn crate::backend::Backend,
    keys: &Keys,
    id: &Id,
    size: u64,
) -> Result<Vec<PackEntry>> {
    let path = pack_path(id);
    if size < 4 {
        return Err(Error::corrupt(
            format!("pack {path}"),
            "too short to hold a trailer",
        ));
    }
    let len_bytes = backend.read_range(&path, size - 4, 4)?;
    let tlen = u64::from(u32::from_le_bytes([
        len_bytes[0],
        len_bytes[1],
        len_bytes[2],
        len_bytes[3],
    ]));
    if tlen + 4 > size {
        return Err(Error::corrupt(
            format!("pack {path}"),
            "trailer length points outside the pack",
        ));
    }
    let tail = backend.read_range(&path, size - 4 - tlen, tlen + 4)?;
    parse_trailer(keys, &tail, size, &format!("pack {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same blobs in a pack, the delta last; returns its keys-independent parts.
    fn fill(b: &mut PackBuilder, keys: &Keys) -> Id {
        for i in 0..10u8 {
            let plain = vec![i; 1000];
            let id = keys.blob_id(&plain);
            let sealed = crate::crypto::seal_blob(keys, &id, &plain, 3).unwrap();
            b.add(BlobKind::Data, id, &sealed, 1000, None).unwrap();
        }
        // A delta entry carries its base through the trailer and index files.
        let base = keys.blob_id(&[4u8; 1000]);
        let plain = b"a delta's payload".to_vec();
        let did = keys.blob_id(&plain);
        let sealed = crate::crypto::seal_blob(keys, &did, &plain, 3).unwrap();
        b.add(
            BlobKind::Delta,
            did,
            &sealed,
            plain.len() as u32,
            Some(base),
        )
        .unwrap();
        base
    }

    #[test]
    fn build_and_parse() {
        let keys = Keys::from_master(&[3u8; 32]);
        let mut b = PackBuilder::default();
        let base = fill(&mut b, &keys);
        let FinishedPack {
            id,
            bytes,
            entries,
            len,
            ..
        } = b.finish(&keys).unwrap();
        let PackBytes::Mem(bytes) = bytes else {
            panic!("a default pack is built in memory")
        };
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(id, Id::hash_of(&bytes));
        assert_eq!(entries[10].base, Some(base));
        let (_, ix) = crate::index::encode_file(&keys, &[(id, entries.clone())]).unwrap();
        let back = crate::index::decode_file(&keys, &ix, "i").unwrap();
        assert_eq!(back, vec![(id, entries.clone())]);
        let parsed = parse_trailer(&keys, &bytes, bytes.len() as u64, "p").unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(blob_four(&keys, &bytes, &entries), vec![4u8; 1000]);
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 0x40;
        assert!(parse_trailer(&keys, &bad, n as u64, "p").is_err());
    }

    /// The fifth blob `fill` added, opened from the pack's bytes.
    fn blob_four(keys: &Keys, pack: &[u8], entries: &[PackEntry]) -> Vec<u8> {
        let e = entries[4];
        let sealed = &pack[e.offset as usize..(e.offset + e.len) as usize];
        let check = crate::crypto::IdCheck::Rehash;
        crate::crypto::open_blob(keys, &e.id, sealed, 1000, &|| "b".into(), check).unwrap()
    }

    #[test]
    fn a_spooled_pack_is_the_pack_built_in_memory() {
        let keys = Keys::from_master(&[3u8; 32]);
        let dir = tempfile::tempdir().unwrap();
        let local = crate::backend::local::LocalBackend::new(dir.path());
        let mut spooled = PackBuilder::new_for(&local, Vec::new(), 1 << 20).unwrap();
        let mut mem = PackBuilder::default();
        fill(&mut spooled, &keys);
        fill(&mut mem, &keys);
        // Sealing uses random nonces: compare the entries, the stored pack against its
        // name, and what a blob of it opens to.
        let (s, m) = (spooled.finish(&keys).unwrap(), mem.finish(&keys).unwrap());
        assert!(matches!(s.bytes, PackBytes::Spooled(_)));
        assert_eq!(s.entries, m.entries);
        let path = pack_path(&s.id);
        s.bytes.store(&local, &path).0.unwrap();
        let stored = local.read(&path).unwrap();
        assert_eq!(Id::hash_of(&stored), s.id);
        assert_eq!(stored.len() as u64, s.len);
        assert_eq!(
            parse_trailer(&keys, &stored, s.len, "p").unwrap(),
            m.entries
        );
        assert_eq!(blob_four(&keys, &stored, &s.entries), vec![4u8; 1000]);
        // Nothing but the pack is left in data/: the temp file went with the finish.
        let mut names = Vec::new();
        for d in std::fs::read_dir(dir.path().join("data")).unwrap() {
            names.push(d.unwrap().file_name().to_string_lossy().into_owned());
        }
        assert_eq!(names, vec![path[5..7].to_string()]);
        // A spool dropped unfinished leaves nothing.
        let mut gone = PackBuilder::new_for(&local, Vec::new(), 1 << 20).unwrap();
        fill(&mut gone, &keys);
        drop(gone);
        assert_eq!(
            std::fs::read_dir(dir.path().join("data")).unwrap().count(),
            1
        );
    }
}
