//! Backing up any source kind: what `dbvault backup` and a configured source of `run`
//! both describe as a [`Job`], routed by its source to the formats crate.

use std::io::{Cursor, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use dbvault_core::backup::{Backup, BackupSummary, SnapshotMeta};
use dbvault_core::{Repository, SourceInfo};
use dbvault_formats::postgres::{self, DirectOptions, PgSource};
use dbvault_formats::sqlite;
use dbvault_formats::StreamFormat;

use crate::events::Events;
pub use crate::job::{input, Input, Job};

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

/// Reads up to `n` bytes to look at; returns them and a reader that yields the whole stream.
fn peek<R: Read>(mut r: R, n: usize) -> Result<(Vec<u8>, impl Read)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = r.read(&mut head[got..]).context("reading the input")?;
        if k == 0 {
            break;
        }
        got += k;
    }
    head.truncate(got);
    Ok((head.clone(), Cursor::new(head).chain(r)))
}

fn tmp_dir() -> std::path::PathBuf {
    std::env::temp_dir()
}

/// Backs `a`'s source up into an open, locked repository: a `postgres://` URL (a
/// database, a whole server, or a base backup with `physical`), an SQLite file, stdin, or a
/// command's output; `format` overrides the detected stream format, `time` the snapshot's.
///
/// # Errors
/// Bad combinations of options, the source failing (no snapshot is then recorded),
/// storage errors.
pub fn backup_into(
    ev: &dyn Events,
    repo: &Repository,
    a: &Job,
    format: Option<StreamFormat>,
    time: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> Result<BackupSummary> {
    let now = chrono::Local::now().fixed_offset();
    let inp = input(a)?;
    if a.all_databases && !matches!(inp, Input::Postgres(_)) {
        bail!("--all-databases needs a postgres:// source (the server to back up)");
    }
    if !a.selection.is_whole() {
        if !matches!(inp, Input::Postgres(_)) {
            bail!("--table, --exclude-table, --exclude-table-data, --schema, --exclude-schema and --schema-only select from a postgres:// source (for a piped dump, give them to pg_dump)");
        }
        if a.all_databases {
            bail!("--all-databases backs up whole databases: selections (--table, --schema, …) apply to one database; back it up with its own URL");
        }
        a.selection.validate()?;
    }
    let meta = |name: String, source| SnapshotMeta {
        time: time.unwrap_or(now),
        name,
        tags: a.tags.clone(),
        source,
    };
    let summary = match inp {
        Input::Command(cmd) => backup_command(ev, repo, a, cmd, format, time.is_some(), meta)?,
        Input::Postgres(url) if a.physical.is_some() => {
            crate::physical::backup(ev, repo, a, url, time.unwrap_or(now))?
        }
        Input::Postgres(url) => {
            let pg = PgSource::parse(url)?;
            let name = a.name.clone().unwrap_or_else(|| {
                if a.all_databases {
                    "postgres-server".into()
                } else {
                    pg.dbname().to_string()
                }
            });
            let b = start(repo, &name)?;
            let progress = ev.step(&format!("backing up {}", pg.dbname()), b.progress());
            let opts = DirectOptions {
                jobs: a
                    .jobs
                    .unwrap_or_else(|| {
                        std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(2)
                    })
                    .clamp(1, 16),
                enable_row_security: a.enable_row_security,
                selection: a.selection.clone(),
            };
            let r = if a.all_databases {
                postgres::server::backup_server(&b, &pg, &opts)
            } else {
                postgres::backup(&b, &pg, &opts)
            };
            progress.finish();
            match r {
                Ok(source) => b.finish(meta(name, source))?,
                Err(e) => {
                    b.abort();
                    return Err(anyhow::Error::from(e).context(format!(
                        "backing up {}: no snapshot recorded",
                        pg.describe()
                    )));
                }
            }
        }
        Input::Sqlite(path) => {
            // SQLite takes an empty file for an empty database; an application's database
            // never is one: a wrong path, or a file truncated by accident.
            if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) && !a.allow_empty
            {
                bail!(
                    "{} is an empty file (0 bytes), not an SQLite database: nothing was backed up and no snapshot recorded (is it the right path?). --allow-empty backs it up as an empty database on purpose",
                    path.display()
                );
            }
            let copy = sqlite::online_copy(path, &tmp_dir())?;
            let name = a.name.clone().unwrap_or_else(|| stem(path));
            let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            backup_sqlite_copy(
                ev,
                repo,
                &copy,
                meta(
                    name,
                    sqlite_source(identity.display().to_string(), &copy.info),
                ),
            )?
        }
        Input::Stdin => {
            let (head, reader) = peek(std::io::stdin(), 100)?;
            if head.is_empty() && !a.allow_empty {
                bail!("stdin is empty: nothing was backed up and no snapshot recorded. An empty pipe is what a producer that failed leaves (pg_dump of a missing database, a typo): with `set -o pipefail` the shell sees it fail, and `--command 'pg_dump …'` checks its exit status. --allow-empty stores an empty stream on purpose");
            }
            let fmt = format.unwrap_or_else(|| StreamFormat::detect(&head));
            let name = a.name.clone().unwrap_or_else(|| "stdin".into());
            if fmt == StreamFormat::Sqlite && format.is_some()
                || head.starts_with(b"SQLite format 3\0") && format.is_none()
            {
                let copy = stdin_to_sqlite_file(reader)?;
                backup_sqlite_copy(
                    ev,
                    repo,
                    &copy,
                    meta(name, sqlite_source("-".into(), &copy.info)),
                )?
            } else {
                let b = start(repo, &name)?;
                let progress = ev.step("backing up stdin", b.progress());
                let r = stream_parts(&b, format, &head, reader);
                progress.finish();
                let (fmt, info) = match r {
                    Ok(i) => i,
                    Err(e) => {
                        b.abort();
                        return Err(e.context("no snapshot recorded"));
                    }
                };
                let source = SourceInfo {
                    kind: "stdin".into(),
                    identity: "-".into(),
                    format: fmt.name().into(),
                    server_version: info.server_version.clone(),
                    notes: info.notes.clone(),
                };
                b.finish(dumped_at(meta(name, source), time.is_some(), &info))?
            }
        }
    };
    Ok(summary)
}

