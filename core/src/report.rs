//! Stored reports of `check` and `restore-test`: `reports/<id>`, sealed JSON, so an
//! auditor's "when was this last proven to restore?" has an answer in the repository.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::lock::LockKind;
use crate::{Error, Id, Repository, Result};

const AAD: &[u8] = b"dbvault report";

/// One stored report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `check` or `restore-test`.
    pub kind: String,
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
        kind: &str,
        ok: bool,
        snapshot: Option<Id>,
        seconds: f64,
        body: serde_json::Value,
    ) -> Report {
        Report {
            kind: kind.to_string(),
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
        let mut out = Vec::new();
        for o in self.backend().list("reports/")? {
            let Ok(sealed) = self.backend().read(&o.path) else {
                continue;
            };
            let Ok(z) = self.keys().open(&sealed, AAD, &|| o.path.clone()) else {
                continue;
            };
            let Ok(json) = zstd::stream::decode_all(&z[..]) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<Report>(&json) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(out)
    }
}
