//! The index: which pack holds which blob.
//!
//! On storage, `index/<id>` files each describe some packs: `seal(zstd("DBVIDX01"
//! (pack id, count, entries)*))`. In memory the whole index is one sorted vector of 48-byte
//! entries and a table of pack ids, so memory grows by 48 bytes per chunk (SPEC: at most 64)
//! and lookups are a binary search.

use rayon::prelude::*;

use crate::backend::Backend;
use crate::crypto::Keys;
use crate::pack::{decode_entries, encode_entries, BlobKind, PackEntry};
use crate::{Error, Id, Result};

const MAGIC: &[u8; 8] = b"DBVIDX01";
const AAD: &[u8] = b"dbvault index";

/// Where a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    /// Pack id.
    pub pack: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length.
    pub len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored as a delta against another blob.
    pub delta: bool,
}

/// Marks delta blobs in the in-memory entry's plaintext length (blobs are far below 1 GiB),
/// keeping entries at 48 bytes.
const DELTA_BIT: u32 = 1 << 31;
/// Marks list blobs the same way.
const LIST_BIT: u32 = 1 << 30;
const KIND_BITS: u32 = DELTA_BIT | LIST_BIT;

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: Id,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
}

/// The in-memory index of a repository.
#[derive(Default)]
pub struct Index {
    /// Pack id of each pack record read (a pack named by two index files has two).
    packs: Vec<Id>,
    /// Index file (position in `files`) of each pack record.
    pack_file: Vec<u32>,
    entries: Vec<Entry>,
    files: Vec<Id>,
    /// Index files that could not be read (path: why), when this index was completed
    /// from pack trailers instead ([`Index::add_recovered`]).
    damaged: Vec<String>,
}

/// Index files decoded at once while loading: bounds the transient memory.
const LOAD_BATCH: usize = 16;

/// The packs one index file describes.
pub type IndexContent = Vec<(Id, Vec<PackEntry>)>;

/// Encodes and seals an index file; returns its id and bytes.
///
/// # Errors
/// Only if compression or the random source fails.
pub fn encode_file(keys: &Keys, packs: &[(Id, Vec<PackEntry>)]) -> Result<(Id, Vec<u8>)> {
    let mut plain = MAGIC.to_vec();
    for (pack, entries) in packs {
        plain.extend_from_slice(&pack.0);
        plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        encode_entries(&mut plain, entries);
    }
    let z = zstd::bulk::compress(&plain, 3).map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
    let sealed = keys.seal(&z, AAD)?;
    Ok((Id::hash_of(&sealed), sealed))
}

/// Opens and parses an index file.
///
/// # Errors
/// [`Error::Corrupt`] naming the file when it fails authentication or does not parse.
pub fn decode_file(keys: &Keys, sealed: &[u8], name: &str) -> Result<IndexContent> {
    let what = format!("index file {name}");
    let z = keys.open(sealed, AAD, &|| what.clone())?;
    let plain =
        zstd::stream::decode_all(&z[..]).map_err(|e| Error::corrupt(&what, e.to_string()))?;
    let mut rest = plain
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| Error::corrupt(&what, "bad magic"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 36 {
            return Err(Error::corrupt(&what, "truncated pack record"));
        }
        let mut pack = [0u8; 32];
        pack.copy_from_slice(&rest[..32]);
        let count = u32::from_le_bytes([rest[32], rest[33], rest[34], rest[35]]) as usize;
        let (entries, r) = decode_entries(&rest[36..], count, &what)?;
        out.push((Id(pack), entries));
        rest = r;
    }
    Ok(out)
}

/// Reads and decodes one index file.
///
/// # Errors
/// [`Error::Corrupt`] naming the file; backend errors.
pub fn read_file(backend: &dyn Backend, keys: &Keys, path: &str) -> Result<IndexContent> {
    let bytes = backend.read(path)?;
    decode_file(keys, &bytes, path)
}

/// The id of an index file from its path.
///
/// # Errors
/// [`Error::Corrupt`] for a foreign name.
pub fn file_id(path: &str) -> Result<Id> {
    Id::from_hex(path.trim_start_matches("index/"))
        .map_err(|_| Error::corrupt(path, "unexpected name"))
}

/// The object path of an index file.
pub fn index_path(id: &Id) -> String {
    format!("index/{id}")
}

