//! Which snapshots `latest`, listings and retention consider.

use crate::{Id, Snapshot};

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

impl crate::Repository {
    /// The newest readable snapshot (of `name`, when given) taken at or before `t`: the
    /// state of a source at a point in time.
    ///
    /// # Errors
    /// [`crate::Error::SnapshotNotFound`] when none is that old; the snapshots cannot be listed.
    pub fn find_at(
        &self,
        name: Option<&str>,
        t: chrono::DateTime<chrono::FixedOffset>,
    ) -> crate::error::Result<(Id, Snapshot)> {
        let (all, _) = self.readable_snapshots()?;
        all.into_iter()
            .rfind(|(_, s)| name.is_none_or(|n| s.name == n) && s.time <= t)
            .ok_or_else(|| crate::Error::SnapshotNotFound {
                selector: format!(
                    "at or before {}{}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                    name.map(|n| format!(" (name {n})")).unwrap_or_default()
                ),
            })
    }

    /// The newest readable snapshot of `name`, without asking whether a newer one vanished
    /// (the base for a backup's deltas).
    ///
    /// # Errors
    /// The snapshots cannot be listed.
    pub fn newest_of(&self, name: &str) -> crate::error::Result<Option<(Id, Snapshot)>> {
        let (all, _) = self.readable_snapshots()?;
        Ok(all.into_iter().rfind(|(_, s)| s.name == name))
    }
}
