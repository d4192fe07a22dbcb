//! pg_dump's custom archive format (`-Fc`), read as a stream: the header, the table of
//! contents, then one block per dumped data item.
//!
//! As pg_dump writes it (`pg_backup_archiver.c` `WriteHead`/`WriteToc`, `pg_backup_custom.c`):
//! `PGDMP`, version (major, minor, revision), int size, offset size, format (1 = custom),
//! the compression (an int level before 1.15, an algorithm byte from 1.15), the creation
//! time (seven ints of a `struct tm`, local time), database name, server and pg_dump
//! versions; the TOC: a count, then per entry its dump id, whether it had a data dumper,
//! table oid, oid, tag, description, section, definition, drop statement, COPY statement,
//! schema, tablespace, table access method (1.14), relkind (1.16), owner, a "false" that
//! once meant WITH OIDS, dependency ids ended by a null string, and the data offset.
//! An int is a sign byte and `int size` little-endian bytes; a string is an int length (-1:
//! null) and its bytes. Each data block is a type byte (1 data, 3 large objects), the dump
//! id, and chunks (an int length, the bytes) ended by a zero length; a large-object block
//! holds, per object, its oid and its chunks, and ends with oid 0.

use std::io::Read;

use crate::error::{FormatError, Result};

/// Oldest archive version read (PostgreSQL 11's pg_dump writes 1.13, 9.0 wrote 1.12).
pub const MIN_VERSION: (u8, u8) = (1, 12);
/// Newest archive version read (PostgreSQL 17 and 18 write 1.16).
pub const MAX_VERSION: (u8, u8) = (1, 16);
/// Block type of a table's (or sequence's) data.
pub const BLK_DATA: u8 = 1;
/// Block type of the large objects.
pub const BLK_BLOBS: u8 = 3;

/// How an archive's data is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// zlib (`-Z 1..9`, the default); the level when the header says it (before 1.15).
    Gzip(Option<i32>),
    /// LZ4 frames (1.15 and later).
    Lz4,
    /// Zstandard (1.15 and later).
    Zstd,
}

/// An archive's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// (major, minor, revision).
    pub version: (u8, u8, u8),
    /// Bytes of an int's magnitude.
    pub int_size: usize,
    /// Bytes of an offset.
    pub off_size: usize,
    /// Data compression.
    pub compression: Compression,
    /// Creation time as pg_dump's local `struct tm`: year, month (1-12), day, hour, minute,
    /// second.
    pub created: (i64, i64, i64, i64, i64, i64),
    /// Database name.
    pub dbname: String,
    /// Server version.
    pub server_version: String,
    /// pg_dump version.
    pub dump_version: String,
}

/// One TOC entry (the fields a backup and restore need).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TocEntry {
    /// Dump id (what a data block names).
    pub dump_id: i64,
    /// It has data (a block, unless the data was excluded).
    pub had_dumper: bool,
    /// Name, e.g. the table's.
    pub tag: String,
    /// Kind, e.g. `TABLE DATA`, `BLOBS`.
    pub desc: String,
    /// Section: 1 none, 2 pre-data, 3 data, 4 post-data.
    pub section: i64,
    /// `COPY … FROM stdin;` (table data dumped as COPY).
    pub copy_stmt: String,
    /// Schema.
    pub namespace: String,
    /// Owner.
    pub owner: String,
    /// Data offset flag: 1 not set (written to a pipe), 2 set, 3 no data.
    pub offset_flag: u8,
}

/// Reads the archive's primitives from a stream, keeping what it read.
pub struct ArchiveReader<R: Read> {
    r: R,
    /// Everything read so far, while `keep` (the header and TOC, stored as they were).
    pub kept: Vec<u8>,
    keep: bool,
    int_size: usize,
    off_size: usize,
    /// Bytes read.
    pub pos: u64,
    /// The header and TOC, once read (for the caller to store).
    pub kept_head: Vec<u8>,
}

/// The error for a stream that ends early.
pub fn truncated(what: &str) -> FormatError {
    FormatError::Invalid(format!(
        "the pg_dump custom-format archive is truncated ({what}): was pg_dump stopped?"
    ))
}

