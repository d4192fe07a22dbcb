//! pg_dump's plain format, split into parts while it streams.
//!
//! A plain dump is a sequence of table-of-contents entries, each introduced by a comment
//! block (`--` / `-- Name: …; Type: …; Schema: …; Owner: …` / `--`, or `-- Data for Name:`
//! for table data). The splitter cuts the stream, at line boundaries only, into:
//! `pre-data` (everything before the first table's data), one part per table's data
//! (`Type: TABLE DATA`), and `post-data` (everything after the data: sequence values,
//! constraints, indexes, triggers…). Concatenating the parts gives back the exact input.
//!
//! Inside `COPY … FROM stdin;` blocks every line is data until `\.`, so rows that look like
//! comments or headers never split anything. A stream without pg_dump's closing
//! `-- PostgreSQL database dump complete` is refused as truncated (a pipe cannot report that
//! pg_dump died).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

use dbvault_core::backup::{Backup, Chunking, PartInput};

use super::meta::TablePart;
use super::toc::{copy_target, parse_toc};

/// Row-aligned chunks for table data. A changed chunk is stored as a delta against the
/// chunk it replaces (see `dbvault_core::delta`), so an updated row costs about the row
/// whatever the chunk size; larger chunks then mean fewer blobs, less metadata and better
/// compression. Measured on shopbench's nights (bytes per night vs the floor): 4 KiB
/// 1.8-2.3x, 16 KiB 1.3-1.7x, 32 KiB 1.3-1.6x; restores also got twice as fast.
pub const TABLE_CHUNKS: dbvault_core::chunker::LineParams = dbvault_core::chunker::LineParams {
    min: 8 * 1024,
    avg: 32 * 1024,
    max: 256 * 1024,
};
/// Schema sections change rarely and are small.
pub const SCHEMA_CHUNKS: dbvault_core::chunker::LineParams = dbvault_core::chunker::LineParams {
    min: 2048,
    avg: 8192,
    max: 128 * 1024,
};

/// Which section a part belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartKind {
    /// Before any table data.
    PreData,
    /// One table's data.
    TableData {
        /// Schema (raw name).
        schema: String,
        /// Table (raw name).
        table: String,
    },
    /// After the table data.
    PostData,
}

impl PartKind {
    /// Kind string stored in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            PartKind::PreData => super::meta::PRE_DATA,
            PartKind::TableData { .. } => super::meta::TABLE_DATA,
            PartKind::PostData => super::meta::POST_DATA,
        }
    }

    /// Part name stored in manifests: `pre-data`, `schema.table`, `post-data`.
    pub fn name(&self) -> String {
        match self {
            PartKind::TableData { schema, table } => format!("{schema}.{table}"),
            other => other.kind().to_string(),
        }
    }
}

/// What a part turned out to hold, known once it was read.
#[derive(Clone, Debug, Default)]
pub struct PartStats {
    /// Data rows (lines of COPY blocks).
    pub rows: u64,
    /// The `COPY … FROM stdin;` line.
    pub copy_header: Option<String>,
    /// Pre- and post-data: BLAKE3 of the lines without the per-run key of `\restrict` and
    /// `\unrestrict` (current pg_dump writes a random one each run), so that `diff` can
    /// tell whether the schema changed.
    pub schema: blake3::Hasher,
}

/// The meta key of [`PartStats::schema`] in pre- and post-data parts.
pub const SCHEMA_BLAKE3: &str = "schema_blake3";

/// [`SCHEMA_BLAKE3`] of a whole pre- or post-data text, as the splitter computes it.
pub fn schema_blake3(text: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    for line in text.split_inclusive(|b| *b == b'\n') {
        h.update(without_key(line));
    }
    h.finalize().to_hex().to_string()
}

/// A line as it counts for [`PartStats::schema`]: `\restrict`/`\unrestrict` without key.
fn without_key(line: &[u8]) -> &[u8] {
    for cmd in [&b"\\restrict "[..], &b"\\unrestrict "[..]] {
        if line.starts_with(cmd) {
            return cmd;
        }
    }
    line
}

