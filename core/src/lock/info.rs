//! What a lock object holds, and who its process is: the host, PID, the PID namespace and
//! boot id (so a PID seen from another namespace or boot is never taken for a live one),
//! and the process's start time (so a reused PID is never taken for the holder).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{LockKind, AAD};
use crate::backend::Backend;
use crate::crypto::Keys;
use crate::{Error, Id, Result};

/// The content of a lock object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    /// Shared or exclusive.
    pub kind: LockKind,
    /// The command holding it.
    pub command: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Start time of that process (Linux clock ticks), to tell a reused pid apart.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The PID namespace of that process (the inode of `/proc/self/ns/pid`): a process
    /// id means something only inside its namespace (a container sharing the host name
    /// has its own).
    #[serde(default)]
    pub pid_ns: Option<u64>,
    /// The boot of that host (`/proc/sys/kernel/random/boot_id`).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// When the lock was first taken.
    pub created: DateTime<Utc>,
    /// When it was last refreshed.
    pub refreshed: DateTime<Utc>,
}

impl LockInfo {
    pub(super) fn mine(kind: LockKind, command: &str) -> LockInfo {
        let now = Utc::now();
        LockInfo {
            kind,
            command: command.to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            pid_ns: pid_namespace(),
            boot_id: boot_id(),
            created: now,
            refreshed: now,
        }
    }

    /// One line naming the holder, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} lock) by process {} on {} since {}",
            self.command,
            match self.kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            self.pid,
            self.host,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    /// Why this lock is stale, or `None` while its holder may be alive.
    pub(super) fn stale(&self, limit: Duration) -> Option<String> {
        // Judged by its process only when that process is one this one can see: same
        // host, same boot, same PID namespace. Otherwise (a container, another host, a
        // lock written before these were recorded) only by its refresh age.
        let same_space = self.host == gethostname::gethostname().to_string_lossy()
            && self.pid_ns.is_some()
            && self.pid_ns == pid_namespace()
            && self.boot_id.is_some()
            && self.boot_id == boot_id();
        if same_space {
            if let Some(start) = self.pid_start {
                if std::path::Path::new("/proc/self/stat").exists()
                    && process_start(self.pid) != Some(start)
                {
                    return Some(format!("process {} is gone", self.pid));
                }
            }
        }
        let age = Utc::now().signed_duration_since(self.refreshed);
        let limit_c = chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
        (age > limit_c).then(|| format!("not refreshed for {} s", age.num_seconds()))
    }
}

/// This process's PID namespace: the inode `/proc/self/ns/pid` links to.
fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// This boot of the host.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22), or
/// `None` when it does not exist or this is not Linux.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(super) fn encode(keys: &Keys, info: &LockInfo) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(info).map_err(|e| Error::Invalid(e.to_string()))?;
    keys.seal(&json, AAD)
}

pub(super) fn decode(keys: &Keys, bytes: &[u8], path: &str) -> Result<LockInfo> {
    let json = keys.open(bytes, AAD, &|| format!("lock {path}"))?;
    serde_json::from_slice(&json).map_err(|e| Error::corrupt(format!("lock {path}"), e.to_string()))
}

pub(super) fn write_lock(backend: &dyn Backend, keys: &Keys, info: &LockInfo) -> Result<String> {
    let path = format!("locks/{}", Id::random()?);
    backend.create_unique(&path, &encode(keys, info)?)?;
    Ok(path)
}
