//! Loading table data into PostgreSQL over the COPY protocol, straight from a snapshot's
//! table-data part (no psql in between: on two cores the extra process costs a third of
//! the load time).

use std::io::Write;
use std::pin::Pin;

use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use crate::error::Result;
use crate::postgres::conn::{pg_err, runtime, PgSource};

/// A connection that loads tables one after another.
pub struct Loader {
    rt: tokio::runtime::Runtime,
    client: Client,
}

const FLUSH: usize = 256 * 1024;

impl Loader {
    /// Connects.
    ///
    /// # Errors
    /// Connection failures.
    pub fn connect(src: &PgSource) -> Result<Loader> {
        let rt = runtime()?;
        let client = src.connect(&rt)?;
        Ok(Loader { rt, client })
    }

    /// Connects with pg_dump's session settings and the client encoding the dump
    /// `script` declares, so `COPY … TO STDOUT` gives the text a backup would have stored
    /// (e.g. schema-qualified regclass values).
    ///
    /// # Errors
    /// Connection failures.
    pub fn connect_like_pg_dump(src: &PgSource, script: &str) -> Result<Loader> {
        let l = Loader::connect(src)?;
        let sql = crate::postgres::session::session_sql(
            &crate::postgres::session::script_encoding(script),
            false,
        );
        l.execute("setting up the session as pg_dump does", &sql)?;
        Ok(l)
    }

