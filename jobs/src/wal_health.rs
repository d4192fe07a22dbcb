//! The WAL archive of a configured physical source, for `status`, `run` and the metrics:
//! the newest segment in the repository and its age, the server's own account of its
//! archiving, and whether it has stalled (judged by `physical::archiver::assess`).

use dbvault_core::Repository;
use dbvault_formats::postgres::physical::{self, archiver};
use dbvault_formats::postgres::{wal, PgSource};
use serde::Serialize;

use crate::config::Source;

/// What is known of one source's archive.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WalHealth {
    /// The newest segment in the repository.
    pub newest_segment: Option<String>,
    /// When it was archived (unix seconds).
    pub newest_archived_at: Option<i64>,
    /// How long ago.
    pub age_seconds: Option<i64>,
    /// The server's account (`None`: it could not be asked).
    pub server: Option<archiver::ArchiverStatus>,
    /// Why the server could not be asked.
    pub server_error: Option<String>,
    /// Why archiving is stalled (`None`: it is not).
    pub stalled: Option<String>,
}

/// Looks at `s`'s archive (the server first, so a segment it archived is in the
/// repository by the time the repository is read).
pub fn of(repo: &Repository, s: &Source) -> WalHealth {
    let mut h = WalHealth::default();
    let server = s.postgres.as_deref().map(|u| {
        PgSource::parse(u)
            .and_then(|pg| archiver::archiver_status(&pg))
            .map_err(|e| e.to_string())
    });
    match server {
        Some(Ok(st)) => h.server = Some(st),
        Some(Err(e)) => h.server_error = Some(e),
        None => {}
    }
    let segment_size = repo
        .newest_of(&s.name)
        .ok()
        .flatten()
        .and_then(|(_, snap)| snap.part(physical::PART).map(physical::BaseBackup::of))
        .and_then(Result::ok)
        .map_or(16 << 20, |b| b.segment_size.max(1 << 20));
    match physical::archive::Archive::load(repo, &s.name, segment_size) {
        Ok(a) => {
            let per_log = wal::segments_per_log(segment_size);
            let newest = a
                .segments
                .iter()
                .filter_map(|(tli, set)| set.iter().next_back().map(|n| (*n, *tli)))
                .max()
                .map(|(n, tli)| wal::segment_name(tli, n, per_log));
            if let Some(n) = &newest {
                let ns = wal::namespace(repo, &s.name);
                if let Ok(r) = repo.file(&ns, n) {
                    h.newest_archived_at = Some(r.time.timestamp());
                    h.age_seconds = Some(chrono::Local::now().timestamp() - r.time.timestamp());
                }
            }
            h.newest_segment = newest;
        }
        Err(e) => {
            h.stalled = Some(format!("the WAL archive cannot be read: {e}"));
            return h;
        }
    }
    let newest = h
        .newest_segment
        .as_deref()
        .map(|n| (n, h.age_seconds.unwrap_or(i64::MAX)));
    h.stalled = archiver::assess(
        newest,
        h.server.as_ref(),
        s.archive_timeout_secs(),
        segment_size,
    );
    h
}

impl WalHealth {
    /// One line for people.
    pub fn describe(&self) -> String {
        let mut l = match (&self.newest_segment, self.age_seconds) {
            (Some(n), Some(a)) => format!("WAL: newest segment {n}, archived {a} s ago"),
            (Some(n), None) => format!("WAL: newest segment {n}"),
            _ => "WAL: none archived".to_string(),
        };
        match (&self.server, &self.server_error) {
            (Some(s), _) => l.push_str(&format!(
                "; server: {} failed push(es){}",
                s.failed_count,
                s.last_failed_time
                    .as_deref()
                    .map_or(String::new(), |t| format!(", last at {t}"))
            )),
            (None, Some(e)) => l.push_str(&format!("; server not reachable ({e})")),
            _ => {}
        }
        if let Some(why) = &self.stalled {
            l.push_str(&format!("; STALLED: {why}"));
        }
        l
    }
}
