//! PostgreSQL large objects: their part of a snapshot, and a fingerprint that proves they
//! came back.
//!
//! The data is pg_dump's own plain text for them (its `BLOBS` entries: `lo_open`, one
//! `lowrite` per 16 KiB, `lo_close`), so a restore is pg_dump's restore, and a large object
//! that did not change since last night is the same lines, which dedup. The owners, grants
//! and comments are pg_dump's `BLOB` entries in pre-data. The fingerprint (count and a
//! hash) is computed from that text while the backup streams it, recorded in the part, and
//! computed again from the restored database by `restore-test`.

use std::io::{self, Write};

use crate::error::{FormatError, Result};
use crate::postgres::load::Loader;

/// Part kind and name of a database's large objects.
pub const PART: &str = super::meta::LARGE_OBJECTS;

/// What a large-objects part records: how many there are and the fingerprint of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LargeObjects {
    /// Number of large objects.
    pub count: u64,
    /// [`Fingerprint`] of all of them, hex.
    pub fingerprint: String,
}

impl LargeObjects {
    const KEY: &'static str = "large_objects";

    /// The part meta that records it.
    pub fn to_meta(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let mut m = std::collections::BTreeMap::new();
        m.insert(Self::KEY.into(), serde_json::json!(self));
        m
    }

    /// What a large-objects part recorded (`None` for other parts).
    pub fn recorded(part: &dbvault_core::Part) -> Option<LargeObjects> {
        serde_json::from_value(part.meta.get(Self::KEY)?.clone()).ok()
    }
}

/// Count and order-independent hash of large objects: the wrapping sum, in four 64-bit
/// lanes, of BLAKE3(oid, length, BLAKE3(data)) over every object. Order-independent so the
/// database side may read them in any order.
#[derive(Default)]
pub struct Fingerprint {
    count: u64,
    sum: [u64; 4],
    current: Option<(u32, u64, blake3::Hasher)>,
}

impl Fingerprint {
    /// Starts an object.
    pub fn begin(&mut self, oid: u32) {
        self.end();
        self.current = Some((oid, 0, blake3::Hasher::new()));
    }

    /// Data of the current object.
    pub fn data(&mut self, bytes: &[u8]) {
        if let Some((_, len, h)) = self.current.as_mut() {
            *len += bytes.len() as u64;
            h.update(bytes);
        }
    }

    /// Ends the current object, if any.
    pub fn end(&mut self) {
        let Some((oid, len, h)) = self.current.take() else {
            return;
        };
        let mut outer = blake3::Hasher::new();
        outer.update(&oid.to_le_bytes());
        outer.update(&len.to_le_bytes());
        outer.update(h.finalize().as_bytes());
        let d = outer.finalize();
        for (lane, bytes) in self.sum.iter_mut().zip(d.as_bytes().chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.count += 1;
    }

    /// The result.
    pub fn finish(mut self) -> LargeObjects {
        self.end();
        let hex: String = self
            .sum
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .map(|b| format!("{b:02x}"))
            .collect();
        LargeObjects {
            count: self.count,
            fingerprint: hex,
        }
    }

    /// Feeds one line of pg_dump's text for large objects.
    pub fn line(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"SELECT pg_catalog.lo_open('") {
            let digits: Vec<u8> = rest
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            if let Some(oid) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| d.parse().ok())
            {
                self.begin(oid);
            }
        } else if let Some(rest) = line.strip_prefix(b"SELECT pg_catalog.lowrite(0, ") {
            // `'\x…'` with standard_conforming_strings on, `E'\\x…'` without.
            let hex = rest
                .strip_prefix(b"'\\x")
                .or_else(|| rest.strip_prefix(b"E'\\\\x"))
                .unwrap_or(&[]);
            let end = memchr::memchr(b'\'', hex).unwrap_or(hex.len());
            let mut buf = Vec::with_capacity(end / 2);
            for pair in hex[..end].chunks_exact(2) {
                let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                buf.push(v(pair[0]) << 4 | v(pair[1]));
            }
            self.data(&buf);
        } else if line.starts_with(b"SELECT pg_catalog.lo_close(") {
            self.end();
        }
    }
}