/// Splits a pg_dump plain-format stream into parts.
pub struct Splitter<R: BufRead> {
    r: R,
    lookahead: VecDeque<Vec<u8>>,
    current: Option<PartKind>,
    next: Option<PartKind>,
    in_copy: bool,
    /// Inside a COPY row wider than the read buffer: its bytes are handed on as they come
    /// (memory stays flat), the row counted at its newline.
    mid_row: bool,
    complete: bool,
    eof: bool,
    started: bool,
    /// The current part begins with the TOC entry that started it: no boundary there.
    at_part_start: bool,
    stats: Rc<RefCell<PartStats>>,
    /// `-- Dumped from database version …`.
    pub server_version: Option<String>,
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the pg_dump stream is truncated: it lacks pg_dump's closing line \"-- PostgreSQL database dump complete\" (did pg_dump fail?)",
    )
}

impl<R: BufRead> Splitter<R> {
    /// A splitter over a stream.
    pub fn new(r: R) -> Self {
        Splitter {
            r,
            lookahead: VecDeque::new(),
            current: None,
            next: Some(PartKind::PreData),
            in_copy: false,
            mid_row: false,
            complete: false,
            eof: false,
            started: false,
            at_part_start: false,
            stats: Rc::default(),
            server_version: None,
        }
    }

    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(l) = self.lookahead.pop_front() {
            return Ok(Some(l));
        }
        if self.eof {
            return Ok(None);
        }
        let mut line = Vec::with_capacity(128);
        if self.r.read_until(b'\n', &mut line)? == 0 {
            self.eof = true;
            return Ok(None);
        }
        Ok(Some(line))
    }

    /// Moves to the next part; `None` after the last. The part's bytes come from
    /// [`Splitter::reader`]; its stats are complete once that reader hit its end.
    ///
    /// # Errors
    /// Read errors.
    pub fn next_part(&mut self) -> io::Result<Option<(PartKind, Rc<RefCell<PartStats>>)>> {
        let Some(next) = self.next.take() else {
            return Ok(None);
        };
        if self.started && self.lookahead.is_empty() && self.eof {
            return Ok(None);
        }
        self.started = true;
        self.at_part_start = true;
        self.stats = Rc::new(RefCell::new(PartStats::default()));
        self.current = Some(next.clone());
        Ok(Some((next, self.stats.clone())))
    }

    /// Reader of the current part's bytes.
    pub fn reader(&mut self) -> PartReader<'_, R> {
        PartReader {
            sp: self,
            line: Vec::new(),
            pos: 0,
        }
    }

    /// The next line of the current part, or `None` at its end (a boundary, or the end of
    /// the stream).
    fn part_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(line) = self.read_line()? else {
            if self.in_copy || !self.complete {
                return Err(truncated());
            }
            return Ok(None);
        };
        let at_start = std::mem::replace(&mut self.at_part_start, false);
        if self.in_copy {
            if line == b"\\.\n" {
                self.in_copy = false;
            } else {
                self.stats.borrow_mut().rows += 1;
            }
            return Ok(Some(line));
        }
        if line == b"--\n" && !at_start {
            if let Some(peek) = self.read_line()? {
                let header = parse_toc(&peek);
                let closing = peek == b"-- PostgreSQL database dump complete\n";
                self.lookahead.push_front(peek);
                let in_data = matches!(self.current, Some(PartKind::TableData { .. }));
                if closing && in_data {
                    // A dump without post-data entries (no keys, no indexes): its closing
                    // block (and `\unrestrict KEY`) is the post-data part, never a table's.
                    self.lookahead.push_front(line);
                    self.next = Some(PartKind::PostData);
                    return Ok(None);
                }
                if let Some(h) = header {
                    let boundary = if h.kind == "TABLE DATA" {
                        Some(PartKind::TableData {
                            schema: h.schema,
                            table: h.name,
                        })
                    } else if in_data {
                        Some(PartKind::PostData)
                    } else {
                        None
                    };
                    if let Some(b) = boundary {
                        self.lookahead.push_front(line);
                        self.next = Some(b);
                        return Ok(None);
                    }
                }
            }
            return Ok(Some(line));
        }
        let mut line = line;
        if line.starts_with(b"COPY ") && odd_quotes(&line) {
            // A quoted name holding a newline: the statement goes on over more lines.
            while (odd_quotes(&line) || !line.ends_with(b" FROM stdin;\n")) && line.len() < 1 << 20
            {
                match self.read_line()? {
                    Some(more) => line.extend_from_slice(&more),
                    None => break,
                }
            }
        }
        if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;\n") {
            self.in_copy = true;
            let mut st = self.stats.borrow_mut();
            st.copy_header = Some(String::from_utf8_lossy(&line).trim_end().to_string());
        } else if line == b"-- PostgreSQL database dump complete\n" {
            self.complete = true;
        } else if let Some(v) = line.strip_prefix(b"-- Dumped from database version ") {
            self.server_version = Some(String::from_utf8_lossy(v).trim().to_string());
        }
        if !matches!(self.current, Some(PartKind::TableData { .. })) {
            self.stats.borrow_mut().schema.update(without_key(&line));
        }
        Ok(Some(line))
    }
}

