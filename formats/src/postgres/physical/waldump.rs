//! Reading WAL records with the server's own `pg_waldump`, as compact facts: which
//! transaction changed which file, created which, and how it ended. Segments come from
//! the repository a window at a time (never the whole archive on disk), and two windows
//! are decoded at once.
//!
//! A window is `WINDOW` segments plus the next one, so that a record that begins in the
//! window's last segment and ends in the next is read whole; the next window begins where
//! this one's records stopped being counted (pg_waldump's `-e`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, NaiveDateTime, Utc};
use dbvault_core::Repository;

use crate::error::{FormatError, Result};
use crate::postgres::wal;

/// Segments decoded per pg_waldump run.
const WINDOW: usize = 4;

/// A file: (database OID, relfilenode). Database 0 is `global/`.
pub type FileId = (u32, u32);

/// What a record says, reduced to what `changes` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// A heap change to `file` by transaction `xid`.
    Heap {
        /// The (sub)transaction.
        xid: u32,
        /// The heap file.
        file: FileId,
        /// What it did.
        op: HeapOp,
    },
    /// Transaction `xid` created `file` (a new relfilenode).
    Created {
        /// The (sub)transaction.
        xid: u32,
        /// The new file.
        file: FileId,
    },
    /// Transaction `xid` committed or aborted.
    End(Box<End>),
}

/// A heap change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapOp {
    /// A row deleted.
    Delete,
    /// A row updated.
    Update,
    /// Rows or pages written (inserts, full-page images).
    Write,
}

/// A transaction's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// The transaction.
    pub xid: u32,
    /// The commit (or abort) record's LSN.
    pub lsn: u64,
    /// Committed (else aborted).
    pub committed: bool,
    /// When.
    pub time: DateTime<Utc>,
    /// Files it removed at commit.
    pub dropped_files: Vec<FileId>,
    /// Relations whose statistics it dropped (database, relation OID): the relations it
    /// dropped.
    pub dropped_relations: Vec<(u32, u32)>,
    /// Its committed subtransactions.
    pub subxacts: Vec<u32>,
}

/// The segments to read, in order, and where to start in the first one.
pub struct Span<'a> {
    /// Repository and WAL source.
    pub repo: &'a Repository,
    /// The source's archive name.
    pub source: &'a str,
    /// Segment names in replay order.
    pub segments: Vec<String>,
    /// Segment size.
    pub segment_size: u64,
    /// pg_waldump of the cluster's major version.
    pub pg_waldump: PathBuf,
}

