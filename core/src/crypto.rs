//! Keys derived from the master secret, authenticated encryption and keyed ids.
//!
//! Every stored object but `config` is sealed with XChaCha20-Poly1305 under a random 24-byte
//! nonce: `nonce || ciphertext || tag`. The associated data binds the ciphertext to its role
//! (a blob is bound to its own id), so swapping two valid objects is detected too.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{Error, Id, Result};

/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Fills `buf` with random bytes from the operating system.
///
/// # Errors
/// [`Error::Invalid`] if the OS has no entropy source.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| Error::Invalid(format!("no random source: {e}")))
}

/// The working keys of an open repository, all derived from the 32-byte master secret.
#[derive(Clone)]
pub struct Keys {
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
    chunker_seed: u64,
    gear: std::sync::Arc<crate::chunker::Gear>,
}

impl Drop for Keys {
    // The cipher wipes its own key on drop; the id key is ours to wipe.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.id_key);
        zeroize::Zeroize::zeroize(&mut self.chunker_seed);
    }
}

impl Keys {
    /// Derives the working keys from a master secret.
    pub fn from_master(master: &[u8; 32]) -> Keys {
        let enc = zeroize::Zeroizing::new(blake3::derive_key(
            "dbvault 2026-11 object encryption key",
            master,
        ));
        let id_key = blake3::derive_key("dbvault 2026-11 blob id key", master);
        let seed =
            zeroize::Zeroizing::new(blake3::derive_key("dbvault 2026-11 chunker seed", master));
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        Keys {
            cipher: XChaCha20Poly1305::new((&*enc).into()),
            id_key,
            chunker_seed: u64::from_le_bytes(s),
            gear: std::sync::Arc::new(crate::chunker::Gear::keyed(master)),
        }
    }

    /// The keys as a repository of format `version` uses them: before format 3 the
    /// chunker's gear table was fastcdc's public one XOR the seed (kept, so new backups of
    /// an old repository still dedup against its old ones).
    #[must_use]
    pub fn for_format(mut self, version: u32) -> Keys {
        if version < 3 {
            self.gear = std::sync::Arc::new(crate::chunker::Gear::seeded(self.chunker_seed));
        }
        self
    }

    /// The content-defined chunker's secret gear table.
    pub fn gear(&self) -> &std::sync::Arc<crate::chunker::Gear> {
        &self.gear
    }

    /// Keyed BLAKE3 of a blob's plaintext: its id. Without the key, ids reveal nothing.
    pub fn blob_id(&self, plain: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plain).as_bytes())
    }

    /// Seed of the content-defined chunker, so chunk boundaries are secret too.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Encrypts `plain` with associated data `aad`.
    ///
    /// # Errors
    /// Only if the OS random source fails.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        out.resize(NONCE_LEN, 0);
        fill_random(&mut out[..NONCE_LEN])?;
        out.extend_from_slice(plain);
        self.seal_in_place(&mut out, aad)?;
        Ok(out)
    }

    /// Encrypts `buf[24..]` in place: the caller reserved 24 bytes of nonce room at the front
    /// (their content is replaced); the tag is appended.
    ///
    /// # Errors
    /// Only if the OS random source fails.
    pub fn seal_in_place(&self, buf: &mut Vec<u8>, aad: &[u8]) -> Result<()> {
        fill_random(&mut buf[..NONCE_LEN])?;
        let (nonce, body) = buf.split_at_mut(NONCE_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, body)
            .map_err(|_| Error::Invalid("encryption failed".into()))?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts and authenticates a sealed object.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `what` when the object is truncated or fails authentication.
    pub fn open(&self, sealed: &[u8], aad: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what(),
                "too short to be an encrypted object",
            ));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut plain, tag.into())
            .map_err(|_| Error::corrupt(what(), "authentication failed (altered or truncated)"))?;
        Ok(plain)
    }
}

