//! Stored reports of `check` and `restore-test`: `reports/<id>`, sealed JSON, so an
//! auditor's "when was this last proven to restore?" has an answer in the repository.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::lock::LockKind;
use crate::{Error, Id, Repository, Result};

const AAD: &[u8] = b"dbvault report";

/// What a stored report is the report of. Stored as its name (`check`, …), so reports
/// of a kind this version does not know still read (as [`ReportKind::Other`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportKind {
    /// `check`.
    Check,
    /// `prune`.
    Prune,
    /// `restore-test` of one snapshot.
    RestoreTest,
    /// `forget`: what it removes, stored before it removes it ([`crate::history`]).
    Forget,
    /// A kind written by another version.
    Other(String),
}

impl ReportKind {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            ReportKind::Check => "check",
            ReportKind::Prune => "prune",
            ReportKind::RestoreTest => "restore-test",
            ReportKind::Forget => "forget",
            ReportKind::Other(s) => s,
        }
    }

    /// The kind a stored name stands for.
    pub fn from_name(name: &str) -> ReportKind {
        match name {
            "check" => ReportKind::Check,
            "prune" => ReportKind::Prune,
            "restore-test" => ReportKind::RestoreTest,
            "forget" => ReportKind::Forget,
            other => ReportKind::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ReportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReportKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(ReportKind::from_name(&String::deserialize(d)?))
    }
}

/// One stored report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// What it reports on.
    pub kind: ReportKind,
    /// When it ran.
    pub time: DateTime<FixedOffset>,
    /// Host that ran it.
    pub host: String,
    /// Passed.
    pub ok: bool,
    /// The snapshot tested (restore-test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Id>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The command's full JSON result.
    pub body: serde_json::Value,
}

impl Report {
    /// A report of `kind` made now on this host.
    pub fn now(
        kind: ReportKind,
        ok: bool,
        snapshot: Option<Id>,
        seconds: f64,
        body: serde_json::Value,
    ) -> Report {
        Report {
            kind,
            time: chrono::Local::now().fixed_offset(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            ok,
            snapshot,
            seconds,
            body,
        }
    }
}

impl Repository {
    /// Stores a report (needs a lock: a stalled process must not write after a prune).
    ///
    /// # Errors
    /// [`Error::NotLocked`], [`Error::LockLost`], backend errors.
    pub fn save_report(&self, report: &Report) -> Result<Id> {
        self.ensure_lock(LockKind::Shared, "storing a report")?;
        let json = serde_json::to_vec(report).map_err(|e| Error::Invalid(e.to_string()))?;
        let z = zstd::bulk::compress(&json, 3).map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
        let sealed = self.keys().seal(&z, AAD)?;
        let id = Id::hash_of(&sealed);
        self.backend().create(&format!("reports/{id}"), &sealed)?;
        Ok(id)
    }

    /// Every readable report, oldest first (a damaged one is skipped: `check` names it).
    ///
    /// # Errors
    /// Only when the reports cannot be listed.
    pub fn reports(&self) -> Result<Vec<Report>> {
        Ok(self.reports_and_unreadable()?.0)
    }

    /// Every readable report, oldest first, and why the others cannot be read (a file
    /// another user wrote and this one may not read, damage): a caller that says
    /// "never tested" must be able to say "or not readable" instead.
    ///
    /// # Errors
    /// Only when the reports cannot be listed.
    pub fn reports_and_unreadable(&self) -> Result<(Vec<Report>, Vec<Error>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for o in self.backend().list("reports/")? {
            let sealed = match self.backend().read(&o.path) {
                Ok(s) => s,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            let z = match self.keys().open(&sealed, AAD, &|| o.path.clone()) {
                Ok(z) => z,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            let parsed = zstd::stream::decode_all(&z[..])
                .ok()
                .and_then(|json| serde_json::from_slice::<Report>(&json).ok());
            match parsed {
                Some(r) => out.push(r),
                None => bad.push(Error::corrupt(&o.path, "not a report")),
            }
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        Ok((out, bad))
    }
}
