//! Restoring a base backup into a data directory, ready to replay the archive to a point
//! in time: the files (pg_basebackup's tar, byte for byte, unpacked by `tar`), then the
//! recovery settings in `postgresql.auto.conf` (`restore_command`, the target, the action
//! at the target) and `recovery.signal`. Starting the server then recovers.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use dbvault_core::{Repository, Snapshot};

use super::{BaseBackup, PART};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::read::write_part;

/// Where recovery stops, as PostgreSQL's `recovery_target_*` settings.
#[derive(Clone, Debug, Default)]
pub struct RecoveryTarget {
    /// `recovery_target_time` (a timestamp PostgreSQL reads, with its zone).
    pub time: Option<String>,
    /// `recovery_target_lsn`.
    pub lsn: Option<String>,
    /// `recovery_target_xid`.
    pub xid: Option<String>,
    /// `recovery_target_name` (a `pg_create_restore_point`).
    pub name: Option<String>,
    /// `recovery_target_action`: `promote`, `pause` or `shutdown` (PostgreSQL's default
    /// is `pause`).
    pub action: Option<String>,
    /// `recovery_target_timeline` (`current`, a number; `None` for PostgreSQL's default,
    /// `latest`): see [`super::timeline`].
    pub timeline: Option<String>,
    /// `recovery_target_inclusive` (`None`: PostgreSQL's default, on): off stops just
    /// before the target transaction or LSN (`--before-xid`, `--before-lsn`).
    pub inclusive: Option<bool>,
}

impl RecoveryTarget {
    /// Whether recovery stops before the end of the archive (a time, LSN, xid or name).
    pub fn has_target(&self) -> bool {
        self.time.is_some() || self.lsn.is_some() || self.xid.is_some() || self.name.is_some()
    }

