//! Physical backups of a PostgreSQL cluster and point-in-time recovery: base backups
//! ([`backup`]) in the same repository as the WAL archive ([`super::wal`]), restored into a
//! data directory with the recovery settings that replay the archive to a target
//! ([`restore`]).

pub mod archive;
pub mod archiver;
pub mod backup;
pub mod catalog;
pub mod changes;
pub mod copy;
pub mod health;
pub mod local;
pub mod push;
pub mod reach;
pub mod relay;
pub mod restore;
pub mod table;
pub mod tar;
pub mod throwaway;
pub mod timeline;
pub mod verify;
pub mod waldump;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::postgres::wal;

/// The format name of physical snapshots in manifests (`SourceInfo::format`).
pub const FORMAT: &str = "pg_physical";
/// The one part: pg_basebackup's tar stream of the cluster.
pub const PART: &str = "base.tar";
/// Its kind.
pub const PART_KIND: &str = "pg-base-tar";

/// What a base backup records (the part's meta).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackup {
    /// The cluster's system identifier (decimal: it does not fit JSON's numbers).
    #[serde(default)]
    pub system_identifier: String,
    /// Timeline at the start.
    #[serde(default)]
    pub timeline: u32,
    /// `START WAL LOCATION`.
    #[serde(default)]
    pub start_lsn: String,
    /// The manifest's `End-LSN`: consistent from here on.
    #[serde(default)]
    pub stop_lsn: String,
    /// First WAL segment needed.
    #[serde(default)]
    pub start_wal: String,
    /// Last WAL segment needed to become consistent.
    #[serde(default)]
    pub stop_wal: String,
    /// WAL segment size in bytes.
    #[serde(default)]
    pub segment_size: u64,
    /// Major version (`PG_VERSION`).
    #[serde(default)]
    pub server_version: String,
    /// The WAL source name (`wal-push --name`).
    #[serde(default)]
    pub wal_source: String,
}

impl BaseBackup {
    /// The part meta that records it.
    pub fn to_meta(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        crate::partmeta::to_meta(self)
    }

    /// What a part recorded.
    ///
    /// # Errors
    /// The record does not read as this type (a newer dbvault wrote it).
    pub fn of(part: &dbvault_core::Part) -> crate::error::Result<BaseBackup> {
        crate::partmeta::from_meta(part, "base backup")
    }
}

/// `X/Y` as a number.
///
/// # Errors
/// [`FormatError::Invalid`] for anything else.
pub fn parse_lsn(s: &str) -> Result<u64> {
    let bad = || FormatError::Invalid(format!("{s:?} is not an LSN (like 0/16B3748)"));
    let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return Err(bad());
    }
    Ok(hi << 32 | lo)
}

/// A number as `X/Y`, PostgreSQL's form of an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The segments a base backup needs to become consistent, in order.
///
/// # Errors
/// A malformed record.
pub fn segments(b: &BaseBackup) -> Result<Vec<String>> {
    if b.segment_size == 0 {
        return Err(FormatError::Invalid(
            "the base backup records no segment size".into(),
        ));
    }
    let per_log = crate::postgres::wal::segments_per_log(b.segment_size);
    let first = wal::parse_name(&b.start_wal, per_log);
    let last = wal::parse_name(&b.stop_wal, per_log);
    match (first, last) {
        (
            Some(wal::WalFile::Segment {
                timeline: t,
                number: a,
            }),
            Some(wal::WalFile::Segment { number: z, .. }),
        ) if a <= z => Ok((a..=z).map(|n| wal::segment_name(t, n, per_log)).collect()),
        _ => Err(FormatError::Invalid(format!(
            "the base backup records WAL {}..{}, which is not a range of segments",
            b.start_wal, b.stop_wal
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_the_segments_a_backup_needs() {
        assert_eq!(parse_lsn("0/2000028").expect("lsn"), 0x2000028);
        assert_eq!(parse_lsn("1/0").expect("lsn"), 1 << 32);
        assert!(parse_lsn("2000028").is_err());
        let b = BaseBackup {
            start_wal: "0000000100000000000000FE".into(),
            stop_wal: "000000010000000100000001".into(),
            segment_size: 16 << 20,
            ..Default::default()
        };
        assert_eq!(
            segments(&b).expect("segments"),
            vec![
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
    }
}
