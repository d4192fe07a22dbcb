//! Which snapshots `latest`, listings and retention consider.

use crate::Snapshot;

/// Which snapshots `latest` (and listings) consider: a source name, a host, tags (all of
/// them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// The source name.
    pub name: Option<String>,
    /// The host that took it.
    pub host: Option<String>,
    /// Tags it must all have.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    #[must_use]
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.name.as_deref().is_none_or(|n| s.name == n)
            && self.host.as_deref().is_none_or(|h| s.host == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
    }

    /// True when it lets every snapshot through but by name.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.tags.is_empty()
    }

    /// `name shop, host db1, tag pre-migration` for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(n) = &self.name {
            v.push(format!("name {n}"));
        }
        if let Some(h) = &self.host {
            v.push(format!("host {h}"));
        }
        v.extend(self.tags.iter().map(|t| format!("tag {t}")));
        v.join(", ")
    }
}
