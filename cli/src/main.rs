//! The `dbvault` command.

mod args;
mod commands;
mod malloc;
mod output;
mod progress;
mod repo_access;
mod signals;

use std::process::ExitCode;

use clap::Parser;

/// One line: the cause chain joined, each cause once (`dbvault_jobs::one_line`).
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    dbvault_jobs::one_line(e)
}

/// Exit status of a failed command, from its error's kind (docs/exit-codes.md): 3 damage,
/// 75 worth retrying later (EX_TEMPFAIL: a lock held, a store that did not answer), else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    use dbvault_core::error::FailureKind;
    let kind = e.chain().find_map(|c| {
        c.downcast_ref::<dbvault_core::Error>()
            .map(dbvault_core::Error::failure_kind)
            .or_else(|| {
                c.downcast_ref::<dbvault_formats::FormatError>()
                    .map(dbvault_formats::FormatError::failure_kind)
            })
    });
    match kind {
        Some(FailureKind::Damage) => 3,
        Some(FailureKind::Temporary) => 75,
        _ => 1,
    }
}

fn main() -> ExitCode {
    signals::catch();
    malloc::tune();
    dbvault_core::warn::set_sink(|l| eprintln!("dbvault: warning: {l}"));
    // As PostgreSQL's restore_command, every failure but "not in the archive" must stop
    // recovery: a usage error (exit 2) or a panic (101) would end it early instead.
    let restoring = std::env::args_os().any(|a| a == "wal-fetch");
    if restoring {
        std::panic::set_hook(Box::new(|p| {
            eprintln!("dbvault: error: wal-fetch: {p}");
            std::process::exit(i32::from(dbvault_formats::postgres::wal::FETCH_FAILED));
        }));
    }
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if restoring && e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(dbvault_formats::postgres::wal::FETCH_FAILED);
        }
        Err(e) => {
            // `--json` asked for a document on stdout whatever happens: a usage error too
            // (a wrapper that mistyped a flag gets its answer in the format it reads).
            if e.use_stderr() && std::env::args_os().any(|a| a == "--json") {
                let text = e.to_string();
                let first = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("usage error")
                    .trim_start_matches("error: ");
                output::json(&serde_json::json!({
                    "error": first,
                    "exit_code": 2,
                    "kind": "usage",
                }));
            }
            e.exit() // usage errors exit with 2
        }
    };
    let result = commands::run(&cli);
    progress::shutdown();
    match result {
        Ok(code) => code,
        // `restore --to - | head`: the reader has all it wanted. Quiet, and the status a
        // program killed by SIGPIPE has (what `pg_dump | head` gives), not an error line.
        Err(e) if stdout_closed(&e) => ExitCode::from(141),
        Err(e) => {
            let line = one_line(&e);
            let code = exit_code(&e);
            eprintln!("dbvault: error: {line}");
            if cli.json && !output::PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
                // A wrapper reading stdout gets the failure in the format it asked for
                // (unless a document went out already: one document per run).
                output::json(&serde_json::json!({
                    "error": line,
                    "exit_code": code,
                    "kind": match code {
                        3 => "damage",
                        75 => "temporary",
                        _ => "failure",
                    },
                }));
            }
            ExitCode::from(code)
        }
    }
}

/// The error is a write to a standard output whose reader has gone.
#[allow(unsafe_code)]
fn stdout_closed(e: &anyhow::Error) -> bool {
    let broken = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) || one_line(e).contains("Broken pipe");
    // A pipe whose read end is closed polls as an error on the write end.
    let mut fd = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let polled = unsafe { libc::poll(&raw mut fd, 1, 0) };
    broken && polled == 1 && fd.revents & libc::POLLERR != 0
}