    /// The filters of the extension configuration tables of this database, by qualified
    /// table name: a backup holds only the rows that match (as pg_dump's does), so a
    /// read-back compares only those.
    ///
    /// # Errors
    /// The server's error.
    pub fn config_table_filters(&self) -> Result<std::collections::HashMap<String, String>> {
        let sql = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                   coalesce(e.extcondition[u.i], '') \
                   FROM pg_extension e CROSS JOIN LATERAL unnest(e.extconfig) WITH ORDINALITY AS u(reloid, i) \
                   JOIN pg_class c ON c.oid = u.reloid JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relkind = 'r'";
        let rows = self
            .rt
            .block_on(self.client.query(sql, &[]))
            .map_err(|e| pg_err("listing extension configuration tables", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The runtime and the connection, for queries of this crate's own.
    pub(crate) fn parts(&self) -> (&tokio::runtime::Runtime, &Client) {
        (&self.rt, &self.client)
    }

    /// The server's version as a number (`150004` for 15.4).
    ///
    /// # Errors
    /// The server's error.
    pub fn server_version_num(&self) -> Result<u32> {
        let row = self
            .rt
            .block_on(self.client.query_one("SHOW server_version_num", &[]))
            .map_err(|e| pg_err("reading the server version", e))?;
        Ok(row.get::<_, String>(0).parse().unwrap_or(0))
    }

    /// Runs SQL statements (no psql meta-commands) on this connection.
    ///
    /// # Errors
    /// The server's error, with `what` as context.
    pub fn execute(&self, what: &str, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| pg_err(what, e))
    }

    /// Loads one table: `copy` is the part's `COPY … FROM stdin;` line, `fill` writes the
    /// part's text (header, rows, `\.`), of which only the rows are sent. One transaction
    /// per table. With `freeze` (the qualified table name, only for a table this restore
    /// created and nothing references yet), the table is truncated and loaded with
    /// `COPY … WITH (FREEZE)`. Returns the rows the server stored.
    ///
    /// # Errors
    /// The server's error, naming the table; errors from `fill`.
    pub fn load(
        &self,
        table: &str,
        copy: &str,
        freeze: Option<&str>,
        fill: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
    ) -> Result<u64> {
        Ok(self.load_inner(table, copy, freeze, false, fill)?.0)
    }

    /// Like [`Loader::load`], and also returns the BLAKE3 (hex) of the row text sent, to
    /// compare with what the server gives back ([`Loader::copy_out_hash`]).
    ///
    /// # Errors
    /// As [`Loader::load`].
    pub fn load_hashed(
        &self,
        table: &str,
        copy: &str,
        freeze: Option<&str>,
        fill: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
    ) -> Result<(u64, String)> {
        let (rows, hash) = self.load_inner(table, copy, freeze, true, fill)?;
        Ok((rows, hash.unwrap_or_default()))
    }

    /// Rows and BLAKE3 (hex) of `COPY … TO STDOUT` (`stmt`), as the server sends it.
    ///
    /// # Errors
    /// The server's error, with `what` as context.
    pub fn copy_out_hash(&self, what: &str, stmt: &str) -> Result<(u64, String)> {
        use futures_util::StreamExt;
        self.rt.block_on(async {
            let stream = self
                .client
                .copy_out(stmt)
                .await
                .map_err(|e| pg_err(what, e))?;
            let mut stream = Box::pin(stream);
            let mut h = blake3::Hasher::new();
            let mut rows = 0u64;
            while let Some(b) = stream.next().await {
                let b = b.map_err(|e| pg_err(what, e))?;
                rows += memchr::memchr_iter(b'\n', &b).count() as u64;
                h.update(&b);
            }
            Ok((rows, h.finalize().to_hex().to_string()))
        })
    }

    fn load_inner(
        &self,
        table: &str,
        copy: &str,
        freeze: Option<&str>,
        hash: bool,
        fill: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
    ) -> Result<(u64, Option<String>)> {
        self.rt
            .block_on(self.client.batch_execute("BEGIN"))
            .map_err(|e| pg_err("BEGIN", e))?;
        let mut stmt = copy.trim_end().trim_end_matches(';').to_string();
        // A table that has rows already (an extension's configuration table, filled by
        // CREATE EXTENSION) is appended to, never emptied.
        let empty = match freeze {
            Some(q) => self
                .rt
                .block_on(
                    self.client
                        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM ONLY {q})"), &[]),
                )
                .map_err(|e| pg_err(&format!("loading table {table}"), e))?
                .get::<_, bool>(0),
            None => false,
        };
        if let Some(q) = freeze.filter(|_| empty) {
            // Into a table made empty in this transaction, rows can be written frozen: the
            // index builds and key checks that follow then do not rewrite every page to
            // set hint bits.
            self.rt
                .block_on(self.client.batch_execute(&format!("TRUNCATE ONLY {q}")))
                .map_err(|e| pg_err(&format!("loading table {table}"), e))?;
            stmt.push_str(" WITH (FREEZE)");
        }
        let stmt = stmt.as_str();
        let sink = self
            .rt
            .block_on(self.client.copy_in::<_, bytes::Bytes>(stmt))
            .map_err(|e| pg_err(&format!("loading table {table}"), e))?;
        let mut w = CopyWriter {
            rt: &self.rt,
            sink: Box::pin(sink),
            buf: Vec::with_capacity(FLUSH * 2),
            in_data: false,
            error: None,
            hasher: hash.then(blake3::Hasher::new),
            tail: *b"\n\n\n",
            after_end: None,
        };
        let filled = fill(&mut w);
        // On failure the COPY is aborted by dropping its sink (CopyFail) before the
        // rollback: a ROLLBACK sent while the COPY is open would wait for ever.
        if let Some(e) = w.error.take() {
            drop(w);
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
            return Err(pg_err(&format!("loading table {table}"), e));
        }
        if let Err(e) = filled {
            // The part's own error (damage, the store): its kind is kept.
            drop(w);
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
            return Err(e);
        }
        let finished = w
            .finish()
            .map_err(|e| pg_err(&format!("loading table {table}"), e))?;
        let Some((rows, hash)) = finished else {
            // The COPY was abandoned (its sink dropped: CopyFail) before this rollback.
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
            return Err(crate::error::FormatError::Invalid(format!(
                "table {table}: its data has an end-of-data line (\\.) before its end, followed by more rows, so only the rows before it would load: this dump is not as pg_dump wrote it (edited by hand?); nothing of {table} was loaded"
            )));
        };
        self.rt
            .block_on(self.client.batch_execute("COMMIT"))
            .map_err(|e| pg_err("COMMIT", e))?;
        Ok((rows, hash))
    }
}

/// The statement that reads a restored table back as its part holds it: `copy` is the
/// part's `COPY t (cols) FROM stdin;` line; an extension configuration table is read
/// through its `filter`, as pg_dump reads it.
pub fn read_back_statement(copy: &str, filter: Option<&str>) -> String {
    let stmt = copy.trim_end().trim_end_matches(';');
    let Some(filter) = filter else {
        return stmt.replace(" FROM stdin", " TO STDOUT");
    };
    let target = stmt
        .strip_prefix("COPY ")
        .and_then(|s| s.strip_suffix(" FROM stdin"))
        .unwrap_or(stmt);
    // `t (a, b)`: the column list is the last parenthesised group.
    let (table, cols) = match target.rfind(" (") {
        Some(i) if target.ends_with(')') => (&target[..i], &target[i + 2..target.len() - 1]),
        _ => (target, "*"),
    };
    format!("COPY (SELECT {cols} FROM {table} {filter}) TO STDOUT")
}

/// Strips the part's header (up to the COPY line) and its `\.` terminator, and sends the
/// rows in 256 KiB messages.
struct CopyWriter<'a> {
    rt: &'a tokio::runtime::Runtime,
    sink: Pin<Box<CopyInSink<bytes::Bytes>>>,
    buf: Vec<u8>,
    in_data: bool,
    error: Option<tokio_postgres::Error>,
    /// Hashes the rows sent, when verifying.
    hasher: Option<blake3::Hasher>,
    /// The last bytes sent (a `\.` line may straddle two messages).
    tail: [u8; 3],
    /// What was sent after an end-of-data line `\.` (the server ignores it): only blank
    /// lines, comments and `\unrestrict` may follow (a snapshot made before the closing
    /// block went to post-data has them); rows there are a dump edited by hand.
    after_end: Option<Vec<u8>>,
}

