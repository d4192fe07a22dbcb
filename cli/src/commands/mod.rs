//! One module per subcommand; each is a plain function over the parsed arguments.

pub mod backup;
mod check;
mod copy;
mod events;
mod follow;
mod forget;
mod import;
mod init;
mod key;
mod ls;
mod physical;
mod policy;
mod prune;
mod repair;
mod restore;
mod restore_test;
mod run;
mod snapshots;
mod sql;
mod stats;
mod status;
mod wal;

use std::process::ExitCode;

use anyhow::{bail, Result};
use dbvault_core::{Id, Repository, Snapshot};

use crate::args::{Cli, Command};

/// Runs the chosen subcommand; returns the exit code for success paths (0, or 3 when a
/// check found damage).
pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Check(a) => return check::run(cli, a),
        Command::RestoreTest(a) => return restore_test::run(cli, a),
        Command::Run(a) => return run::run(cli, a),
        Command::Follow(a) => follow::from_config(cli, a),
        Command::Status => return status::run(cli),
        Command::Import(a) => return import::run(cli, a),
        Command::Init(a) => init::run(cli, a),
        Command::Backup(a) if a.follow => follow::run(cli, a),
        Command::Backup(a) => backup::run(cli, a),
        Command::Snapshots(a) => snapshots::run(cli, a),
        Command::Restore(a) => restore::run(cli, a),
        Command::Forget(a) => forget::run(cli, a),
        Command::Prune(a) => prune::run(cli, a),
        Command::Policy(a) => policy::run(cli, a),
        Command::Stats => stats::run(cli),
        Command::Key { command } => key::run(cli, command),
        Command::Repair { command } => repair::run(cli, command),
        Command::Copy(a) => copy::run(cli, a),
        Command::Sql(a) => sql::run(cli, a),
        Command::Ls(a) => ls::run(cli, a),
        Command::Diff(a) => ls::diff(cli, a),
        Command::Events(a) => events::events(cli, a),
        Command::History(a) => events::table_history(cli, a),
        Command::WalPush(a) => wal::push(cli, a),
        Command::WalFetch(a) => return wal::fetch(cli, a),
        Command::WalRemoveTimeline(a) => wal::remove_timeline(cli, a),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// The snapshot a command names: `selector` (an id, a prefix, `latest`), or with
/// `target_time` the newest snapshot (of `name`) taken at or before it, said on stderr.
/// Says on stderr which snapshot `latest` turned out to be (a restore at 3 a.m. must not
/// guess).
pub(crate) fn note_latest(selector: &str, id: &Id, snap: &Snapshot) {
    if selector == "latest" {
        eprintln!(
            "dbvault: latest is snapshot {} of {}, taken {}",
            id.short(),
            snap.name,
            crate::output::time(&snap.time)
        );
    }
}

pub(crate) fn pick_snapshot(
    repo: &Repository,
    selector: &str,
    filter: &dbvault_core::SnapshotFilter,
    target_time: Option<&str>,
) -> Result<(Id, Snapshot)> {
    let Some(t) = target_time else {
        let (id, snap) = repo.find_snapshot_in(selector, filter)?;
        note_latest(selector, &id, &snap);
        return Ok((id, snap));
    };
    if selector != "latest" {
        bail!("--target-time picks among the snapshots: give `latest` (with --name), not a snapshot id");
    }
    if !filter.is_empty() {
        bail!("--target-time picks by time: --tag and --host are for `latest`");
    }
    let (id, snap) = repo.find_at(filter.name.as_deref(), crate::output::parse_time(t)?)?;
    eprintln!(
        "dbvault: snapshot {} taken {} (the newest at or before {t})",
        id.short(),
        crate::output::time(&snap.time)
    );
    Ok((id, snap))
}
