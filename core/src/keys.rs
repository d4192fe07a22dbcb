//! Managing the key files of an open repository: several passphrases for one master secret
//! (one per administrator or host), added, listed, rotated and removed.

use serde::Serialize;

use crate::keyfile::{self, KdfParams};
use crate::{Error, Id, Repository, Result};

/// One key file as `key list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// Its id (the name under `keys/`).
    pub id: Id,
    /// Host that made it.
    pub host: String,
    /// User that made it (empty for older key files).
    pub user: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Its Argon2id cost.
    pub kdf: KdfParams,
    /// Whether it opened this repository handle.
    pub current: bool,
    /// Why it cannot be read, when it is damaged (then the fields above are empty and
    /// `kdf` is zero): `key remove` removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

impl Repository {
    /// Every key file, the one in use marked.
    ///
    /// # Errors
    /// A key file that cannot be read or parsed; backend errors.
    pub fn key_list(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for o in self.backend().list("keys/")? {
            let Ok(id) = Id::from_hex(o.path.trim_start_matches("keys/")) else {
                continue;
            };
            // A damaged key file is listed as such (so that it can be removed), never an
            // error that hides the others.
            // A key file is named by the hash of its content: one byte changed anywhere
            // (even inside its sealed secret, which `describe` does not open) shows.
            match self.backend().read(&o.path).and_then(|b| {
                if Id::hash_of(&b) != id {
                    return Err(crate::Error::corrupt(
                        format!("key file {}", id.short()),
                        "content does not match its name",
                    ));
                }
                keyfile::describe(&b, &o.path)
            }) {
                Ok(kf) => out.push(KeyInfo {
                    id,
                    host: kf.host,
                    user: kf.user,
                    created: kf.created,
                    kdf: kf.params,
                    current: o.path == self.key_path(),
                    damaged: None,
                }),
                Err(e) => out.push(KeyInfo {
                    id,
                    host: String::new(),
                    user: String::new(),
                    created: String::new(),
                    kdf: KdfParams {
                        m_kib: 0,
                        t: 0,
                        p: 0,
                    },
                    current: false,
                    damaged: Some(e.to_string()),
                }),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Adds a key file wrapping the master secret under `passphrase`; returns its id.
    ///
    /// # Errors
    /// KDF parameters out of bounds; backend errors.
    pub fn key_add(&self, passphrase: &[u8], kdf: KdfParams) -> Result<Id> {
        let kf = keyfile::wrap(self.master(), passphrase, kdf)?;
        let id = Id::hash_of(&kf);
        self.backend().create(&format!("keys/{id}"), &kf)?;
        Ok(id)
    }

    /// Removes a key file: never the last good one, and not the one in use unless `force`;
    /// a damaged one always.
    ///
    /// # Errors
    /// [`Error::Invalid`] for the last key or the one in use; [`Error::NeedsDeleteRights`];
    /// no key with that id (or prefix).
    pub fn key_remove(&self, selector: &str, force: bool) -> Result<Id> {
        let keys = self.key_list()?;
        let sel = selector.to_ascii_lowercase();
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| !sel.is_empty() && k.id.to_hex().starts_with(&sel))
            .collect();
        let k = match matches.as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::Invalid(format!(
                    "no key {selector:?} (see `dbvault key list`)"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{selector:?} matches several keys: give more of the id"
                )))
            }
        };
        let good = keys.iter().filter(|k| k.damaged.is_none()).count();
        if k.damaged.is_none() && good == 1 {
            return Err(Error::Invalid(
                "that is the repository's only key: without it nothing can be read; add another first".into(),
            ));
        }
        if k.current && !force {
            return Err(Error::Invalid(format!(
                "key {} is the one this command opened the repository with; pass --force to remove it anyway",
                k.id.short()
            )));
        }
        self.ensure_delete_rights("key remove")?;
        self.backend().remove(&format!("keys/{}", k.id))?;
        Ok(k.id)
    }
}