    /// The settings, checked: at most one target; a known action.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the problem.
    pub fn settings(&self) -> Result<Vec<(&'static str, String)>> {
        let targets: Vec<(&'static str, &String)> = [
            ("recovery_target_time", &self.time),
            ("recovery_target_lsn", &self.lsn),
            ("recovery_target_xid", &self.xid),
            ("recovery_target_name", &self.name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        if targets.len() > 1 {
            return Err(FormatError::Invalid(
                "give one recovery target: --target-time, --target-lsn, --target-xid or --target-name".into(),
            ));
        }
        let mut out: Vec<(&'static str, String)> =
            targets.into_iter().map(|(k, v)| (k, v.clone())).collect();
        if let Some(a) = &self.action {
            if !["promote", "pause", "shutdown"].contains(&a.as_str()) {
                return Err(FormatError::Invalid(format!(
                    "--target-action {a:?}: use promote, pause or shutdown"
                )));
            }
            if out.is_empty() {
                return Err(FormatError::Invalid(
                    "--target-action needs a target (without one, recovery replays to the end and promotes)".into(),
                ));
            }
            out.push(("recovery_target_action", a.clone()));
        }
        if let Some(t) = &self.timeline {
            out.push(("recovery_target_timeline", t.clone()));
        }
        if let Some(i) = self.inclusive {
            if self.lsn.is_none() && self.xid.is_none() && self.time.is_none() {
                return Err(FormatError::Invalid(
                    "recovery_target_inclusive needs a target time, LSN or transaction".into(),
                ));
            }
            out.push((
                "recovery_target_inclusive",
                if i { "on" } else { "off" }.into(),
            ));
        }
        Ok(out)
    }
}

/// Whether a restored data directory archives WAL when started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// `archive_mode = off` (the default): a copy started to look at it, or to test a
    /// restore, never pushes its timeline into the source's archive, where a later
    /// recovery of the source could follow it.
    #[default]
    Off,
    /// The source's settings as they were (a copy that replaces a lost primary).
    Preserve,
}

impl ArchiveMode {
    /// `off` or `preserve`.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] for anything else.
    pub fn parse(s: &str) -> Result<ArchiveMode> {
        match s {
            "off" => Ok(ArchiveMode::Off),
            "preserve" => Ok(ArchiveMode::Preserve),
            _ => Err(FormatError::Invalid(format!(
                "--archive-mode {s:?}: use off or preserve"
            ))),
        }
    }
}

/// How to restore into a data directory.
#[derive(Clone, Debug)]
pub struct PgdataOptions<'a> {
    /// The data directory (created; must be empty unless `force`).
    pub dir: &'a Path,
    /// Remove what the directory holds first.
    pub force: bool,
    /// The `restore_command` the server will run (a `dbvault wal-fetch` command line).
    pub restore_command: String,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// Whether the restored server archives.
    pub archive: ArchiveMode,
}

/// A value in `postgresql.conf` quoting.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Writes the snapshot's cluster into `o.dir` with the recovery settings.
///
/// # Errors
/// A non-empty directory without `force`; not a physical snapshot; damage and storage
/// errors (the directory is then incomplete and says so: no `recovery.signal`); `tar`'s
/// failure.
pub fn restore_pgdata(
    repo: &Repository,
    snap: &Snapshot,
    o: &PgdataOptions<'_>,
    notify: Notify<'_>,
) -> Result<BaseBackup> {
    let part = snap
        .part(PART)
        .ok_or_else(|| FormatError::Invalid("not a physical snapshot (no base.tar)".into()))?;
    let info = BaseBackup::of(part)?;
    let settings = o.target.settings()?;
    let io = |e| FormatError::io(o.dir.display().to_string(), e);
    if o.dir.exists() {
        let mut entries = std::fs::read_dir(o.dir).map_err(io)?;
        if entries.next().is_some() {
            if !o.force {
                return Err(FormatError::Invalid(format!(
                    "{} is not empty: restore into an empty directory, or give --force to remove what it holds",
                    o.dir.display()
                )));
            }
            for e in std::fs::read_dir(o.dir).map_err(io)? {
                let p = e.map_err(io)?.path();
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p).map_err(io)?;
                } else {
                    std::fs::remove_file(&p).map_err(io)?;
                }
            }
        }
    } else {
        std::fs::create_dir_all(o.dir).map_err(io)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // PostgreSQL refuses a data directory others can read.
        std::fs::set_permissions(o.dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let mut tar = dbvault_core::secrets::scrub(&mut Command::new("tar"))
        .args(["-x", "-f", "-", "-C"])
        .arg(o.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FormatError::io("tar", e))?;
    let mut stdin = tar
        .stdin
        .take()
        .ok_or_else(|| FormatError::io("tar", std::io::Error::other("no stdin")))?;
    let wrote = write_part(repo, part, &mut stdin, notify);
    drop(stdin);
    let out = tar
        .wait_with_output()
        .map_err(|e| FormatError::io("tar", e))?;
    wrote?;
    if !out.status.success() {
        return Err(FormatError::Invalid(format!(
            "tar could not unpack the base backup into {}: {}",
            o.dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(o.dir.join("postgresql.auto.conf"))
        .map_err(io)?;
    let mut text = format!(
        "\n# Added by dbvault restore of snapshot base backup {} ({}).\nrestore_command = {}\n",
        info.start_lsn,
        snap.time.to_rfc3339(),
        conf_quote(&o.restore_command)
    );
    for (k, v) in &settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    if o.archive == ArchiveMode::Off {
        // Set here, after whatever the source's postgresql.auto.conf said: the last
        // setting wins. `ALTER SYSTEM RESET archive_mode` takes it back out.
        text.push_str(
            "# A restored copy does not archive into the source's archive until told to:\n\
             # ALTER SYSTEM RESET archive_mode, then restart, when it becomes the primary.\n\
             archive_mode = off\n",
        );
    }
    conf.write_all(text.as_bytes()).map_err(io)?;
    conf.sync_all().map_err(io)?;
    // Last: only a complete directory is marked for recovery.
    std::fs::File::create(o.dir.join("recovery.signal")).map_err(io)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_target_and_a_known_action() {
        let t = RecoveryTarget {
            time: Some("2026-12-01 14:31:00+00".into()),
            action: Some("promote".into()),
            ..Default::default()
        };
        assert_eq!(
            t.settings().expect("settings"),
            vec![
                ("recovery_target_time", "2026-12-01 14:31:00+00".to_string()),
                ("recovery_target_action", "promote".to_string())
            ]
        );
        let two = RecoveryTarget {
            time: Some("x".into()),
            lsn: Some("0/1".into()),
            ..Default::default()
        };
        assert!(two.settings().is_err());
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
    }
}
