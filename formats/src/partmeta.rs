//! A part's metadata as a typed value: written and read back by the type that owns it.

use std::collections::BTreeMap;

use dbvault_core::Part;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{FormatError, Result};

/// `value`'s fields as a part's meta.
pub(crate) fn to_meta<T: Serialize>(value: &T) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// A part's meta as `T` (`T`'s own defaults for fields the part lacks: older versions
/// wrote fewer).
///
/// # Errors
/// A field that does not read as `T` says it (the part was written by a newer dbvault, or
/// damaged before it was sealed): an error, never a default that would be taken for data.
pub(crate) fn from_meta<T: DeserializeOwned>(part: &Part, what: &str) -> Result<T> {
    let m: serde_json::Map<String, serde_json::Value> = part
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| {
        FormatError::Invalid(format!(
            "part {:?}: its {what} record does not read ({e}); was it written by a newer dbvault?",
            part.name
        ))
    })
}
