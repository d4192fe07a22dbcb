//! dbvault's jobs: what a front end calls to do what the `dbvault` binary does, over the
//! `dbvault-core` (storage) and `dbvault-formats` (databases) libraries.
//!
//! - [`access`]: a store URL to a repository, with the cache, client state and locks.
//! - [`backup`]: a [`job::Job`] of any source kind, routed to its format.
//! - [`config`]: the configuration file's model; [`run`]: its nightly job as a typed
//!   report, [`plan`] its dry run; [`metrics`]: the Prometheus textfile; [`status`]: every source's state.
//! - [`restore`]: a logical snapshot of any kind to any target; [`recover`]: a base
//!   backup to a moment, as a cluster or single tables.
//! - [`follow`]: continuous SQLite backup, stopped by a [`follow::Stop`] handle.
//! - [`forget`]: retention rules or ids; [`maintain`]: retention per source, prune with
//!   its report, the offsite copy.
//! - [`table_events`]: a table's changes found in a physical source's WAL; [`history`]:
//!   a table across a logical source's snapshots.
//! - [`events`]: the trait through which a job reports progress, notes and warnings.
//!
//! Errors are `anyhow` chains whose sources are the libraries' own errors: a front end
//! finds the kind (damage, temporary, …) with `dbvault_core::error::FailureKind` by
//! walking the chain, as the binary does for its exit codes.

pub mod access;
pub mod backup;
pub mod config;
pub mod credentials;
pub mod events;
pub mod follow;
pub mod forget;
pub mod history;
pub mod import;
pub mod job;
pub mod maintain;
pub mod metrics;
pub mod night;
pub mod physical;
pub mod plan;
pub mod recover;
pub mod restore;
pub mod restore_test;
pub mod run;
pub mod status;
pub mod table_events;
pub mod wal_fetch;
pub mod wal_health;
pub mod wal_push;

/// `1.5 MiB`-style sizes.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time as RFC 3339 with its offset, to the second.
#[must_use]
pub fn time_text(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// An error as one line: its causes joined, each once (a cause whose text the message
/// already holds is not repeated), no newlines. What a report or a log line shows.
#[must_use]
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace('\n', " ")
}
