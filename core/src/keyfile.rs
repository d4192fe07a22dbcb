//! Key files: the master secret wrapped by a passphrase (Argon2id + XChaCha20-Poly1305).
//!
//! Several key files may exist; each wraps the same master secret under a different
//! passphrase. A key file is `keys/<blake3 of its bytes>`.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::crypto::{fill_random, Keys};
use crate::{Error, Result};

/// The KDF cost used for new key files: Argon2id with 48 MiB, 3 passes, 1 lane, about four
/// times OWASP's online-login minimum (19 MiB, t=2), since a stolen key file is attacked
/// offline. RFC 9106's 64 MiB would alone break the 64 MiB memory budget of every command;
/// `init --kdf-memory`/`--kdf-passes` choose more.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    m_kib: 48 * 1024,
    t: 3,
    p: 1,
};

/// Upper bounds on the KDF parameters a key file may ask for. A planted key file must not make
/// every open take minutes or demand terabytes; these still allow 16 times the default cost.
pub const MAX_KDF: KdfParams = KdfParams {
    m_kib: 1024 * 1024,
    t: 64,
    p: 16,
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
    /// Operating-system user that made it (absent in older key files).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
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

/// Associated data of key files of format-2 repositories (read only).
const AAD_V2: &[u8] = b"dbvault key file";
/// Associated data of key files from format 3 on: a key file opens only as part of a
/// repository whose `config` is authenticated, so editing `config` back to format 2 (to
/// strip its MAC) makes the keys fail loudly instead of opening an unauthenticated config.
const AAD_V3: &[u8] = b"dbvault key file, format 3: config authenticated";

/// Which kind of repository a key file was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Format 2: `config` not authenticated.
    V2,
    /// Format 3 and later: `config` carries a MAC under the master key.
    V3,
}

impl KdfParams {
    /// Checks the parameters against [`MAX_KDF`] and Argon2's own minimums.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the parameter out of range.
    pub fn check_bounds(&self) -> Result<()> {
        let m = MAX_KDF;
        if self.p == 0 || self.p > m.p {
            return Err(Error::Invalid(format!(
                "Argon2 lanes {} out of range 1..={}",
                self.p, m.p
            )));
        }
        if self.t == 0 || self.t > m.t {
            return Err(Error::Invalid(format!(
                "Argon2 passes {} out of range 1..={}",
                self.t, m.t
            )));
        }
        if self.m_kib < 8 * self.p || self.m_kib > m.m_kib {
            return Err(Error::Invalid(format!(
                "Argon2 memory {} KiB out of range {}..={} KiB",
                self.m_kib,
                8 * self.p,
                m.m_kib
            )));
        }
        Ok(())
    }
}

/// Wraps `master` under `passphrase`; returns the key file's bytes.
///
/// # Errors
/// Only if the KDF or the random source fails.
pub fn wrap(master: &[u8; 32], passphrase: &[u8], params: KdfParams) -> Result<Vec<u8>> {
    params.check_bounds()?;
    let mut salt = [0u8; 32];
    fill_random(&mut salt)?;
    let kek = derive(passphrase, &salt, params)?;
    let sealed = kek.seal(master, AAD_V3)?;
    let kf = KeyFile {
        kdf: "argon2id".into(),
        params,
        salt: hex::encode(salt),
        data: hex::encode(sealed),
        created: chrono::Local::now().to_rfc3339(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        user: std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_default(),
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
    // Refused before any work: a planted file must not cost minutes or terabytes.
    kf.params.check_bounds().map_err(|e| bad(e.to_string()))?;
    let salt = hex::decode(&kf.salt).map_err(|e| bad(e.to_string()))?;
    let sealed = hex::decode(&kf.data).map_err(|e| bad(e.to_string()))?;
    Ok((kf.params, salt, sealed))
}

/// What `key list` shows of a key file (no secret).
///
/// # Errors
/// [`Error::Corrupt`] when it does not parse.
pub fn describe(bytes: &[u8], name: &str) -> Result<KeyFile> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(format!("key file {name}"), e.to_string()))
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

/// Unwraps a key file: the master secret and the repository format the key was made for.
/// `Ok(None)` means the passphrase does not open it.
///
/// # Errors
/// [`Error::Corrupt`] when the file does not parse or asks for KDF parameters beyond
/// [`MAX_KDF`].
pub fn unwrap(
    bytes: &[u8],
    passphrase: &[u8],
    name: &str,
) -> Result<Option<(zeroize::Zeroizing<[u8; 32]>, KeyFormat)>> {
    let (params, salt, sealed) = parse(bytes, name)?;
    let kek = derive(passphrase, &salt, params)?;
    for (aad, format) in [(AAD_V3, KeyFormat::V3), (AAD_V2, KeyFormat::V2)] {
        if let Ok(m) = kek.open(&sealed, aad, &String::new) {
            let m = zeroize::Zeroizing::new(m);
            if m.len() != 32 {
                return Err(Error::corrupt(
                    format!("key file {name}"),
                    "master secret has the wrong length",
                ));
            }
            let mut out = zeroize::Zeroizing::new([0u8; 32]);
            out.copy_from_slice(&m);
            return Ok(Some((out, format)));
        }
    }
    Ok(None)
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
        let (m, f) = unwrap(&kf, b"pw", "k").unwrap().unwrap();
        assert_eq!((*m, f), ([9u8; 32], KeyFormat::V3));
        assert!(unwrap(&kf, b"wrong", "k").unwrap().is_none());
        validate(&kf, "k").unwrap();
        let mut broken = kf.clone();
        broken.truncate(kf.len() - 20);
        assert!(validate(&broken, "k").is_err());
        let text = String::from_utf8(kf).unwrap();
        assert!(!text.contains("pw\""));
    }

    #[test]
    fn absurd_parameters_are_refused_without_deriving() {
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let kf = wrap(&[9u8; 32], b"pw", p).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&kf).unwrap();
        // 4 TiB: deriving would abort the process; the check must come first.
        v["params"]["m_kib"] = serde_json::json!(u32::MAX);
        let planted = serde_json::to_vec(&v).unwrap();
        let start = std::time::Instant::now();
        let e = unwrap(&planted, b"pw", "keys/x").err().unwrap().to_string();
        assert!(e.contains("keys/x") && e.contains("Argon2 memory"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        v["params"]["m_kib"] = serde_json::json!(64);
        v["params"]["t"] = serde_json::json!(1_000_000);
        let e = validate(&serde_json::to_vec(&v).unwrap(), "keys/x")
            .err()
            .unwrap();
        assert!(e.to_string().contains("Argon2 passes"), "{e}");
        assert!(wrap(
            &[9u8; 32],
            b"pw",
            KdfParams {
                m_kib: 64,
                t: 0,
                p: 1
            }
        )
        .is_err());
    }
}
