//! 32-byte identifiers of blobs, packs, index files, snapshots and keys.

use std::fmt;

/// A 32-byte identifier, printed as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Unkeyed BLAKE3 of `data`: used for objects whose bytes are already ciphertext.
    pub fn hash_of(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// Random id.
    ///
    /// # Errors
    /// Fails only if the operating system has no entropy source.
    pub fn random() -> crate::Result<Id> {
        let mut b = [0u8; 32];
        crate::crypto::fill_random(&mut b)?;
        Ok(Id(b))
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] when `s` is not 64 hex digits.
    pub fn from_hex(s: &str) -> crate::Result<Id> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| crate::Error::Invalid(format!("not an id: {s:?}")))?;
        Ok(Id(b))
    }

    /// First 8 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).map_err(serde::de::Error::custom)
    }
}