/// Starts a backup with the latest snapshot of the same name as the base for deltas.
pub fn start<'r>(repo: &'r Repository, name: &str) -> Result<Backup<'r>> {
    let parent = repo.newest_of(name).ok().flatten().map(|(_, s)| s);
    Ok(repo.start_backup_after(parent.as_ref())?)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sqlite".into())
}

fn sqlite_source(identity: String, info: &sqlite::DbInfo) -> SourceInfo {
    sqlite::snapshot::source(identity, info)
}

/// A database file arriving on stdin: spooled to a temp file so it can be validated and its
/// tables counted.
fn stdin_to_sqlite_file(mut reader: impl Read) -> Result<sqlite::OnlineCopy> {
    let mut file = tempfile::Builder::new()
        .prefix(".dbvault-stdin-")
        .tempfile_in(tmp_dir())
        .context("creating a temporary file")?;
    let size = std::io::copy(&mut reader, file.as_file_mut()).context("reading stdin")?;
    let info = sqlite::inspect(file.path()).map_err(|e| match e {
        dbvault_formats::FormatError::NotSqlite(_) => anyhow!("stdin is not an SQLite database"),
        other => other.into(),
    })?;
    Ok(sqlite::OnlineCopy { file, size, info })
}

/// Backs up a stream as the parts of its format (`forced`, or detected from `head`; a
/// compressed dump as the dump inside); returns the format and what the stream said.
fn stream_parts(
    b: &Backup<'_>,
    forced: Option<StreamFormat>,
    head: &[u8],
    reader: impl Read,
) -> Result<(StreamFormat, dbvault_formats::StreamInfo)> {
    Ok(dbvault_formats::compressed::backup_detected(
        b,
        forced,
        head,
        reader,
        &tmp_dir(),
    )?)
}

