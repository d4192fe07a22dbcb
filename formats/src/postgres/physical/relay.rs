//! The WAL relay of a throwaway recovery. The recovering server's `restore_command` runs as
//! the server's user, who may not be able to read the repository or its passphrase (dbvault
//! often runs as root, the server never does); so it asks this process, which has the
//! repository open, over a Unix socket in the throwaway directory, and this process writes
//! the file where the server wants it, owned by the server's user.
//!
//! The relay also records what it served and what it could not: a server whose
//! `restore_command` fails takes it for the end of the archive and promotes, so without the
//! record a recovery cut short by a damaged segment would look like one that reached the end.
//!
//! Protocol, one request per connection: `NAME\tABSOLUTE-PATH\n`, answered `ok\n`,
//! `missing\n` or `error TEXT\n`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dbvault_core::Repository;

use crate::error::{FormatError, Result};
use crate::postgres::wal;

/// What the relay did.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// Segments handed to the server, in order.
    pub segments: Vec<String>,
    /// Files the archive does not have (the server asks for some that never exist).
    pub missing: Vec<String>,
    /// Files that could not be handed over, with why (damage, the store not answering).
    pub failures: Vec<(String, String)>,
}

/// A running relay; stopped when dropped.
pub struct Relay {
    /// The socket the `restore_command` connects to.
    pub socket: PathBuf,
    served: Arc<Mutex<Served>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// What it has done so far.
    #[must_use]
    pub fn served(&self) -> Served {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Where a relay may write, and for whom.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The WAL source (`wal-push --name`).
    pub source: String,
    /// Every destination must be under this directory (the throwaway directory).
    pub root: PathBuf,
    /// Where fetched-ahead segments wait.
    pub spool: PathBuf,
    /// The server's user and group, when files must be given to it.
    pub owner: Option<(u32, u32)>,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

/// Starts a relay on `socket` in `scope`: it serves until the [`Relay`] is dropped.
///
/// # Errors
/// The socket cannot be made.
pub fn start<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    repo: &'s Repository,
    socket: &Path,
    o: RelayOptions,
) -> Result<Relay> {
    let io = |e| FormatError::io(socket.display().to_string(), e);
    let listener = UnixListener::bind(socket).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    give(socket, o.owner).map_err(io)?;
    let served = Arc::new(Mutex::new(Served::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2) = (served.clone(), stop.clone());
    scope.spawn(move || {
        let mut ahead: Option<String> = None;
        while !st2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(next) = answer(repo, &o, stream, &s2) {
                        ahead = Some(next);
                    }
                    // Fetch the next segment while the server replays this one.
                    if let Some(next) = ahead.take() {
                        let _ = wal::prefetch(repo, &o.source, &[next], &o.spool);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    });
    Ok(Relay {
        socket: socket.to_path_buf(),
        served,
        stop,
    })
}

/// Gives `p` to the server's user (when one is named).
fn give(p: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((u, g)) => std::os::unix::fs::lchown(p, Some(u), Some(g)),
        None => Ok(()),
    }
}

/// Answers one request; returns the segment after the one served, to fetch ahead.
fn answer(
    repo: &Repository,
    o: &RelayOptions,
    stream: UnixStream,
    served: &Mutex<Served>,
) -> Option<String> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return None;
    }
    let Some((name, dest)) = line.trim_end_matches('\n').split_once('\t') else {
        let _ = (&stream).write_all(b"error malformed request\n");
        return None;
    };
    let dest = Path::new(dest);
    // Only files of the throwaway directory, under names PostgreSQL uses.
    let sane = dest.is_absolute()
        && dest.starts_with(&o.root)
        && !dest
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if !sane {
        let _ = (&stream).write_all(b"error refused: not a WAL file of this recovery\n");
        return None;
    }
    let got = wal::take_prefetched(&o.spool, name, dest).and_then(|hit| {
        if hit {
            Ok(true)
        } else {
            wal::fetch(repo, &o.source, name, dest)
        }
    });
    let reply = match got {
        Ok(true) => match give(dest, o.owner) {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error cannot give {} to the server: {e}\n", dest.display()),
        },
        Ok(false) => "missing\n".to_string(),
        Err(e) => format!("error {}\n", e.to_string().replace('\n', " ")),
    };
    if let Ok(mut s) = served.lock() {
        match reply.as_str() {
            "ok\n" => s.segments.push(name.to_string()),
            "missing\n" => s.missing.push(name.to_string()),
            r => s
                .failures
                .push((name.to_string(), r.trim_end()[6..].to_string())),
        }
    }
    let _ = (&stream).write_all(reply.as_bytes());
    (reply == "ok\n")
        .then(|| wal::following(name, 1, wal::segments_per_log(o.segment_size)))
        .and_then(|v| v.into_iter().next())
}

/// What the relay answered a `restore_command`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The file is in place.
    Ok,
    /// The archive does not have it.
    Missing,
    /// It could not be handed over.
    Error(String),
}

/// The `restore_command`'s side: asks the relay at `socket` for `name`, to be written at
/// `dest` (relative paths are taken from the current directory, the data directory).
///
/// # Errors
/// The relay cannot be reached.
pub fn ask(socket: &Path, name: &str, dest: &Path) -> Result<Reply> {
    let io = |e| FormatError::io(socket.display().to_string(), e);
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        std::env::current_dir().map_err(io)?.join(dest)
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.write_all(format!("{name}\t{}\n", dest.display()).as_bytes())
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(io)?;
    Ok(match line.trim_end() {
        "ok" => Reply::Ok,
        "missing" => Reply::Missing,
        other => Reply::Error(other.strip_prefix("error ").unwrap_or(other).to_string()),
    })
}