/// Whether `line` holds an odd number of double quotes (a quoted name goes on).
fn odd_quotes(line: &[u8]) -> bool {
    line.iter().filter(|b| **b == b'"').count() % 2 == 1
}

/// Backs up a pg_dump plain-format stream into `b`: pre-data, one part per table's data
/// (row-aligned chunks), post-data. Returns the server version the dump names.
///
/// # Errors
/// A truncated stream (no snapshot may be recorded then), read and storage errors.
pub fn backup_stream(b: &Backup<'_>, reader: impl Read) -> crate::Result<Option<String>> {
    backup_plain(b, reader, None)
}

/// As [`backup_stream`]; with `rows`, also the BLAKE3 of each table part's rows (the lines
/// of its COPY block), by part name.
pub(crate) fn backup_plain(
    b: &Backup<'_>,
    reader: impl Read,
    mut rows: Option<&mut std::collections::HashMap<String, String>>,
) -> crate::Result<Option<String>> {
    let mut sp = Splitter::new(io::BufReader::with_capacity(1 << 20, reader));
    let source = |e| crate::FormatError::Core(dbvault_core::Error::Source(e));
    while let Some((kind, stats)) = sp.next_part().map_err(source)? {
        let table = matches!(kind, PartKind::TableData { .. });
        let chunking = Chunking::Lines(if table { TABLE_CHUNKS } else { SCHEMA_CHUNKS });
        let tap = RefCell::new(super::archive::rows::RowsTap::new(blake3::Hasher::new()));
        let reader = Tapped {
            r: sp.reader(),
            tap: (table && rows.is_some()).then_some(&tap),
        };
        let named = RefCell::new(kind.name());
        b.add_part_then(&kind.name(), chunking, reader, || {
            let st = stats.borrow();
            let mut name = kind.name();
            let meta = match &kind {
                PartKind::TableData { schema, table } => {
                    let (schema, table) = st
                        .copy_header
                        .as_deref()
                        .and_then(copy_target)
                        .unwrap_or_else(|| (schema.clone(), table.clone()));
                    name = format!("{schema}.{table}");
                    TablePart {
                        schema,
                        table,
                        copy: st.copy_header.clone(),
                        copy_blake3: None,
                    }
                    .to_meta()
                }
                _ => [(
                    SCHEMA_BLAKE3.to_string(),
                    serde_json::Value::from(st.schema.finalize().to_hex().to_string()),
                )]
                .into(),
            };
            *named.borrow_mut() = name.clone();
            PartInput {
                name,
                kind: kind.kind().into(),
                // Rows are counted in COPY blocks; data as INSERT statements (`--inserts`)
                // is not counted rather than called empty.
                rows: table
                    .then_some(st.rows)
                    .filter(|r| *r > 0 || st.copy_header.is_some()),
                meta,
                chunking,
            }
        })?;
        if let (Some(map), true) = (rows.as_deref_mut(), table) {
            let h = tap.into_inner().into_sink().finalize();
            map.insert(named.into_inner(), h.to_hex().to_string());
        }
    }
    Ok(sp.server_version.clone())
}

