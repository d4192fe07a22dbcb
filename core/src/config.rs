//! The repository's `config` object: plaintext, so a repository can be recognised and its
//! cache named before a passphrase is given, and authenticated by the master key from format
//! 3 on, so nobody with write access to the store can change how the next backup chunks or
//! compresses (or downgrade it to the unauthenticated format) without every command
//! refusing to open it.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::keyfile::KeyFormat;
use crate::pack::DEFAULT_PACK_TARGET;
use crate::{Error, Id, Result};

/// Repository format version this build writes.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest format version this build reads (format 2: `config` without a MAC).
pub const OLDEST_VERSION: u32 = 2;

/// The plaintext `config` object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RepoConfig {
    /// Format version.
    pub version: u32,
    /// Random repository id (names the local cache).
    pub id: Id,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Pack size target in bytes.
    pub pack_target: u32,
    /// zstd level for blobs.
    pub compression: i32,
    /// Keyed BLAKE3 (hex) of the fields above, serialised without this one: present from
    /// format 3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            version: FORMAT_VERSION,
            id: Id::default(),
            chunker: ChunkerParams::default(),
            pack_target: DEFAULT_PACK_TARGET,
            // Level 1: on SQL dumps it compresses as well as level 3 at twice the speed.
            compression: 1,
            mac: None,
        }
    }
}

fn mac_of(config: &RepoConfig, master: &[u8; 32]) -> Result<blake3::Hash> {
    let key = zeroize::Zeroizing::new(blake3::derive_key(
        "dbvault 2026-12 repository config mac",
        master,
    ));
    let body = serde_json::to_vec(&RepoConfig {
        mac: None,
        ..config.clone()
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(blake3::keyed_hash(&key, &body))
}

impl RepoConfig {
    /// Parses `config` as stored and checks what can be checked without a key.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it does not parse; [`Error::UnsupportedVersion`].
    pub fn parse(raw: &[u8]) -> Result<RepoConfig> {
        let config: RepoConfig =
            serde_json::from_slice(raw).map_err(|e| Error::corrupt("config", e.to_string()))?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&config.version) {
            return Err(Error::UnsupportedVersion {
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        config.chunker.validate()?;
        Ok(config)
    }

    /// The stored form of a new repository's config, with its MAC.
    ///
    /// # Errors
    /// Only if serialisation fails.
    pub fn sealed_bytes(&mut self, master: &[u8; 32]) -> Result<Vec<u8>> {
        self.version = FORMAT_VERSION;
        self.mac = Some(mac_of(self, master)?.to_hex().to_string());
        serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Checks the config against the master key that opened it: a format-3 config must carry
    /// its MAC, and a format-3 key must not meet a config that claims an older format.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `config` when it was altered.
    pub fn authenticate(&self, master: &[u8; 32], key: KeyFormat) -> Result<()> {
        let altered = |detail: &str| {
            Error::corrupt(
                "config",
                format!(
                    "{detail}: it was altered after the repository was made (restore the \
                     original config object; nothing was read or written)"
                ),
            )
        };
        if self.version < 3 {
            return match key {
                KeyFormat::V2 => Ok(()),
                KeyFormat::V3 => Err(altered(
                    "it claims format 2 (no MAC) but the repository's keys belong to format 3",
                )),
            };
        }
        let Some(stored) = self.mac.as_deref() else {
            return Err(altered("its MAC is missing"));
        };
        let stored = blake3::Hash::from_hex(stored).map_err(|_| altered("its MAC is malformed"))?;
        // blake3::Hash compares in constant time.
        if stored != mac_of(self, master)? {
            return Err(altered(
                "its parameters do not match the MAC made with the repository key",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_edit_is_detected() {
        let master = [7u8; 32];
        let mut c = RepoConfig::default();
        let bytes = c.sealed_bytes(&master).unwrap();
        let parsed = RepoConfig::parse(&bytes).unwrap();
        parsed.authenticate(&master, KeyFormat::V3).unwrap();
        assert!(parsed.authenticate(&[8u8; 32], KeyFormat::V3).is_err());
        let mut edited = parsed.clone();
        edited.compression = 19;
        let e = edited.authenticate(&master, KeyFormat::V3).unwrap_err();
        assert!(e.to_string().contains("do not match the MAC"), "{e}");
        let mut stripped = parsed.clone();
        stripped.mac = None;
        stripped.version = 2;
        let e = stripped.authenticate(&master, KeyFormat::V3).unwrap_err();
        assert!(e.to_string().contains("claims format 2"), "{e}");
        // A format-2 repository (no MAC, old keys) still opens.
        stripped.authenticate(&master, KeyFormat::V2).unwrap();
    }
}
