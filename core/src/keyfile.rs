//! Key files: the master secret wrapped by a passphrase (Argon2id + XChaCha20-Poly1305).
//!
//! Several key files may exist; each wraps the same master secret under a different
//! passphrase. A key file is `keys/<blake3 of its bytes>`.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::crypto::{fill_random, Keys};
use crate::{Error, Result};

/// The KDF cost used for new key files: OWASP's recommended Argon2id setting (19 MiB, 2
/// passes, 1 lane). About 40 ms here: every command pays it once, and memory stays small.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// The stored form of a key file (JSON).
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    /// Always "argon2id".
    pub kdf: String,
    /// KDF cost.
    pub params: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// Sealed master secret, hex.
    pub data: String,
    /// When the key was made (RFC 3339).
    pub created: String,
    /// Host that made it.
    pub host: String,
}

fn derive(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<Keys> {
    let params = Params::new(p.m_kib, p.t, p.p, Some(32))
        .map_err(|e| Error::Invalid(format!("bad KDF parameters: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| Error::Invalid(format!("key derivation failed: {e}")))?;
    Ok(Keys::from_master(&out))
}

const AAD: &[u8] = b"dbvault key file";

/// Wraps `master` under `passphrase`; returns the key file's bytes.
///
/// # Errors
/// Only if the KDF or the random source fails.
pub fn wrap(master: &[u8; 32], passphrase: &[u8], params: KdfParams) -> Result<Vec<u8>> {
    let mut salt = [0u8; 32];
    fill_random(&mut salt)?;
    let kek = derive(passphrase, &salt, params)?;
    let sealed = kek.seal(master, AAD)?;
    let kf = KeyFile {
        kdf: "argon2id".into(),
        params,
        salt: hex::encode(salt),
        data: hex::encode(sealed),
        created: chrono::Local::now().to_rfc3339(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
    };
    serde_json::to_vec_pretty(&kf).map_err(|e| Error::Invalid(e.to_string()))
}

/// Parses a key file: its KDF parameters, salt and sealed secret.
fn parse(bytes: &[u8], name: &str) -> Result<(KdfParams, Vec<u8>, Vec<u8>)> {
    let bad = |d: String| Error::corrupt(format!("key file {name}"), d);
    let kf: KeyFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if kf.kdf != "argon2id" {
        return Err(bad(format!("unknown kdf {:?}", kf.kdf)));
    }
    let salt = hex::decode(&kf.salt).map_err(|e| bad(e.to_string()))?;
    let sealed = hex::decode(&kf.data).map_err(|e| bad(e.to_string()))?;
    Ok((kf.params, salt, sealed))
}

/// Checks a key file's structure without a passphrase (for `check`: other people's keys
/// cannot be opened, but they can be seen to be whole): it parses, names a known KDF, and
/// its salt and sealed secret have the right sizes.
///
/// # Errors
/// [`Error::Corrupt`] naming the file.
pub fn validate(bytes: &[u8], name: &str) -> Result<()> {
    let (_, salt, sealed) = parse(bytes, name)?;
    // 24-byte nonce, 32-byte secret, 16-byte tag.
    if salt.len() != 32 || sealed.len() != 24 + 32 + 16 {
        return Err(Error::corrupt(
            format!("key file {name}"),
            "salt or sealed secret has the wrong size",
        ));
    }
    Ok(())
}

/// Unwraps a key file. `Ok(None)` means the passphrase does not open it.
///
/// # Errors
/// [`Error::Corrupt`] when the file does not parse.
pub fn unwrap(bytes: &[u8], passphrase: &[u8], name: &str) -> Result<Option<[u8; 32]>> {
    let (params, salt, sealed) = parse(bytes, name)?;
    let kek = derive(passphrase, &salt, params)?;
    match kek.open(&sealed, AAD, &|| String::new()) {
        Ok(m) if m.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(&m);
            Ok(Some(out))
        }
        Ok(_) => Err(Error::corrupt(
            format!("key file {name}"),
            "master secret has the wrong length",
        )),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let kf = wrap(&[9u8; 32], b"pw", p).unwrap();
        assert_eq!(unwrap(&kf, b"pw", "k").unwrap(), Some([9u8; 32]));
        assert_eq!(unwrap(&kf, b"wrong", "k").unwrap(), None);
        validate(&kf, "k").unwrap();
        let mut broken = kf.clone();
        broken.truncate(kf.len() - 20);
        assert!(validate(&broken, "k").is_err());
        let text = String::from_utf8(kf).unwrap();
        assert!(!text.contains("pw\""));
    }
}
