//! The `dbvault` command.

mod args;
mod commands;
mod config;
mod output;
mod pg;
mod repo_access;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse(); // usage errors exit with 2
    match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the cause chain joined, no newlines.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("dbvault: error: {msg}");
            ExitCode::from(1)
        }
    }
}