/// A part's bytes, passed through a rows tap too.
struct Tapped<'t, R: Read> {
    r: R,
    tap: Option<&'t RefCell<super::archive::rows::RowsTap<blake3::Hasher>>>,
}

impl<R: Read> Read for Tapped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        if let Some(t) = self.tap {
            t.borrow_mut().feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// The bytes of one part.
pub struct PartReader<'a, R: BufRead> {
    sp: &'a mut Splitter<R>,
    line: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> PartReader<'_, R> {
    /// Fast path inside a COPY block: hands over whole lines straight from the read buffer
    /// (no per-line work), stopping before the `\.` terminator. Returns 0 when the line
    /// path must take over (terminator, an overlong line, or pending lookahead).
    fn copy_bulk(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let sp = &mut *self.sp;
        if !sp.in_copy || !sp.lookahead.is_empty() {
            return Ok(0);
        }
        let buf = sp.r.fill_buf()?;
        if buf.is_empty() {
            return Err(truncated());
        }
        let lim = buf.len().min(out.len());
        if sp.mid_row {
            // The rest of a wide row, up to its newline.
            let k = memchr::memchr(b'\n', &buf[..lim]).map_or(lim, |p| p + 1);
            if buf[k - 1] == b'\n' {
                sp.mid_row = false;
                sp.stats.borrow_mut().rows += 1;
            }
            out[..k].copy_from_slice(&buf[..k]);
            sp.r.consume(k);
            return Ok(k);
        }
        // At the start of a line: the terminator (or what may be its beginning) goes the
        // line path.
        if buf.starts_with(b"\\.\n") || (buf.len() < 3 && buf[0] == b'\\') {
            return Ok(0);
        }
        let upto = memchr::memmem::find(&buf[..lim], b"\n\\.\n").map_or(lim, |p| p + 1);
        let Some(last_nl) = memchr::memrchr(b'\n', &buf[..upto]) else {
            // A row wider than what is in hand: pass its first bytes on, never holding
            // the whole row (a 100 MiB bytea is 200 MiB of text).
            out[..lim].copy_from_slice(&buf[..lim]);
            sp.r.consume(lim);
            sp.mid_row = true;
            sp.at_part_start = false;
            return Ok(lim);
        };
        let k = last_nl + 1;
        out[..k].copy_from_slice(&buf[..k]);
        // The part's BLAKE3 (which covers these rows) is computed by the backup worker,
        // off this thread: the reading thread is the bottleneck when little is new.
        sp.stats.borrow_mut().rows += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64;
        sp.r.consume(k);
        sp.at_part_start = false;
        Ok(k)
    }
}

