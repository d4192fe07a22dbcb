//! `dbvault backup`

use std::process::{Command, ExitStatus, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::backup::{BackupSummary, PartInput, SnapshotMeta};
use dbvault_core::{Repository, SourceInfo};
use dbvault_formats::StreamFormat;

use crate::args::{BackupArgs, Cli};
use crate::output::{self, Progress};
use crate::repo_access;

fn snapshot_time(a: &BackupArgs) -> Result<chrono::DateTime<chrono::FixedOffset>> {
    match &a.time {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| anyhow!("--time {t:?} is not an RFC 3339 time ({e}); example: 2026-11-20T02:00:00+01:00")),
        None => Ok(chrono::Local::now().fixed_offset()),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

fn program_name(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("command");
    first.rsplit('/').next().unwrap_or(first).to_string()
}

pub fn run(cli: &Cli, a: &BackupArgs) -> Result<()> {
    if let Some(f) = &a.format {
        let f = StreamFormat::parse(f).map_err(|e| anyhow!(e))?;
        if f != StreamFormat::Raw {
            bail!("--format {f} is not supported by this build yet: use --format raw");
        }
    }
    let time = snapshot_time(a)?;
    if let Some(src) = &a.source {
        if src != "-" {
            if src.starts_with("postgres://") || src.starts_with("postgresql://") {
                bail!("direct PostgreSQL backups are not supported by this build yet: pipe pg_dump into `dbvault backup -`");
            }
            if src.starts_with("sqlite:") {
                bail!("SQLite backups are not supported by this build yet");
            }
            bail!("unknown source {src:?}: use `-` (stdin) or --command 'CMD'");
        }
    }
    let repo = repo_access::open(cli)?;
    let summary = match &a.command {
        Some(cmd) => backup_command(cli, &repo, a, cmd, time)?,
        None => {
            let name = a.name.clone().unwrap_or_else(|| "stdin".into());
            let source = SourceInfo { kind: "stdin".into(), identity: "-".into(), format: "raw".into(), server_version: None };
            let b = repo.start_backup()?;
            let progress = Progress::start("backing up stdin", b.progress(), cli.json);
            let r = b.add_part(PartInput { name: "stdin".into(), kind: "raw".into(), ..Default::default() }, std::io::stdin());
            progress.finish();
            r?;
            b.finish(SnapshotMeta { time, name, tags: a.tags.clone(), source })?
        }
    };
    report(cli, &summary);
    Ok(())
}

fn backup_command(
    cli: &Cli,
    repo: &Repository,
    a: &BackupArgs,
    cmd: &str,
    time: chrono::DateTime<chrono::FixedOffset>,
) -> Result<BackupSummary> {
    let name = a.name.clone().unwrap_or_else(|| program_name(cmd));
    let b = repo.start_backup()?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the command {cmd:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from the command"))?;
    let progress = Progress::start("backing up command output", b.progress(), cli.json);
    let r = b.add_part(PartInput { name: name.clone(), kind: "raw".into(), ..Default::default() }, stdout);
    progress.finish();
    if let Err(e) = r {
        let _ = child.kill();
        let _ = child.wait();
        b.abort();
        return Err(e.into());
    }
    let status = child.wait().context("waiting for the command")?;
    if !status.success() {
        b.abort();
        bail!("the command {cmd:?} {}: no snapshot recorded", describe(status));
    }
    let source = SourceInfo { kind: "command".into(), identity: cmd.to_string(), format: "raw".into(), server_version: None };
    Ok(b.finish(SnapshotMeta { time, name, tags: a.tags.clone(), source })?)
}

fn report(cli: &Cli, s: &BackupSummary) {
    let snap = &s.snapshot;
    if cli.json {
        output::json(&serde_json::json!({
            "snapshot_id": s.id.to_hex(),
            "name": snap.name,
            "time": snap.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "bytes_in": snap.bytes_in,
            "bytes_added": snap.bytes_added,
            "seconds": snap.seconds,
            "new_blobs": s.new_blobs,
            "packs": s.packs,
            "parts": snap.parts.iter().map(|p| serde_json::json!({
                "name": p.name, "bytes": p.size, "rows": p.rows, "chunks": p.chunks,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "snapshot {} saved: {} ({}) read, {} added, {:.2} s",
            s.id.short(),
            snap.name,
            output::bytes(snap.bytes_in),
            output::bytes(snap.bytes_added),
            snap.seconds
        );
    }
}
