//! The `dbvault` command.

mod args;
mod commands;
mod config;
mod malloc;
mod output;
mod repo_access;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    malloc::tune();
    let cli = args::Cli::parse(); // usage errors exit with 2
    match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the cause chain joined, no newlines, each cause once (an error
            // whose message already holds its source's text is not followed by it again).
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
            let msg = msg.replace('\n', " ");
            eprintln!("dbvault: error: {msg}");
            ExitCode::from(1)
        }
    }
}