/// A thread's zstd context and the buffer it compresses into.
struct Compression {
    level: i32,
    ctx: zstd::bulk::Compressor<'static>,
    /// Reused: a fresh output buffer per blob had to be zeroed to zstd's bound first
    /// (measured: 2% of a first backup's CPU); the frame is copied out instead.
    out: Vec<u8>,
}

thread_local! {
    // A zstd context is ~1 MiB to set up; one per thread, reused, makes small blobs cheap.
    static COMPRESSOR: std::cell::RefCell<Option<Compression>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses then seals a blob; the blob id is the associated data.
///
/// # Errors
/// Only if compression or the random source fails.
pub fn seal_blob(keys: &Keys, id: &Id, plain: &[u8], level: i32) -> Result<Vec<u8>> {
    let zerr = |e: std::io::Error| Error::Invalid(format!("zstd: {e}"));
    let mut buf = COMPRESSOR.with(|c| -> Result<Vec<u8>> {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|z| z.level != level) {
            *c = Some(Compression {
                level,
                ctx: zstd::bulk::Compressor::new(level).map_err(zerr)?,
                out: Vec::new(),
            });
        }
        let z = c
            .as_mut()
            .ok_or_else(|| Error::Invalid("zstd context".into()))?;
        z.out.clear();
        z.out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        z.ctx.compress_to_buffer(plain, &mut z.out).map_err(zerr)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + z.out.len() + TAG_LEN);
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        buf.extend_from_slice(&z.out);
        if z.out.capacity() > 1 << 20 {
            z.out = Vec::new(); // a rare large blob: not kept for the thread's lifetime
        }
        Ok(buf)
    })?;
    keys.seal_in_place(&mut buf, &id.0)?;
    Ok(buf)
}

thread_local! {
    static DELTA_DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(data: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress(data, raw_len),
            None => Err(std::io::Error::other("zstd context")),
        }
    })
}

/// Compresses `plain` as a delta against `base` (a raw-content zstd dictionary), then seals
/// `base id || frame` with `id` as associated data.
///
/// # Errors
/// Only if compression or the random source fails.
pub fn seal_delta(
    keys: &Keys,
    id: &Id,
    plain: &[u8],
    base_id: &Id,
    base: &[u8],
    level: i32,
) -> Result<Vec<u8>> {
    let zerr = |e: std::io::Error| Error::Invalid(format!("zstd: {e}"));
    let mut c = zstd::bulk::Compressor::with_dictionary(level.max(3), base).map_err(zerr)?;
    let frame = c.compress(plain).map_err(zerr)?;
    let mut buf = Vec::with_capacity(NONCE_LEN + 32 + frame.len() + TAG_LEN);
    buf.resize(NONCE_LEN, 0);
    buf.extend_from_slice(&base_id.0);
    buf.extend_from_slice(&frame);
    keys.seal_in_place(&mut buf, &id.0)?;
    Ok(buf)
}

/// The base id a sealed delta blob names (authenticates it first).
///
/// # Errors
/// [`Error::Corrupt`] naming `what` on failed authentication or a short payload.
pub fn delta_base(
    keys: &Keys,
    id: &Id,
    sealed: &[u8],
    what: &dyn Fn() -> String,
) -> Result<(Id, Vec<u8>)> {
    let payload = keys.open(sealed, &id.0, what)?;
    if payload.len() < 32 {
        return Err(Error::corrupt(what(), "delta blob too short"));
    }
    let mut b = [0u8; 32];
    b.copy_from_slice(&payload[..32]);
    Ok((Id(b), payload))
}

/// Whether an opened blob's plaintext is hashed again and compared with its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdCheck {
    /// Re-hash it: the blob is used on its own (a chunk list, a delta base, `check`).
    Rehash,
    /// Trust the authentication tag, which binds the sealed bytes to the id (the id is
    /// their associated data), so damage still fails to open. For a part's chunks when the
    /// caller checks the part's own BLAKE3 over them: re-hashing as well hashed every
    /// restored byte twice (9% of a stream restore's CPU).
    TagOnly,
}

