//! Everything of pg_dump's data and post-data sections that a direct backup does not copy
//! itself, from pg_dump, in the backup's exported snapshot.
//!
//! A direct backup copies table data over COPY connections; the rest of what pg_dump
//! would dump comes from one `pg_dump --section=data --section=post-data` run that
//! excludes exactly the tables copied (`--exclude-table-data`): sequence values, large
//! objects (`BLOBS`), materialized-view refreshes, the post-data schema, and whatever a
//! later pg_dump adds to its data section. So the direct mode holds what pg_dump holds,
//! from pg_dump itself, and any table data we failed to copy would still be in there.
//!
//! The run starts beside the COPY workers. Its output is read up to the large objects
//! (sequence values come first, and are small); pg_dump then waits on the pipe until the
//! tables are stored, the large objects are streamed into their own part (so they dedup
//! and a table restore never reads them), and the rest is read into post-data.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Stdio};

use crate::error::{FormatError, Result};
use crate::postgres::conn::PgSource;
use crate::postgres::toc::parse_toc;

/// Above this many bytes of `--exclude-table-data` arguments, the run excludes every
/// table's data with one pattern instead (argument lists have a size limit); sequence
/// values and refreshes are then written by dbvault (see `pgdirect`).
const MAX_EXCLUDE_ARGS: usize = 512 * 1024;

/// A pattern for pg_dump's `-t`-style options that matches exactly one table.
fn exact_pattern(schema: &str, table: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}", q(schema), q(table))
}

/// A running `pg_dump --section=data --section=post-data`.
pub(crate) struct DataRun {
    child: Child,
    out: BufReader<ChildStdout>,
    /// Lines read but not yet handed out.
    pending: Vec<Vec<u8>>,
    in_copy: bool,
    /// pg_dump's closing line went by.
    complete: bool,
    /// True when every table's data was excluded by pattern (then nothing else of the
    /// data section but large objects is certain to be there).
    pub excluded_all: bool,
}