impl Index {
    /// Reads every index file of a repository (in parallel: on an object store the
    /// latency dominates).
    ///
    /// # Errors
    /// The first damaged or unreadable index file.
    pub fn load(backend: &dyn Backend, keys: &Keys) -> Result<Index> {
        let (idx, mut damaged) = Index::load_inner(backend, keys, false)?;
        match damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(idx),
        }
    }

    /// Like [`Index::load`], but skips damaged or unreadable index files and returns them
    /// (path, error) beside the index of the others: what `check` needs.
    ///
    /// # Errors
    /// Only when the index files cannot be listed.
    pub fn load_lenient(
        backend: &dyn Backend,
        keys: &Keys,
    ) -> Result<(Index, Vec<(String, Error)>)> {
        Index::load_inner(backend, keys, true)
    }

    fn load_inner(
        backend: &dyn Backend,
        keys: &Keys,
        lenient: bool,
    ) -> Result<(Index, Vec<(String, Error)>)> {
        let files = backend.list("index/")?;
        let mut idx = Index::default();
        let mut damaged = Vec::new();
        // Every entry stores a 32-byte random id, which does not compress: the files' size
        // over 32 bounds the entry count, so one allocation suffices (no doubling).
        let bound = files.iter().map(|f| f.size).sum::<u64>() / 32;
        idx.entries
            .reserve_exact(usize::try_from(bound).unwrap_or(usize::MAX));
        for batch in files.chunks(LOAD_BATCH) {
            let decoded: Vec<(String, Result<(Id, IndexContent)>)> = batch
                .par_iter()
                .map(|f| {
                    let r = file_id(&f.path)
                        .and_then(|id| Ok((id, read_file(backend, keys, &f.path)?)));
                    (f.path.clone(), r)
                })
                .collect();
            for (path, r) in decoded {
                let (file, content) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        damaged.push((path, e));
                        if lenient {
                            continue;
                        }
                        return Ok((idx, damaged));
                    }
                };
                let f = idx.files.len() as u32;
                idx.files.push(file);
                for (pack, entries) in content {
                    idx.pack_file.push(f);
                    idx.add_pack(pack, &entries);
                }
            }
        }
        idx.finalize();
        Ok((idx, damaged))
    }

    fn add_pack(&mut self, pack: Id, entries: &[PackEntry]) {
        let p = self.packs.len() as u32;
        self.packs.push(pack);
        self.entries.extend(entries.iter().map(|e| Entry {
            id: e.id,
            pack: p,
            offset: e.offset,
            len: e.len,
            raw_len: e.raw_len
                | match e.kind {
                    BlobKind::Delta => DELTA_BIT,
                    BlobKind::List => LIST_BIT,
                    BlobKind::Data => 0,
                },
        }));
    }

    fn finalize(&mut self) {
        // The same blob may sit in two packs (two backups racing, an interrupted prune);
        // one copy is enough: the one in the lowest pack id, so every process picks the
        // same copy whatever order the index files were listed in.
        let packs = &self.packs;
        self.entries.sort_unstable_by(|a, b| {
            a.id.cmp(&b.id)
                .then_with(|| packs[a.pack as usize].cmp(&packs[b.pack as usize]))
        });
        self.entries.dedup_by(|a, b| a.id == b.id);
        self.entries.shrink_to_fit();
    }

    /// Finds a blob.
    pub fn get(&self, id: &Id) -> Option<BlobLoc> {
        let i = self.entries.binary_search_by(|e| e.id.cmp(id)).ok()?;
        let e = self.entries[i];
        Some(BlobLoc {
            pack: self.packs[e.pack as usize],
            offset: e.offset,
            len: e.len,
            raw_len: e.raw_len & !KIND_BITS,
            delta: e.raw_len & DELTA_BIT != 0,
        })
    }

    /// Position of a blob among the index's distinct blobs (`0..blob_count()`): lets a
    /// caller keep one bit per blob instead of a set of ids.
    pub fn position(&self, id: &Id) -> Option<usize> {
        self.entries.binary_search_by(|e| e.id.cmp(id)).ok()
    }

    /// The blob at `position`: its id, location and pack record (`0..pack_records()`).
    /// (Delta bases are not kept in memory; the index files and pack trailers name them.)
    ///
    /// # Panics
    /// If `position >= blob_count()`.
    pub fn entry_at(&self, position: usize) -> (Id, BlobLoc, usize) {
        let e = self.entries[position];
        let loc = BlobLoc {
            pack: self.packs[e.pack as usize],
            offset: e.offset,
            len: e.len,
            raw_len: e.raw_len & !KIND_BITS,
            delta: e.raw_len & DELTA_BIT != 0,
        };
        (e.id, loc, e.pack as usize)
    }

    /// Number of pack records read (a pack named by two index files counts twice).
    pub fn pack_records(&self) -> usize {
        self.packs.len()
    }

    /// The pack id and the index file of a pack record.
    ///
    /// # Panics
    /// If `record >= pack_records()`.
    pub fn pack_record(&self, record: usize) -> (Id, Id) {
        (
            self.packs[record],
            self.files[self.pack_file[record] as usize],
        )
    }

    /// True if the blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.entries.binary_search_by(|e| e.id.cmp(id)).is_ok()
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of packs the index names.
    pub fn pack_count(&self) -> usize {
        let mut p = self.packs.clone();
        p.sort_unstable();
        p.dedup();
        p.len()
    }

    /// Ids of the index files loaded.
    pub fn files(&self) -> &[Id] {
        &self.files
    }

    /// Index files that were damaged when this index was loaded (then completed from pack
    /// trailers): `repair index` rewrites them; `prune` refuses until it has.
    pub fn damaged(&self) -> &[String] {
        &self.damaged
    }

    /// Adds packs read from their trailers in place of `damaged` index files.
    pub(crate) fn add_recovered(&mut self, damaged: Vec<String>, packs: &[(Id, Vec<PackEntry>)]) {
        // They belong to no index file: a name no file has stands for "the trailers".
        let f = self.files.len() as u32;
        self.files
            .push(Id::hash_of(b"dbvault: recovered from pack trailers"));
        for (pack, entries) in packs {
            self.pack_file.push(f);
            self.add_pack(*pack, entries);
        }
        self.damaged = damaged;
        self.finalize();
    }
}