/// Decodes `span` and hands each fact to `each`, in WAL order, until `each` says stop
/// (returns false).
///
/// # Errors
/// A segment that cannot be fetched, pg_waldump failing before the end of the archive.
pub fn scan(span: &Span<'_>, each: &mut dyn FnMut(Fact) -> bool) -> Result<()> {
    let per_log = wal::segments_per_log(span.segment_size);
    // Windows of at most WINDOW segments, each within one timeline (pg_waldump reads one).
    let tli = |n: &String| n.get(..8).map(str::to_string);
    let mut windows: Vec<&[String]> = Vec::new();
    let mut from = 0;
    for i in 1..=span.segments.len() {
        let cut = i == span.segments.len()
            || i - from == WINDOW
            || tli(&span.segments[i]) != tli(&span.segments[from]);
        if cut {
            windows.push(&span.segments[from..i]);
            from = i;
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("dbvault-waldump-")
        .tempdir()
        .map_err(|e| FormatError::io("a temporary directory", e))?;
    // Window i runs in a thread while window i-1's facts are handed over: two at a time.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<Vec<Fact>>)>(1);
    let dir_path = dir.path().to_path_buf();
    let windows = &windows;
    std::thread::scope(|s| -> Result<()> {
        let producer = s.spawn(move || {
            let results: Vec<_> = windows
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    // The next window's first segment, read along when on this timeline.
                    let next = windows
                        .get(i + 1)
                        .map(|n| n[0].clone())
                        .filter(|n| n.get(..8) == w[0].get(..8));
                    (i, w.to_vec(), next)
                })
                .collect();
            // Two workers over the windows, each sending in order through a turnstile.
            let turn = std::sync::Mutex::new(0usize);
            let cv = std::sync::Condvar::new();
            std::thread::scope(|inner| {
                for worker in 0..2 {
                    let (results, tx, turn, cv, dir) =
                        (&results, tx.clone(), &turn, &cv, dir_path.as_path());
                    inner.spawn(move || {
                        for (i, w, next) in results.iter().skip(worker).step_by(2) {
                            let facts = decode(span, per_log, dir, *i, w, next.as_deref());
                            let mut t = turn
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            while *t != *i {
                                t = cv
                                    .wait(t)
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                            }
                            let failed = facts.is_err();
                            // A closed channel: the reader has stopped.
                            let gone = tx.send((*i, facts)).is_err();
                            *t += 1;
                            cv.notify_all();
                            if failed || gone {
                                return;
                            }
                        }
                    });
                }
            });
        });
        let mut r = Ok(());
        'windows: for (_, facts) in rx.iter() {
            match facts {
                Ok(f) => {
                    for fact in f {
                        if !each(fact) {
                            break 'windows;
                        }
                    }
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        drop(rx);
        let _ = producer.join();
        r
    })
}

/// One window: its segments fetched into their own directory, pg_waldump run over them,
/// its output reduced to facts.
fn decode(
    span: &Span<'_>,
    per_log: u64,
    dir: &Path,
    i: usize,
    window: &[String],
    next: Option<&str>,
) -> Result<Vec<Fact>> {
    let here = dir.join(format!("w{i}"));
    std::fs::create_dir_all(&here).map_err(|e| FormatError::io(here.display().to_string(), e))?;
    let mut names: Vec<&str> = window.iter().map(String::as_str).collect();
    names.extend(next);
    for n in &names {
        if !wal::fetch(span.repo, span.source, n, &here.join(n))? {
            return Err(FormatError::Invalid(format!(
                "WAL segment {n} of {:?} is not in the archive",
                span.source
            )));
        }
    }
    let seg = |n: &str| match wal::parse_name(n, per_log) {
        Some(wal::WalFile::Segment { timeline, number }) => Ok((timeline, number)),
        _ => Err(FormatError::Invalid(format!(
            "{n} is not a WAL segment name"
        ))),
    };
    let (tli, first) = seg(window[0].as_str())?;
    let (_, last) = seg(window[window.len() - 1].as_str())?;
    let start = wal::segment_start(first, span.segment_size);
    let end = wal::segment_start(last + 1, span.segment_size);
    let mut child = Command::new(&span.pg_waldump)
        .env("TZ", "UTC")
        .arg("--path")
        .arg(&here)
        .args(["--timeline", &tli.to_string()])
        .args(["--start", &lsn_text(start)])
        .args(["--end", &lsn_text(end)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FormatError::io(span.pg_waldump.display().to_string(), e))?;
    let stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut facts = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut r = BufReader::with_capacity(1 << 20, out);
        let mut line = String::new();
        while r
            .read_line(&mut line)
            .map_err(|e| FormatError::io("pg_waldump", e))?
            > 0
        {
            parse_line(line.trim_end(), &mut facts);
            line.clear();
        }
    }
    let status = child.wait().map_err(|e| FormatError::io("pg_waldump", e))?;
    let errs = errs.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&here);
    // At the end of the archive pg_waldump stops at the first record that is not there
    // ("invalid record length", "could not find file"): that is where the WAL ends.
    let ended = next.is_none() && ends_normally(&errs);
    if !status.success() && !ended {
        return Err(FormatError::Invalid(format!(
            "pg_waldump over {}..{}: {}",
            window[0],
            window[window.len() - 1],
            errs.lines().next().unwrap_or("failed")
        )));
    }
    Ok(facts)
}

/// pg_waldump's words for "no more WAL here".
fn ends_normally(errs: &str) -> bool {
    errs.contains("invalid record length")
        || errs.contains("could not find file")
        || errs.contains("invalid magic number")
        || errs.contains("record with incorrect prev-link")
        || errs.contains("invalid resource manager ID")
        || errs.trim().is_empty()
}

/// `X/Y`.
#[must_use]
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `X/Y` to a number.
#[must_use]
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// `base/5/16384`, `global/1262`, `pg_tblspc/16385/PG_15_202209061/5/16390` to a file.
fn path_file(p: &str) -> Option<FileId> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        ["global", node] => Some((0, node.parse().ok()?)),
        [.., db, node] => Some((db.parse().ok()?, node.parse().ok()?)),
        _ => None,
    }
}

/// The field after `key` up to the next comma.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    let rest = &line[at..];
    Some(rest[..rest.find(',').unwrap_or(rest.len())].trim())
}