impl DataRun {
    /// Starts pg_dump in `snapshot`, excluding the data of `tables` (schema, name).
    ///
    /// # Errors
    /// pg_dump cannot be started.
    pub(crate) fn start(
        src: &PgSource,
        snapshot: &str,
        tables: &[(&str, &str)],
        row_security: bool,
        sel: &crate::postgres::select::Selection,
    ) -> Result<DataRun> {
        // `--schema-only`: no data section at all (no sequence values, no large objects),
        // as pg_dump's own --schema-only.
        let mut args: Vec<String> = Vec::new();
        if !sel.schema_only {
            args.push("--section=data".into());
        }
        args.push("--section=post-data".into());
        args.push(format!("--snapshot={snapshot}"));
        args.extend(sel.pg_dump_args());
        if row_security {
            args.push("--enable-row-security".into());
        }
        let excludes: Vec<String> = tables
            .iter()
            .map(|(s, t)| format!("--exclude-table-data={}", exact_pattern(s, t)))
            .collect();
        let excluded_all = excludes.iter().map(String::len).sum::<usize>() > MAX_EXCLUDE_ARGS;
        if excluded_all {
            args.push("--exclude-table-data=*.*".into());
        } else {
            args.extend(excludes);
        }
        let mut child = src
            .tool("pg_dump")?
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FormatError::io("pg_dump (apt-get install postgresql-client)", e))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| FormatError::io("pg_dump", std::io::Error::other("no stdout")))?;
        Ok(DataRun {
            child,
            out: BufReader::with_capacity(1 << 16, out),
            pending: Vec::new(),
            in_copy: false,
            complete: false,
            excluded_all,
        })
    }

    fn line(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(l) = self.pending.pop() {
            return Ok(Some(l));
        }
        let mut l = Vec::new();
        let n = self
            .out
            .read_until(b'\n', &mut l)
            .map_err(|e| FormatError::io("reading pg_dump's output", e))?;
        if l == b"-- PostgreSQL database dump complete\n" {
            self.complete = true;
        }
        Ok((n > 0).then_some(l))
    }

    /// Reads until the large objects begin (or to the end): the sequence values and
    /// anything else before them, as text.
    ///
    /// # Errors
    /// Read errors.
    pub(crate) fn read_head(&mut self) -> Result<String> {
        let mut head = Vec::new();
        while let Some(l) = self.line()? {
            if self.in_copy {
                self.in_copy = l != b"\\.\n";
            } else if l == b"--\n" {
                if let Some(next) = self.line()? {
                    let blobs = parse_toc(&next).is_some_and(|h| h.kind.starts_with("BLOB"));
                    self.pending.push(next);
                    if blobs {
                        self.pending.push(l);
                        break;
                    }
                }
            } else if l.starts_with(b"COPY ") && l.ends_with(b" FROM stdin;\n") {
                self.in_copy = true;
            }
            head.extend_from_slice(&l);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }

    /// Whether the large objects come next.
    pub(crate) fn at_large_objects(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The large objects' entries, up to the first entry of another kind.
    pub(crate) fn large_objects(&mut self) -> LargeObjectsReader<'_> {
        LargeObjectsReader {
            run: self,
            line: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    /// Reads the rest, waits for pg_dump and checks that it succeeded and finished its
    /// output.
    ///
    /// # Errors
    /// pg_dump failed (its first error line), or its output lacks the closing line.
    pub(crate) fn finish(mut self) -> Result<String> {
        let mut rest = Vec::new();
        for l in std::mem::take(&mut self.pending).into_iter().rev() {
            rest.extend_from_slice(&l);
        }
        while let Some(l) = self.line()? {
            rest.extend_from_slice(&l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| FormatError::io("pg_dump", e))?;
        let text = String::from_utf8_lossy(&rest).into_owned();
        if !status.success() {
            return Err(FormatError::Postgres {
                context: "pg_dump --section=data --section=post-data".into(),
                message: err.lines().next().unwrap_or("failed").to_string(),
                sqlstate: None,
            });
        }
        if !self.complete {
            return Err(FormatError::Postgres {
                context: "pg_dump --section=data --section=post-data".into(),
                message: "its output ended without pg_dump's closing line".into(),
                sqlstate: None,
            });
        }
        Ok(text)
    }
}

impl Drop for DataRun {
    fn drop(&mut self) {
        // A backup that failed elsewhere leaves pg_dump waiting on the pipe.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the large objects' entries of a [`DataRun`].
pub(crate) struct LargeObjectsReader<'a> {
    run: &'a mut DataRun,
    line: Vec<u8>,
    pos: usize,
    done: bool,
}

impl LargeObjectsReader<'_> {
    /// The next line of the large objects, `None` at the first entry of another kind
    /// (or pg_dump's closing block), which is left for [`DataRun::finish`].
    fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let Some(l) = self.run.line()? else {
            self.done = true;
            return Ok(None);
        };
        if l == b"--\n" {
            if let Some(next) = self.run.line()? {
                // A comment line right after `--` starts an entry (or the closing block).
                let other = next.starts_with(b"-- ")
                    && !parse_toc(&next).is_some_and(|h| h.kind.starts_with("BLOB"));
                self.run.pending.push(next);
                if other {
                    self.run.pending.push(l);
                    self.done = true;
                    return Ok(None);
                }
            }
        }
        Ok(Some(l))
    }
}

impl Read for LargeObjectsReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.line.len() {
            match self.next_line().map_err(std::io::Error::other)? {
                Some(l) => {
                    self.line = l;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let k = (self.line.len() - self.pos).min(out.len());
        out[..k].copy_from_slice(&self.line[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::exact_pattern;

    #[test]
    fn patterns_match_one_table_whatever_its_name() {
        assert_eq!(exact_pattern("public", "t"), "\"public\".\"t\"");
        assert_eq!(
            exact_pattern("Sales Dept", "a\"b*.c"),
            "\"Sales Dept\".\"a\"\"b*.c\""
        );
    }
}
