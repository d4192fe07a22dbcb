//! Cutting pg_basebackup's tar stream into chunks that change only where the cluster did:
//!
//! - each 512-byte header is two chunks: its first 100 bytes (the member's name, the same
//!   in every base backup, so the next backup finds its place in the previous one file by
//!   file, whatever was added or removed before it) and the rest (size, mtime, checksum);
//! - a member's data is cut every [`SPAN`] bytes from its start (a whole number of
//!   PostgreSQL's 8 KiB pages): an unchanged span is the same chunk in every base backup,
//!   and a changed one is stored as a delta against the same span of the previous backup,
//!   costing about the changed pages' bytes;
//! - the last piece carries the member's padding, and what follows the end marker is the
//!   last chunk. The chunks concatenated are the stream, byte for byte.
//! Small members the backup needs to describe itself (`backup_label`, `backup_manifest`,
//! `global/pg_control`, `PG_VERSION`) are kept as they pass.

use std::collections::BTreeMap;
use std::io::{self, Read};

/// PostgreSQL's block size: the unit of change of relation files.
pub const PAGE: usize = 8192;
/// Data is cut in spans of this many bytes (8 pages: each compressed with its neighbours,
/// which compresses pages of one table about twice as well as page by page).
pub const SPAN: usize = 8 * PAGE;
/// The name field of a tar header.
const NAME: usize = 100;
const BLOCK: usize = 512;
/// Members kept whole when they pass (none is larger than this).
const KEPT: [&str; 4] = [
    "backup_label",
    "backup_manifest",
    "global/pg_control",
    "PG_VERSION",
];
const KEPT_MAX: u64 = 64 << 20;

/// Reads a tar stream as chunks; see the module docs.
pub struct TarChunks<R> {
    r: R,
    /// Data bytes (with padding) of the current member still to hand out.
    left: u64,
    /// The rest of the current header, handed out after its name.
    header_rest: Option<Vec<u8>>,
    /// Member being kept, and its data so far.
    keeping: Option<(String, u64, Vec<u8>)>,
    /// Kept members, by name.
    pub kept: BTreeMap<String, Vec<u8>>,
    /// The end marker went by.
    pub ended: bool,
    /// Members seen.
    pub members: u64,
    done: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256 (GNU) for sizes over 8 GiB.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)? + u64::from(*b);
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarChunks<R> {
    /// Reads `r`.
    pub fn new(r: R) -> Self {
        TarChunks {
            r,
            left: 0,
            header_rest: None,
            keeping: None,
            kept: BTreeMap::new(),
            ended: false,
            members: 0,
            done: false,
        }
    }

    fn fill(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// The next chunk, or `None` at the end of the stream.
    ///
    /// # Errors
    /// Reading fails, or the stream is not a whole tar archive (a bad header checksum, a
    /// stream that stops inside a member or before the end marker).
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if let Some(rest) = self.header_rest.take() {
            return Ok(Some(rest));
        }
        if self.left > 0 {
            let n = self.left.min(SPAN as u64) as usize;
            // The piece that ends the data takes the padding along.
            let n = if self.left - (n as u64) < BLOCK as u64 {
                self.left as usize
            } else {
                n
            };
            let c = self.fill(n)?;
            if c.len() < n {
                return Err(bad("the tar stream stops inside a member (truncated)"));
            }
            self.left -= n as u64;
            if let Some((_, size, data)) = &mut self.keeping {
                let room = (*size as usize).saturating_sub(data.len());
                data.extend_from_slice(&c[..room.min(c.len())]);
            }
            if self.left == 0 {
                if let Some((name, _, data)) = self.keeping.take() {
                    self.kept.insert(name, data);
                }
            }
            return Ok(Some(c));
        }
        if self.ended {
            // Whatever follows the end marker (blocking padding): one chunk.
            let mut rest = Vec::new();
            self.r.read_to_end(&mut rest)?;
            self.done = true;
            return Ok((!rest.is_empty()).then_some(rest));
        }
        let h = self.fill(BLOCK)?;
        if h.is_empty() {
            return Err(bad(
                "the tar stream ends without its end marker (truncated)",
            ));
        }
        if h.len() < BLOCK {
            return Err(bad("the tar stream stops inside a header (truncated)"));
        }
        if h.iter().all(|b| *b == 0) {
            self.ended = true;
            return Ok(Some(h));
        }
        let want =
            octal(&h[148..156]).ok_or_else(|| bad("not a tar stream (bad checksum field)"))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if sum != want {
            return Err(bad("not a tar stream (a header's checksum does not match)"));
        }
        let size = octal(&h[124..136]).ok_or_else(|| bad("not a tar stream (bad size field)"))?;
        let mut name = cstr(&h[..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let typeflag = h[156];
        self.members += 1;
        self.left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let regular = typeflag == b'0' || typeflag == 0;
        if regular && size <= KEPT_MAX && KEPT.contains(&name.as_str()) {
            self.keeping = Some((name.clone(), size, Vec::with_capacity(size as usize)));
            if size == 0 {
                self.kept.insert(name, Vec::new());
                self.keeping = None;
            }
        }
        let mut h = h;
        self.header_rest = Some(h.split_off(NAME));
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = header(name, data.len() as u64);
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn pages_are_chunks_and_the_stream_is_kept_byte_for_byte() {
        let rel: Vec<u8> = (0..3 * SPAN + 100).map(|i| (i % 251) as u8).collect();
        let mut tar = member("backup_label", b"START WAL LOCATION: 0/2000028\n");
        tar.extend(member("base/5/1259", &rel));
        tar.extend(vec![0u8; 1024 + 8192]);
        let mut t = TarChunks::new(&tar[..]);
        let mut chunks = Vec::new();
        while let Some(c) = t.next_chunk().expect("chunk") {
            chunks.push(c);
        }
        assert_eq!(chunks.concat(), tar);
        // header (name, rest), label data; header, three spans, the tail with its padding.
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes[..9], [100, 412, 512, 100, 412, SPAN, SPAN, SPAN, 512]);
        assert!(chunks[3].starts_with(b"base/5/1259\0"));
        assert_eq!(t.kept["backup_label"], b"START WAL LOCATION: 0/2000028\n");
        assert!(t.ended);
        // Truncated: an error, never a short archive.
        let mut t = TarChunks::new(&tar[..3000]);
        let e = loop {
            match t.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("accepted a truncated stream"),
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
