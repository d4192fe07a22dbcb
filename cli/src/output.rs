//! Human and JSON output helpers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A table or part name for a terminal, escaped ([`dbvault_formats::names::display`]).
pub fn name(s: &str) -> String {
    dbvault_formats::names::display(s)
}

pub use dbvault_jobs::bytes;

/// Set once anything went to stdout: a failure's JSON then does not follow a document
/// already printed (two documents would break a parser).
pub static PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a line on stdout; a reader that went away (`| head`) is not an error.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::output::PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A snapshot part as scripts see it (`backup --json`, `snapshots --json`).
pub fn part_json(p: &dbvault_core::Part) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "kind": p.kind,
        "bytes": p.size,
        "rows": p.rows,
        "chunks": p.chunks,
        // A record that does not read shows as null here; `check` names it.
        "tables": (p.kind == dbvault_formats::sqlite::snapshot::PART_KIND)
            .then(|| dbvault_formats::sqlite::snapshot::DatabasePart::of(p).ok())
            .flatten()
            .map(|d| d.tables),
        "base_backup": (p.kind == dbvault_formats::postgres::physical::PART_KIND)
            .then(|| dbvault_formats::postgres::physical::BaseBackup::of(p).ok())
            .flatten(),
    })
}

pub use dbvault_jobs::time_text as time;

/// Prints a JSON value on stdout.
pub fn json(v: &serde_json::Value) {
    crate::outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Warns (once per command) that a password given in a URL on the command line is
/// readable by every local user in the process list, and says what to use instead.
pub fn warn_url_password(pg: &dbvault_formats::postgres::PgSource) {
    if pg.password_in_url() {
        eprintln!(
            "dbvault: warning: the PostgreSQL URL on the command line holds a password, which every local user can read in the process list: use ~/.pgpass or PGPASSFILE, PGPASSWORD, or a configuration file instead"
        );
    }
}

/// Lines beyond this many of a list that grows with the data are summarised.
pub const SHOWN: usize = 10;

/// Prints the first [`SHOWN`] of `lines`, then one line counting the rest by `kind`
/// (`… and 1,204 more: 1,200 missing-blob, 4 missing-pack; --json lists them all`).
pub fn capped(indent: &str, lines: &[(String, String)]) {
    for (_, l) in lines.iter().take(SHOWN) {
        crate::outln!("{indent}{l}");
    }
    if lines.len() > SHOWN {
        let mut by_kind: std::collections::BTreeMap<&str, usize> = Default::default();
        for (k, _) in &lines[SHOWN..] {
            *by_kind.entry(k.as_str()).or_default() += 1;
        }
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        crate::outln!(
            "{indent}… and {} more: {}; --json lists them all",
            lines.len() - SHOWN,
            kinds.join(", ")
        );
    }
}

/// A point in time from the command line: RFC 3339, PostgreSQL's output, or local time
/// ([`dbvault_core::when::parse_time`], the one parser of every time option).
///
/// # Errors
/// None of those forms, with examples.
pub fn parse_time(t: &str) -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
    Ok(dbvault_core::when::parse_time(t)?)
}

/// The command line's events: a spinner on a terminal (not under `--json`), notes and
/// warnings on stderr (`--json` is stdout's format), each snapshot of a follower as
/// `backup` prints it.
pub struct CliEvents<'a> {
    cli: &'a crate::args::Cli,
}

/// The events of this invocation.
pub fn events(cli: &crate::args::Cli) -> CliEvents<'_> {
    CliEvents { cli }
}

/// A step shown as a task of the progress display (dropped: finished).
struct Shown(#[allow(dead_code)] Option<dbvault_core::progress::TaskGuard>);

impl dbvault_jobs::events::Step for Shown {
    fn finish(self: Box<Self>) {}
}

impl dbvault_jobs::events::Events for CliEvents<'_> {
    fn step(&self, label: &str, bytes: Arc<AtomicU64>) -> Box<dyn dbvault_jobs::events::Step> {
        Box::new(Shown(crate::progress::counter(
            (self.cli.progress, self.cli.quiet),
            label,
            bytes,
            None,
        )))
    }
    fn step_of(
        &self,
        label: &str,
        bytes: Arc<AtomicU64>,
        total: Option<u64>,
    ) -> Box<dyn dbvault_jobs::events::Step> {
        Box::new(Shown(crate::progress::counter(
            (self.cli.progress, self.cli.quiet),
            label,
            bytes,
            total,
        )))
    }
    fn note(&self, message: &str) {
        eprintln!("dbvault: {message}");
    }
    fn warn(&self, message: &str) {
        eprintln!("dbvault: warning: {message}");
    }
    fn snapshot(&self, summary: &dbvault_core::backup::BackupSummary, requests: Option<u64>) {
        backup_summary(self.cli, summary, requests);
    }
}

/// What a backup recorded: a line (and its notes on stderr), or JSON.
pub fn backup_summary(
    cli: &crate::args::Cli,
    s: &dbvault_core::backup::BackupSummary,
    requests: Option<u64>,
) {
    let snap = &s.snapshot;
    if cli.json {
        json(&serde_json::json!({
            "requests": requests,
            "snapshot_id": s.id.to_hex(),
            "name": snap.name,
            "time": time(&snap.time),
            "bytes_in": snap.bytes_in,
            "bytes_added": snap.bytes_added,
            "seconds": snap.seconds,
            "new_blobs": s.new_blobs,
            "packs": s.packs,
            "parts": snap.parts.iter().map(part_json).collect::<Vec<_>>(),
            "notes": snap.source.notes,
        }));
    } else {
        for n in &snap.source.notes {
            eprintln!("dbvault: note: {n}");
        }
        crate::outln!(
            "snapshot {} saved: {} ({}) read, {} added, {:.2} s",
            s.id.short(),
            snap.name,
            bytes(snap.bytes_in),
            bytes(snap.bytes_added),
            snap.seconds
        );
        if let Some(n) = requests {
            crate::outln!("{n} requests to the object store");
        }
    }
}

/// Prints what a restore tells as it goes, on stderr.
pub fn print_notice(n: dbvault_formats::notice::Notice) {
    use dbvault_formats::notice::Notice;
    match n {
        Notice::Warning(w) => eprintln!("dbvault: warning: {w}"),
        Notice::DamagedElsewhere(s) => eprintln!("dbvault: warning: {s}"),
        Notice::Done(s) => eprintln!("{s}"),
        other => eprintln!("{other:?}"),
    }
}