impl IdCheck {
    fn holds(self, keys: &Keys, id: &Id, plain: &[u8], raw_len: usize) -> bool {
        plain.len() == raw_len && (self == IdCheck::TagOnly || keys.blob_id(plain) == *id)
    }
}

/// Finishes a delta blob opened with [`delta_base`]: decompresses against the base's
/// plaintext and verifies the id as `check` says.
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when decompression or the id check fails.
pub fn finish_delta(
    keys: &Keys,
    id: &Id,
    payload: &[u8],
    raw_len: usize,
    base: &[u8],
    what: &dyn Fn() -> String,
    check: IdCheck,
) -> Result<Vec<u8>> {
    // One context per thread, the base loaded into it for each delta: a new context per
    // delta (allocated and initialised) was 1% of a restore's time.
    let plain = DELTA_DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            match d.as_mut() {
                Some(d) => {
                    d.set_dictionary(base)?;
                    d.decompress(&payload[32..], raw_len)
                }
                None => Err(std::io::Error::other("zstd context")),
            }
        })
        .map_err(|e| Error::corrupt(what(), format!("delta does not decompress: {e}")))?;
    if !check.holds(keys, id, &plain, raw_len) {
        return Err(Error::corrupt(
            what(),
            format!("blob {} does not match its id", id.short()),
        ));
    }
    Ok(plain)
}

/// Opens, decompresses and verifies a blob: the result is exactly the plaintext whose keyed
/// hash is `id` (checked as `check` says), or an error.
///
/// # Errors
/// [`Error::Corrupt`] naming `what` when authentication, decompression or the id check fails.
pub fn open_blob(
    keys: &Keys,
    id: &Id,
    sealed: &[u8],
    raw_len: usize,
    what: &dyn Fn() -> String,
    check: IdCheck,
) -> Result<Vec<u8>> {
    let compressed = keys.open(sealed, &id.0, what)?;
    let plain = decompress(&compressed, raw_len)
        .map_err(|e| Error::corrupt(what(), format!("does not decompress: {e}")))?;
    if !check.holds(keys, id, &plain, raw_len) {
        return Err(Error::corrupt(
            what(),
            format!("blob {} does not match its id", id.short()),
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let keys = Keys::from_master(&[7u8; 32]);
        let sealed = keys.seal(b"hello", b"ctx").unwrap();
        assert_eq!(
            keys.open(&sealed, b"ctx", &|| "x".into()).unwrap(),
            b"hello"
        );
        assert!(keys.open(&sealed, b"other", &|| "x".into()).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                keys.open(&bad, b"ctx", &|| "x".into()).is_err(),
                "bit flip at {i} undetected"
            );
        }
    }

    #[test]
    fn blob_round_trip_and_id_binding() {
        let keys = Keys::from_master(&[1u8; 32]);
        let data = b"some table rows\n".repeat(100);
        let id = keys.blob_id(&data);
        let sealed = seal_blob(&keys, &id, &data, 3).unwrap();
        assert!(sealed.len() < data.len());
        let open =
            |id: &Id, check| open_blob(&keys, id, &sealed, data.len(), &|| "b".into(), check);
        assert_eq!(open(&id, IdCheck::Rehash).unwrap(), data);
        let other = keys.blob_id(b"x");
        assert!(open(&other, IdCheck::Rehash).is_err());
        // Without the re-hash the tag still binds the sealed bytes to their id.
        assert!(open(&other, IdCheck::TagOnly).is_err());
        assert_eq!(open(&id, IdCheck::TagOnly).unwrap(), data);
    }

    #[test]
    fn ids_depend_on_the_key() {
        let a = Keys::from_master(&[1u8; 32]);
        let b = Keys::from_master(&[2u8; 32]);
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_ne!(a.blob_id(b"same"), Id::hash_of(b"same"));
        assert_ne!(a.chunker_seed(), b.chunker_seed());
    }
}