impl<R: BufRead> Read for PartReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.pos == self.line.len() {
                // Back to the fast path after every line taken the slow way (e.g. the
                // one the read buffer cut in two), not only at the next call.
                let k = self.copy_bulk(&mut out[n..])?;
                if k > 0 {
                    n += k;
                    continue;
                }
                match self.sp.part_line()? {
                    Some(l) => {
                        self.line = l;
                        self.pos = 0;
                    }
                    None => break,
                }
            }
            let k = (self.line.len() - self.pos).min(out.len() - n);
            out[n..n + k].copy_from_slice(&self.line[self.pos..self.pos + k]);
            self.pos += k;
            n += k;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::toc::TocHeader;

    pub(crate) const SAMPLE: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n-- Dumped from database version 15.18\n\nSET x = 1;\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: me\n--\n\nCREATE TABLE public.t (a text);\n\n--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: me\n--\n\nCOPY public.t (a) FROM stdin;\n--\n-- Data for Name: fake; Type: TABLE DATA; Schema: public; Owner: me\n\\\\.\nrow2\n\\.\n\n\n--\n-- Data for Name: u v; Type: TABLE DATA; Schema: s; Owner: me\n--\n\nCOPY s.\"u v\" (a) FROM stdin;\n\\.\n\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: me\n--\n\nALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (a);\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n";

    fn split(input: &str) -> io::Result<Vec<(String, String, u64)>> {
        let mut sp = Splitter::new(input.as_bytes());
        let mut out = Vec::new();
        while let Some((kind, stats)) = sp.next_part()? {
            let mut s = String::new();
            sp.reader().read_to_string(&mut s)?;
            out.push((kind.name(), s, stats.borrow().rows));
        }
        Ok(out)
    }

    #[test]
    fn splits_at_toc_entries_and_never_inside_copy() {
        let parts = split(SAMPLE).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["pre-data", "public.t", "s.u v", "post-data"]);
        assert_eq!(parts[1].2, 4, "the comment-like rows are data");
        assert_eq!(parts[2].2, 0);
        let joined: String = parts.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(joined, SAMPLE);
        assert!(parts[1].1.starts_with("--\n-- Data for Name: t;"));
        assert!(parts[3].1.starts_with("--\n-- Name: t t_pkey;"));
    }

    #[test]
    fn the_closing_block_of_a_dump_without_post_data_is_post_data() {
        let cut = SAMPLE
            .find("--\n-- Name: t t_pkey")
            .expect("post-data entry");
        let end = SAMPLE
            .find("--\n-- PostgreSQL database dump complete")
            .expect("closing");
        let no_post = format!("{}{}", &SAMPLE[..cut], &SAMPLE[end..]);
        let parts = split(&no_post).expect("split");
        let names: Vec<&str> = parts.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["pre-data", "public.t", "s.u v", "post-data"]);
        assert_eq!(parts[2].1, "--\n-- Data for Name: u v; Type: TABLE DATA; Schema: s; Owner: me\n--\n\nCOPY s.\"u v\" (a) FROM stdin;\n\\.\n\n\n");
        assert!(
            parts[3]
                .1
                .starts_with("--\n-- PostgreSQL database dump complete")
                && parts[3].1.contains("\\unrestrict abc")
        );
        let joined: String = parts.iter().map(|(_, b, _)| b.as_str()).collect();
        assert_eq!(joined, no_post);
    }

    #[test]
    fn refuses_truncated_streams() {
        let cut = &SAMPLE[..SAMPLE.find("row2").unwrap()];
        assert!(split(cut).is_err());
        let no_footer = &SAMPLE[..SAMPLE
            .find("--\n-- PostgreSQL database dump complete")
            .unwrap()];
        let e = split(no_footer).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(split("").is_err());
    }

    #[test]
    fn copy_statements_name_their_table_exactly() {
        assert_eq!(
            copy_target("COPY public.\"we\"\"ird\nname\" (a, \"col\nx\") FROM stdin;"),
            Some(("public".into(), "we\"ird\nname".into()))
        );
        assert_eq!(
            copy_target("COPY \"Sales Dept\".\"Kunden Ü\" (a) FROM stdin;"),
            Some(("Sales Dept".into(), "Kunden Ü".into()))
        );
        assert_eq!(
            copy_target("COPY s.t FROM stdin;"),
            Some(("s".into(), "t".into()))
        );
        // The whole statement, over its lines, is the COPY header; its rows count.
        let dump = SAMPLE.replace(
            "COPY s.\"u v\" (a) FROM stdin;\n",
            "COPY s.\"u\nv\" (a, \"b\nc\") FROM stdin;\nx\t1\ny\t2\n",
        );
        let parts = split(&dump).unwrap();
        assert_eq!(parts[2].2, 2);
        assert!(parts[2]
            .1
            .contains("COPY s.\"u\nv\" (a, \"b\nc\") FROM stdin;\nx\t1\n"));
        assert_eq!(parts.last().map(|p| p.0.as_str()), Some("post-data"));
    }

    #[test]
    fn parses_toc_lines() {
        assert_eq!(
            parse_toc(
                b"-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: root\n"
            ),
            Some(TocHeader {
                name: "orders orders_pkey".into(),
                kind: "CONSTRAINT".into(),
                schema: "public".into(),
                owner: "root".into(),
            })
        );
        assert_eq!(
            parse_toc(b"-- Data for Name: a; b; Type: TABLE DATA; Schema: -; Owner: x\n")
                .unwrap()
                .name,
            "a; b"
        );
        assert_eq!(parse_toc(b"-- just a comment\n"), None);
    }
}