/// One line of pg_waldump's output, as facts (none for records that do not matter here).
pub fn parse_line(line: &str, out: &mut Vec<Fact>) {
    let Some(rest) = line.strip_prefix("rmgr: ") else {
        return;
    };
    let rmgr = rest.split_whitespace().next().unwrap_or("");
    if !matches!(rmgr, "Heap" | "Heap2" | "Transaction" | "Storage" | "XLOG") {
        return;
    }
    let Some(xid) = field(line, "tx:").and_then(|x| x.parse::<u32>().ok()) else {
        return;
    };
    let Some(desc) = line.find("desc: ").map(|i| &line[i + 6..]) else {
        return;
    };
    let kind = desc.split([' ', ',', ';']).next().unwrap_or("");
    match rmgr {
        "Transaction" => {
            let committed = kind == "COMMIT";
            if !committed && kind != "ABORT" {
                return;
            }
            let (Some(lsn), Some(time)) = (
                field(line, "lsn:").and_then(parse_lsn),
                desc.get(kind.len() + 1..)
                    .and_then(|t| t.split(';').next())
                    .and_then(|t| {
                        NaiveDateTime::parse_from_str(
                            t.trim().trim_end_matches(" UTC"),
                            "%Y-%m-%d %H:%M:%S%.f",
                        )
                        .ok()
                    }),
            ) else {
                return;
            };
            let mut end = End {
                xid,
                lsn,
                committed,
                time: time.and_utc(),
                dropped_files: Vec::new(),
                dropped_relations: Vec::new(),
                subxacts: Vec::new(),
            };
            for section in desc.split("; ").skip(1) {
                let (name, list) = section.split_once(':').unwrap_or((section, ""));
                let items = list.split_whitespace();
                match name.trim() {
                    "rels" => end.dropped_files = items.filter_map(path_file).collect(),
                    "subxacts" => end.subxacts = items.filter_map(|x| x.parse().ok()).collect(),
                    "dropped stats" => {
                        // kind/database/object: kind 2 is a relation's statistics.
                        end.dropped_relations = items
                            .filter_map(|s| {
                                let mut p = s.split('/');
                                (p.next()? == "2").then_some(())?;
                                Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
                            })
                            .collect();
                    }
                    _ => {}
                }
            }
            out.push(Fact::End(Box::new(end)));
        }
        "Storage" if kind == "CREATE" => {
            if let Some(file) = desc.split_whitespace().nth(1).and_then(path_file) {
                out.push(Fact::Created { xid, file });
            }
        }
        "Heap" | "Heap2" | "XLOG" if xid != 0 => {
            let op = match (rmgr, kind) {
                ("Heap", "DELETE") => HeapOp::Delete,
                ("Heap", "UPDATE" | "HOT_UPDATE") => HeapOp::Update,
                ("Heap", "INSERT" | "INSERT+INIT")
                | ("Heap2", "MULTI_INSERT" | "MULTI_INSERT+INIT") => HeapOp::Write,
                ("XLOG", "FPI") => HeapOp::Write,
                _ => return,
            };
            // The first block reference names the file (an update's second is the same
            // relation's old page).
            let Some(rel) = line.find("blkref #0: rel ").map(|i| &line[i + 15..]) else {
                return;
            };
            let path = rel.split_whitespace().next().unwrap_or("");
            let mut p = path.split('/').skip(1);
            if let (Some(Ok(db)), Some(Ok(node))) = (
                p.next().map(str::parse::<u32>),
                p.next().map(str::parse::<u32>),
            ) {
                // Catalogs (below FirstNormalObjectId) are nobody's table.
                if node < 16384 {
                    return;
                }
                out.push(Fact::Heap {
                    xid,
                    file: (db, node),
                    op,
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_waldump_lines_become_facts() {
        let mut f = Vec::new();
        parse_line("rmgr: Heap        len (rec/tot):     54/    54, tx:        726, lsn: 0/015502A8, prev 0/0154E270, desc: DELETE off 2 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/5/16384 blk 0", &mut f);
        parse_line("rmgr: Transaction len (rec/tot):     46/    46, tx:        725, lsn: 0/01550388, prev 0/01550350, desc: COMMIT 2026-12-07 19:55:27.933535 UTC; subxacts: 726", &mut f);
        parse_line("rmgr: Storage     len (rec/tot):     42/    42, tx:        728, lsn: 0/02000090, prev 0/02000060, desc: CREATE base/5/16408", &mut f);
        parse_line("rmgr: Transaction len (rec/tot):    469/   469, tx:        729, lsn: 0/020005E0, prev 0/020005A8, desc: COMMIT 2026-12-07 19:55:42.296459 UTC; rels: base/5/16394; dropped stats: 2/5/16394; inval msgs: catcache 80 catcache 79", &mut f);
        parse_line("rmgr: XLOG        len (rec/tot):     49/   137, tx:        730, lsn: 0/02006128, prev 0/020060E0, desc: FPI , blkref #0: rel 1663/5/16413 blk 0 FPW", &mut f);
        parse_line("rmgr: Btree       len (rec/tot):     64/    64, tx:        730, lsn: 0/02006128, prev 0/020060E0, desc: INSERT_LEAF off 3, blkref #0: rel 1663/5/16389 blk 1", &mut f);
        assert_eq!(f.len(), 5, "{f:?}");
        assert_eq!(
            f[0],
            Fact::Heap {
                xid: 726,
                file: (5, 16384),
                op: HeapOp::Delete
            }
        );
        let Fact::End(e) = &f[1] else { panic!("{f:?}") };
        assert_eq!(
            (e.xid, e.lsn, e.committed, e.subxacts.as_slice()),
            (725, 0x0155_0388, true, &[726][..])
        );
        assert_eq!(e.time.to_rfc3339(), "2026-12-07T19:55:27.933535+00:00");
        assert_eq!(
            f[2],
            Fact::Created {
                xid: 728,
                file: (5, 16408)
            }
        );
        let Fact::End(e) = &f[3] else { panic!("{f:?}") };
        assert_eq!(
            (e.dropped_files.as_slice(), e.dropped_relations.as_slice()),
            (&[(5, 16394)][..], &[(5, 16394)][..])
        );
        assert_eq!(
            f[4],
            Fact::Heap {
                xid: 730,
                file: (5, 16413),
                op: HeapOp::Write
            }
        );
        assert_eq!(
            path_file("pg_tblspc/16385/PG_15_202209061/5/16390"),
            Some((5, 16390))
        );
    }
}