impl<R: Read> ArchiveReader<R> {
    /// A reader keeping what it reads (until [`ArchiveReader::stop_keeping`]).
    pub fn new(r: R) -> Self {
        ArchiveReader {
            r,
            kept: Vec::new(),
            keep: true,
            int_size: 4,
            off_size: 8,
            pos: 0,
            kept_head: Vec::new(),
        }
    }

    /// Stops keeping what is read.
    pub fn stop_keeping(&mut self) {
        self.keep = false;
    }

    /// Keeps what is read from now on (in `kept`).
    pub fn start_keeping(&mut self) {
        self.keep = true;
    }

    /// The stream read from.
    pub fn inner(&mut self) -> &mut R {
        &mut self.r
    }

    /// Fills `buf`; `what` names the place for a truncation error.
    ///
    /// # Errors
    /// A truncated stream or a read error.
    pub fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => return Err(truncated(what)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FormatError::io("reading the archive", e)),
            }
        }
        if self.keep {
            self.kept.extend_from_slice(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads what is there, up to `buf`'s length (0 at the end of the stream).
    ///
    /// # Errors
    /// A read error.
    pub fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.r.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    if self.keep {
                        self.kept.extend_from_slice(&buf[..n]);
                    }
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next byte, or `None` at the end of the stream.
    ///
    /// # Errors
    /// A read error.
    pub fn byte_or_end(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FormatError::io("reading the archive", e)),
            }
        }
        if self.keep {
            self.kept.push(b[0]);
        }
        self.pos += 1;
        Ok(Some(b[0]))
    }

    /// One byte.
    ///
    /// # Errors
    /// As [`ArchiveReader::exact`].
    pub fn byte(&mut self, what: &str) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    /// An int: a sign byte, then `int size` little-endian bytes.
    ///
    /// # Errors
    /// As [`ArchiveReader::exact`]; an int too wide for 64 bits.
    pub fn int(&mut self, what: &str) -> Result<i64> {
        let mut buf = vec![0u8; self.int_size + 1];
        self.exact(&mut buf, what)?;
        let mut v: i64 = 0;
        for (i, b) in buf[1..].iter().enumerate() {
            if i >= 8 {
                if *b != 0 {
                    return Err(bad(what, "an int wider than 64 bits"));
                }
                continue;
            }
            v |= i64::from(*b) << (8 * i);
        }
        Ok(if buf[0] != 0 { -v } else { v })
    }

    /// A string; `None` for a null one.
    ///
    /// # Errors
    /// As [`ArchiveReader::int`]; a length over 1 GiB.
    pub fn string(&mut self, what: &str) -> Result<Option<String>> {
        let len = self.int(what)?;
        if len < 0 {
            return Ok(None);
        }
        if len > 1 << 30 {
            return Err(bad(what, "a string longer than 1 GiB"));
        }
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf, what)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn text(&mut self, what: &str) -> Result<String> {
        Ok(self.string(what)?.unwrap_or_default())
    }

    /// The header.
    ///
    /// # Errors
    /// Not an archive, a version or format this reader does not take, truncation.
    pub fn header(&mut self) -> Result<Header> {
        let mut magic = [0u8; 5];
        self.exact(&mut magic, "in the header")?;
        if &magic != b"PGDMP" {
            return Err(FormatError::Invalid(
                "not a pg_dump custom-format archive (no PGDMP header)".into(),
            ));
        }
        let version = (
            self.byte("in the header")?,
            self.byte("in the header")?,
            self.byte("in the header")?,
        );
        let (v, lo, hi) = ((version.0, version.1), MIN_VERSION, MAX_VERSION);
        if v < lo || v > hi {
            return Err(FormatError::Invalid(format!(
                "pg_dump archive version {}.{}.{} is not supported (dbvault reads {}.{} to {}.{}: PostgreSQL 9.0 to 18)",
                version.0, version.1, version.2, lo.0, lo.1, hi.0, hi.1
            )));
        }
        self.int_size = usize::from(self.byte("in the header")?);
        self.off_size = usize::from(self.byte("in the header")?);
        if !(1..=16).contains(&self.int_size) || !(1..=16).contains(&self.off_size) {
            return Err(bad("the header", "an impossible int or offset size"));
        }
        let format = self.byte("in the header")?;
        if format != 1 {
            return Err(FormatError::Invalid(format!(
                "pg_dump archive format {format} is not the custom format (1); a directory or tar archive must be streamed as one file made with --format=custom"
            )));
        }
        let compression = if v >= (1, 15) {
            match self.byte("in the header")? {
                0 => Compression::None,
                1 => Compression::Gzip(None),
                2 => Compression::Lz4,
                3 => Compression::Zstd,
                n => return Err(bad("the header", &format!("unknown compression {n}"))),
            }
        } else {
            match self.int("in the header")? {
                0 => Compression::None,
                l @ (-1 | 1..=9) => Compression::Gzip(Some(l as i32)),
                n => return Err(bad("the header", &format!("compression level {n}"))),
            }
        };
        let mut tm = [0i64; 7];
        for t in &mut tm {
            *t = self.int("in the header")?;
        }
        let created = (tm[5] + 1900, tm[4] + 1, tm[3], tm[2], tm[1], tm[0]);
        let dbname = self.text("in the header")?;
        let server_version = self.text("in the header")?;
        let dump_version = self.text("in the header")?;
        Ok(Header {
            version,
            int_size: self.int_size,
            off_size: self.off_size,
            compression,
            created,
            dbname,
            server_version,
            dump_version,
        })
    }

    /// The table of contents.
    ///
    /// # Errors
    /// A malformed or truncated TOC.
    pub fn toc(&mut self, h: &Header) -> Result<Vec<TocEntry>> {
        let w = "in the table of contents";
        let count = self.int(w)?;
        if !(0..=100_000_000).contains(&count) {
            return Err(bad("the table of contents", "an impossible entry count"));
        }
        let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let dump_id = self.int(w)?;
            if dump_id <= 0 {
                return Err(bad("the table of contents", "an entry id out of range"));
            }
            let had_dumper = self.int(w)? != 0;
            let _tableoid = self.string(w)?;
            let _oid = self.string(w)?;
            let tag = self.text(w)?;
            let desc = self.text(w)?;
            let section = self.int(w)?;
            let _defn = self.string(w)?;
            let _drop = self.string(w)?;
            let copy_stmt = self.text(w)?;
            let namespace = self.text(w)?;
            let _tablespace = self.string(w)?;
            if h.version >= (1, 14, 0) {
                let _tableam = self.string(w)?;
            }
            if h.version >= (1, 16, 0) {
                let _relkind = self.int(w)?;
            }
            let owner = self.text(w)?;
            let _with_oids = self.string(w)?;
            while self.string(w)?.is_some() {}
            let offset_flag = self.byte(w)?;
            let mut off = vec![0u8; self.off_size];
            self.exact(&mut off, w)?;
            out.push(TocEntry {
                dump_id,
                had_dumper,
                tag,
                desc,
                section,
                copy_stmt,
                namespace,
                owner,
                offset_flag,
            });
        }
        Ok(out)
    }
}

