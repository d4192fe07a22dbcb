//! A part's metadata as a typed value: written and read back by the type that owns it.

use std::collections::BTreeMap;

use dbvault_core::Part;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `value`'s fields as a part's meta.
pub(crate) fn to_meta<T: Serialize>(value: &T) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// A part's meta as `T` (its defaults where the part lacks them).
pub(crate) fn from_meta<T: DeserializeOwned + Default>(part: &Part) -> T {
    let m: serde_json::Map<String, serde_json::Value> = part
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::from_value(serde_json::Value::Object(m)).unwrap_or_default()
}