/// A snapshot of an archive takes the archive's own time (pg_dump's local time) unless
/// `--time` was given: importing old `.dump` files keeps their dates for retention.
fn dumped_at(mut m: SnapshotMeta, given: bool, info: &dbvault_formats::StreamInfo) -> SnapshotMeta {
    use chrono::TimeZone;
    if given {
        return m;
    }
    if let Some((y, mo, d, h, mi, s)) = info.created {
        let local = chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)
            .and_then(|day| day.and_hms_opt(h as u32, mi as u32, s as u32))
            .and_then(|t| chrono::Local.from_local_datetime(&t).earliest());
        if let Some(t) = local {
            m.time = t.fixed_offset();
        }
    }
    m
}

fn backup_sqlite_copy(
    ev: &dyn Events,
    repo: &Repository,
    copy: &sqlite::OnlineCopy,
    meta: SnapshotMeta,
) -> Result<BackupSummary> {
    let b = start(repo, &meta.name)?;
    let progress = ev.step_of(
        &format!("backing up {}", meta.name),
        b.progress(),
        Some(copy.size),
    );
    let r = sqlite::snapshot::backup_copy(&b, copy);
    progress.finish();
    r?;
    Ok(b.finish(meta)?)
}

fn backup_command(
    ev: &dyn Events,
    repo: &Repository,
    a: &Job,
    cmd: &str,
    format: Option<StreamFormat>,
    given_time: bool,
    meta: impl Fn(String, SourceInfo) -> SnapshotMeta,
) -> Result<BackupSummary> {
    if format == Some(StreamFormat::Sqlite) {
        bail!("--format sqlite with --command is not supported: back up the file with sqlite:PATH");
    }
    let name = a.name.clone().unwrap_or_else(|| program_name(cmd));
    let b = start(repo, &name)?;
    // The command gets no passphrase and no store credentials (its own PG* stay).
    // Unattended (cron, systemd, a script): its own process group, which dbvault stops
    // when it is stopped (interrupt.rs), so no producer is left running. On a terminal it
    // stays in the foreground group, where Ctrl-C reaches it anyway and it can still ask
    // for a password on the terminal (a background group reading it would stop).
    let unattended = !std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut sh = Command::new("sh");
    dbvault_core::secrets::scrub(&mut sh);
    if unattended {
        std::os::unix::process::CommandExt::process_group(&mut sh, 0);
    }
    let mut child = sh
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the command {cmd:?}"))?;
    let _group = dbvault_core::interrupt::ChildGroup::register(child.id(), unattended);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout from the command"))?;
    let progress = ev.step("backing up command output", b.progress());
    let mut empty = false;
    let r = peek(stdout, 100).and_then(|(head, reader)| {
        if head.is_empty() && !a.allow_empty {
            empty = true;
            bail!("the command wrote nothing: an empty output is refused (--allow-empty stores one on purpose)");
        }
        stream_parts(&b, format, &head, reader)
    });
    progress.finish();
    let (fmt, info) = match r {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            b.abort();
            // A truncated dump is usually the command dying: say both.
            if let Ok(st) = status {
                if !st.success() && empty {
                    // It failed: --allow-empty would not help, its status is the news.
                    bail!(
                        "the command {cmd:?} {} and wrote nothing (its own message is above); no snapshot recorded",
                        describe(st)
                    );
                }
                if !st.success() {
                    bail!(
                        "the command {cmd:?} {}: {e:#}; no snapshot recorded",
                        describe(st)
                    );
                }
            }
            return Err(e.context("no snapshot recorded"));
        }
    };
    let status = child.wait().context("waiting for the command")?;
    if !status.success() {
        b.abort();
        bail!(
            "the command {cmd:?} {}: no snapshot recorded",
            describe(status)
        );
    }
    let source = SourceInfo {
        kind: "command".into(),
        identity: cmd.to_string(),
        format: fmt.name().into(),
        server_version: info.server_version.clone(),
        notes: info.notes.clone(),
    };
    Ok(b.finish(dumped_at(meta(name, source), given_time, &info))?)
}