fn bad(what: &str, detail: &str) -> FormatError {
    FormatError::Invalid(format!(
        "the pg_dump archive is damaged in {what}: {detail}"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes archive primitives, as pg_dump does (int size 4, offset size 8).
    #[derive(Default)]
    pub(crate) struct W(pub Vec<u8>);

    impl W {
        pub(crate) fn int(&mut self, v: i64) -> &mut Self {
            self.0.push(u8::from(v < 0));
            self.0
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
            self
        }
        pub(crate) fn s(&mut self, v: Option<&str>) -> &mut Self {
            match v {
                None => self.int(-1),
                Some(t) => {
                    self.int(t.len() as i64);
                    self.0.extend_from_slice(t.as_bytes());
                    self
                }
            }
        }
        pub(crate) fn header(&mut self, minor: u8, compression: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b"PGDMP");
            self.0.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
            self.0.extend_from_slice(compression);
            for v in [20, 53, 7, 24, 10, 122, 0] {
                self.int(v);
            }
            self.s(Some("shop")).s(Some("17.2")).s(Some("17.2"))
        }
        pub(crate) fn entry(&mut self, minor: u8, id: i64, desc: &str, tag: &str) -> &mut Self {
            self.int(id).int(i64::from(desc == "TABLE DATA"));
            self.s(Some("0")).s(Some("0")).s(Some(tag)).s(Some(desc));
            self.int(if desc == "TABLE DATA" { 3 } else { 2 });
            self.s(Some("")).s(None);
            self.s(Some(if desc == "TABLE DATA" {
                "COPY public.t (a) FROM stdin;\n"
            } else {
                ""
            }));
            self.s(Some("public")).s(None);
            if minor >= 14 {
                self.s(Some("heap"));
            }
            if minor >= 16 {
                self.int(i64::from(b'r'));
            }
            self.s(Some("me")).s(Some("false")).s(Some("7")).s(None);
            self.0.push(if desc == "TABLE DATA" { 1 } else { 3 });
            self.0.extend_from_slice(&[0; 8]);
            self
        }
    }

    fn parse(bytes: &[u8]) -> Result<(Header, Vec<TocEntry>)> {
        let mut r = ArchiveReader::new(bytes);
        let h = r.header()?;
        let toc = r.toc(&h)?;
        Ok((h, toc))
    }

    #[test]
    fn headers_and_tocs_of_every_version_parse() {
        for (minor, comp, want) in [
            (14u8, vec![1, 1, 0, 0, 0], Compression::Gzip(Some(-1))),
            (14, vec![0, 0, 0, 0, 0], Compression::None),
            (12, vec![0, 9, 0, 0, 0], Compression::Gzip(Some(9))),
            (15, vec![2], Compression::Lz4),
            (15, vec![3], Compression::Zstd),
            (16, vec![1], Compression::Gzip(None)),
            (16, vec![0], Compression::None),
        ] {
            let mut w = W::default();
            w.header(minor, &comp).int(2);
            w.entry(minor, 1, "TABLE", "t")
                .entry(minor, 2, "TABLE DATA", "t");
            let (h, toc) = parse(&w.0).unwrap_or_else(|e| panic!("1.{minor}: {e}"));
            assert_eq!(h.compression, want, "1.{minor}");
            assert_eq!(h.created, (2022, 11, 24, 7, 53, 20));
            assert_eq!(h.dbname, "shop");
            assert_eq!(toc.len(), 2);
            assert_eq!(toc[1].desc, "TABLE DATA");
            assert_eq!(toc[1].copy_stmt, "COPY public.t (a) FROM stdin;\n");
            assert!(toc[1].had_dumper);
            assert_eq!(toc[1].owner, "me");
        }
    }

    #[test]
    fn other_versions_and_formats_are_refused_clearly() {
        let mut w = W::default();
        w.header(17, &[1]).int(0);
        let e = parse(&w.0).expect_err("1.17").to_string();
        assert!(e.contains("version 1.17.0 is not supported"), "{e}");
        let mut w = W::default();
        w.header(11, &[0, 0, 0, 0, 0]).int(0);
        assert!(parse(&w.0).is_err());
        let mut w = W::default();
        w.header(16, &[1]);
        w.0[10] = 3; // tar
        assert!(parse(&w.0)
            .expect_err("tar")
            .to_string()
            .contains("not the custom format"));
        let mut w = W::default();
        w.header(16, &[9]).int(0);
        assert!(parse(&w.0)
            .expect_err("comp")
            .to_string()
            .contains("unknown compression 9"));
    }

    #[test]
    fn a_cut_anywhere_in_the_header_or_toc_is_truncation() {
        let mut w = W::default();
        w.header(14, &[1, 1, 0, 0, 0])
            .int(1)
            .entry(14, 1, "TABLE DATA", "t");
        for cut in [3, 12, 40, w.0.len() - 20, w.0.len() - 1] {
            let e = parse(&w.0[..cut]).expect_err("cut").to_string();
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        parse(&w.0).expect("whole");
    }
}
