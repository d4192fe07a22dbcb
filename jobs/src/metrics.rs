//! Prometheus textfile-collector metrics of a night.

use anyhow::Result;

use crate::night::SourceResult;

/// Prometheus textfile-collector metrics, written atomically.
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &std::path::Path, results: &[SourceResult]) -> Result<()> {
    let mut out = String::new();
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut metric = |name: &str, help: &str, values: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (src, v) in values {
            out.push_str(&format!("{name}{{source=\"{}\"}} {v}\n", label(&src)));
        }
    };
    let per = |f: &dyn Fn(&SourceResult) -> Option<f64>| -> Vec<(String, f64)> {
        results
            .iter()
            .filter_map(|r| f(r).map(|v| (r.name.clone(), v)))
            .collect()
    };
    metric(
        "dbvault_backup_success",
        "1 if the last run backed this source up, else 0.",
        per(&|r| Some(if r.ok { 1.0 } else { 0.0 })),
    );
    metric(
        "dbvault_last_success_timestamp_seconds",
        "Time of the newest snapshot of this source.",
        per(&|r| r.last_success.map(|t| t as f64)),
    );
    metric(
        "dbvault_backup_duration_seconds",
        "Wall time of the last backup.",
        per(&|r| r.ok.then_some(r.seconds)),
    );
    metric(
        "dbvault_backup_bytes_in",
        "Bytes read by the last backup.",
        per(&|r| r.ok.then_some(r.bytes_in as f64)),
    );
    metric(
        "dbvault_backup_bytes_added",
        "Bytes the last backup added to the repository.",
        per(&|r| r.ok.then_some(r.bytes_added as f64)),
    );
    metric(
        "dbvault_dedup_ratio",
        "Bytes read over bytes added by the last backup.",
        per(&|r| (r.ok && r.bytes_added > 0).then(|| r.bytes_in as f64 / r.bytes_added as f64)),
    );
    let wal = |f: &dyn Fn(&crate::wal_health::WalHealth) -> Option<f64>| -> Vec<(String, f64)> {
        results
            .iter()
            .filter_map(|r| r.wal.as_ref().and_then(f).map(|v| (r.name.clone(), v)))
            .collect()
    };
    metric(
        "dbvault_wal_archiving_ok",
        "Physical sources: 1 if WAL archiving is working, 0 if it has stalled.",
        wal(&|w| Some(if w.stalled.is_none() { 1.0 } else { 0.0 })),
    );
    metric(
        "dbvault_wal_last_archived_timestamp_seconds",
        "Physical sources: when the newest WAL segment in the repository was archived.",
        wal(&|w| w.newest_archived_at.map(|t| t as f64)),
    );
    metric(
        "dbvault_wal_archive_age_seconds",
        "Physical sources: age of the newest WAL segment in the repository.",
        wal(&|w| w.age_seconds.map(|t| t as f64)),
    );
    metric(
        "dbvault_wal_push_failures",
        "Physical sources: failed archive_command runs the server counts (pg_stat_archiver).",
        wal(&|w| w.server.as_ref().map(|s| s.failed_count as f64)),
    );
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, out.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}