/// Most of what may follow an end-of-data line (pg_dump's closing block is ~150 bytes).
const AFTER_END_MAX: usize = 64 << 10;

impl CopyWriter<'_> {
    fn send(&mut self, keep: usize) {
        if self.error.is_some() || self.buf.len() <= keep {
            return;
        }
        let rest = self.buf.split_off(self.buf.len() - keep);
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, rest));
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.watch_end(&chunk);
        if let Err(e) = self.rt.block_on(self.sink.as_mut().send(chunk)) {
            self.error = Some(e);
        }
    }

    /// Notes an end-of-data line in `chunk` and keeps what follows it.
    fn watch_end(&mut self, chunk: &[u8]) {
        if let Some(after) = self.after_end.as_mut() {
            let room = AFTER_END_MAX.saturating_sub(after.len());
            after.extend_from_slice(&chunk[..chunk.len().min(room + 1)]);
            return;
        }
        let head = &chunk[..chunk.len().min(4)];
        let edge: Vec<u8> = self.tail.iter().chain(head).copied().collect();
        let at = memchr::memmem::find(&edge, b"\n\\.\n")
            .map(|p| p + 4 - self.tail.len())
            .or_else(|| memchr::memmem::find(chunk, b"\n\\.\n").map(|p| p + 4));
        if let Some(p) = at {
            let rest = &chunk[p.min(chunk.len())..];
            self.after_end = Some(rest[..rest.len().min(AFTER_END_MAX + 1)].to_vec());
        }
        for b in chunk.iter().rev().take(3).rev() {
            self.tail = [self.tail[1], self.tail[2], *b];
        }
    }

    /// Whether rows follow an end-of-data line.
    fn stray_end(&self) -> bool {
        let Some(after) = &self.after_end else {
            return false;
        };
        after.len() > AFTER_END_MAX
            || after.split(|b| *b == b'\n').any(|l| {
                !(l.is_empty()
                    || l.starts_with(b"--")
                    || l.starts_with(b"\\unrestrict ")
                    || l.starts_with(b"\\restrict "))
            })
    }

    /// Sends the rest; `None` when rows followed an end-of-data line (the COPY is then
    /// abandoned: nothing of the table is kept).
    fn finish(
        mut self,
    ) -> std::result::Result<Option<(u64, Option<String>)>, tokio_postgres::Error> {
        // The part ends with "\.\n" and blank lines: everything after the last row.
        while self.buf.last() == Some(&b'\n') && !self.buf.ends_with(b"\\.\n") {
            self.buf.pop();
        }
        if self.buf.ends_with(b"\\.\n") {
            let n = self.buf.len() - 3;
            self.buf.truncate(n);
        }
        self.send(0);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.stray_end() {
            return Ok(None);
        }
        let rows = self.rt.block_on(self.sink.as_mut().finish())?;
        Ok(Some((
            rows,
            self.hasher.map(|h| h.finalize().to_hex().to_string()),
        )))
    }
}

impl Write for CopyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if !self.in_data {
            match memchr::memmem::find(&self.buf, b" FROM stdin;\n") {
                Some(p) => {
                    self.buf.drain(..p + 13);
                    self.in_data = true;
                }
                None => return Ok(data.len()),
            }
        }
        if self.buf.len() >= FLUSH {
            // Hold back the tail that may be the terminator.
            self.send(16);
        }
        if self.error.is_some() {
            return Err(std::io::Error::other("the server refused the data"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::read_back_statement;

    #[test]
    fn read_back_statements() {
        assert_eq!(
            read_back_statement("COPY public.t (a, b) FROM stdin;", None),
            "COPY public.t (a, b) TO STDOUT"
        );
        assert_eq!(
            read_back_statement("COPY public.t (a, b) FROM stdin;", Some("WHERE NOT x")),
            "COPY (SELECT a, b FROM public.t WHERE NOT x) TO STDOUT"
        );
        assert_eq!(
            read_back_statement("COPY \"S (x)\".t FROM stdin;", Some("")),
            "COPY (SELECT * FROM \"S (x)\".t ) TO STDOUT"
        );
    }
}