/// A [`Write`] that fingerprints pg_dump's large-object text as it passes.
#[derive(Default)]
pub struct TextFingerprint {
    fp: Fingerprint,
    partial: Vec<u8>,
}

impl TextFingerprint {
    /// The result (a last line without a newline counts too).
    pub fn finish(mut self) -> LargeObjects {
        let last = std::mem::take(&mut self.partial);
        self.fp.line(&last);
        self.fp.finish()
    }
}

impl Write for TextFingerprint {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.fp.line(&rest[..i]);
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                let l = std::mem::take(&mut self.partial);
                self.fp.line(&l);
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The large objects of the database `loader` is connected to, read back through
/// `lo_get` in 1 MiB pieces.
///
/// # Errors
/// The server's error (e.g. no permission to read a large object).
pub fn fingerprint_database(loader: &Loader) -> Result<LargeObjects> {
    const PIECE: i32 = 1 << 20;
    let (rt, c) = loader.parts();
    rt.block_on(async {
        let what = |e| crate::postgres::conn::pg_err("reading large objects back", e);
        let oids = c
            .query("SELECT oid FROM pg_catalog.pg_largeobject_metadata", &[])
            .await
            .map_err(what)?;
        let piece = c
            .prepare("SELECT pg_catalog.lo_get($1, $2, $3)")
            .await
            .map_err(what)?;
        let mut fp = Fingerprint::default();
        for row in oids {
            let oid: u32 = row.get(0);
            fp.begin(oid);
            let mut off: i64 = 0;
            loop {
                let r = c
                    .query_one(&piece, &[&oid, &off, &PIECE])
                    .await
                    .map_err(what)?;
                let data: Vec<u8> = r.get(0);
                fp.data(&data);
                off += data.len() as i64;
                if data.len() < PIECE as usize {
                    break;
                }
            }
        }
        Ok::<_, FormatError>(fp.finish())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "--\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\nBEGIN;\n\nSELECT pg_catalog.lo_open('16385', 131072);\nSELECT pg_catalog.lowrite(0, '\\x6869');\nSELECT pg_catalog.lowrite(0, '\\x21');\nSELECT pg_catalog.lo_close(0);\n\nSELECT pg_catalog.lo_open('16386', 131072);\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n";

    fn of(objects: &[(u32, &[u8])]) -> LargeObjects {
        let mut fp = Fingerprint::default();
        for (oid, data) in objects {
            fp.begin(*oid);
            fp.data(data);
        }
        fp.finish()
    }

    #[test]
    fn text_and_database_sides_agree() {
        let mut t = TextFingerprint::default();
        // Written in awkward pieces: lines cut anywhere.
        for piece in TEXT.as_bytes().chunks(7) {
            t.write_all(piece).unwrap();
        }
        let from_text = t.finish();
        assert_eq!(from_text.count, 2);
        // Either order, and data in any pieces.
        assert_eq!(from_text, of(&[(16386, b""), (16385, b"hi!")]));
        assert_eq!(from_text, of(&[(16385, b"hi!"), (16386, b"")]));
        // A changed byte, a changed oid, a missing object: all differ.
        assert_ne!(from_text, of(&[(16385, b"hi?"), (16386, b"")]));
        assert_ne!(from_text, of(&[(16387, b"hi!"), (16386, b"")]));
        assert_ne!(from_text.fingerprint, of(&[(16385, b"hi!")]).fingerprint);
    }

    #[test]
    fn escape_string_syntax_is_read_too() {
        let mut fp = Fingerprint::default();
        fp.line(b"SELECT pg_catalog.lo_open('7', 131072);");
        fp.line(b"SELECT pg_catalog.lowrite(0, E'\\\\x6869');");
        fp.line(b"SELECT pg_catalog.lo_close(0);");
        assert_eq!(fp.finish(), of(&[(7, b"hi")]));
    }
}
