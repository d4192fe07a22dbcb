//! gzip files: the member's header and trailer kept as bytes, the deflate stream between
//! them analysed by preflate into the dump plus corrections, chunk by chunk, each chunk
//! recreated and compared while it is analysed (preflate's own verification).
//!
//! The record (the part's bytes) is a sequence of `u32 plain length, u32 corrections
//! length, corrections`, little-endian: one per chunk, fed back in the same cuts.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Write};
use std::path::Path;

use preflate_rs::{ExitCode, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

use super::{hash_file, stored, Analysis, Compression, Recipe};
use crate::error::{FormatError, Result};

/// Compressed bytes handed to preflate at a time.
const CHUNK: usize = 1 << 20;
/// The first chunk of the second try: preflate's estimate of the compressor's parameters
/// from a larger sample (the dump it decodes to is held in memory once).
const FIRST_RETRY: usize = 8 << 20;
/// preflate counts positions in 32 bits: a larger dump is stored as it came.
const PLAIN_LIMIT: u64 = 1536 << 20;

/// Analyses the gzip file at `path`. preflate estimates the compressor's parameters from
/// the first chunk; when a later chunk then fails to predict, a second try starts with a
/// larger first chunk (more memory, once) before the original is stored.
pub(super) fn analyse(path: &Path) -> Result<Analysis> {
    let why = match analyse_with(path, CHUNK)? {
        Ok(a) => return Ok(a),
        Err(why) => why,
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > CHUNK as u64 {
        if let Ok(a) = analyse_with(path, FIRST_RETRY)? {
            return Ok(a);
        }
    }
    stored(Compression::Gzip, path, why)
}

/// The analysis with a first chunk of `first` compressed bytes; `Err(why)` when preflate
/// cannot recreate the stream.
fn analyse_with(path: &Path, first: usize) -> Result<std::result::Result<Analysis, String>> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| FormatError::io(&name, e))?;
    let mut r = BufReader::with_capacity(CHUNK, file);
    let header = read_header(&mut r).map_err(|e| FormatError::io(&name, e))?;
    let Some(header) = header else {
        return Ok(Err("its gzip header is not one dbvault reads".into()));
    };
    let mut p = PreflateStreamProcessor::new(&PreflateConfig {
        max_chain_length: 4096,
        plain_text_limit: 256 << 20,
        verify_compression: true,
    });
    let mut pending: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut record = Vec::new();
    let mut plain = 0u64;
    let mut want = first;
    while !p.is_done() {
        if pending.len() < want && !eof {
            eof = fill(&mut r, &mut pending, want).map_err(|e| FormatError::io(&name, e))?;
        }
        match p.decompress(&pending) {
            Ok(c) if c.compressed_size > 0 || p.is_done() => {
                let n = p.plain_text().len();
                plain += n as u64;
                if plain > PLAIN_LIMIT {
                    return Ok(Err(
                        "the dump is over 1.5 GiB, more than preflate recreates".into(),
                    ));
                }
                record.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
                record.extend_from_slice(
                    &u32::try_from(c.corrections.len())
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                record.extend_from_slice(&c.corrections);
                pending.drain(..c.compressed_size);
                p.shrink_to_dictionary();
                want = CHUNK;
            }
            Ok(_) => {}
            Err(e) if e.exit_code() == ExitCode::ShortRead => {
                if eof {
                    return Err(FormatError::Invalid(format!(
                        "{name}: the gzip stream ends before its last block: is the file complete?"
                    )));
                }
                want = pending.len() + CHUNK;
                eof = fill(&mut r, &mut pending, want).map_err(|e| FormatError::io(&name, e))?;
            }
            Err(e) => {
                let first_line = e.message().lines().next().unwrap_or("").to_string();
                return Ok(Err(format!(
                    "preflate cannot recreate its deflate stream ({first_line})"
                )));
            }
        }
    }
    // What is left is the trailer, and anything after it (another member).
    r.read_to_end(&mut pending)
        .map_err(|e| FormatError::io(&name, e))?;
    if pending.len() != 8 {
        return Ok(Err("it has more than one gzip member".into()));
    }
    let (size, blake3) = hash_file(path)?;
    Ok(Ok(Analysis {
        recipe: Recipe {
            compression: Compression::Gzip,
            method: "preflate".into(),
            size,
            blake3,
            plain_size: plain,
            header: hex::encode(&header),
            trailer: hex::encode(&pending),
            level: None,
            checksum: false,
            content_size: false,
        },
        record: Some(record),
        why_stored: None,
    }))
}

/// Reads until `buf` holds `want` bytes or the input ends; true at the end.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let need = want.saturating_sub(buf.len()) as u64;
    let got = r.take(need).read_to_end(buf)?;
    Ok((got as u64) < need)
}

/// The member header's bytes (RFC 1952 2.3), or `None` for one this module does not read.
fn read_header(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut h = vec![0u8; 10];
    r.read_exact(&mut h)?;
    if h[..3] != [0x1f, 0x8b, 8] || h[3] & 0xe0 != 0 {
        return Ok(None);
    }
    let flags = h[3];
    if flags & 4 != 0 {
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        h.extend_from_slice(&len);
        let n = u16::from_le_bytes(len) as usize;
        let at = h.len();
        h.resize(at + n, 0);
        r.read_exact(&mut h[at..])?;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            loop {
                let mut b = [0u8; 1];
                r.read_exact(&mut b)?;
                h.push(b[0]);
                if b[0] == 0 {
                    break;
                }
            }
        }
    }
    if flags & 2 != 0 {
        let mut crc = [0u8; 2];
        r.read_exact(&mut crc)?;
        h.extend_from_slice(&crc);
    }
    Ok(Some(h))
}

/// The record's chunks: plain length and corrections.
pub(super) fn chunks(record: &[u8]) -> Result<Vec<(usize, &[u8])>> {
    let short = || FormatError::Invalid("the gzip record is cut short".into());
    let mut v = Vec::new();
    let mut at = 0;
    while at < record.len() {
        let word = |i: usize| -> Result<usize> {
            let b = record.get(i..i + 4).ok_or_else(short)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (plain, n) = (word(at)?, word(at + 4)?);
        v.push((plain, record.get(at + 8..at + 8 + n).ok_or_else(short)?));
        at += 8 + n;
    }
    Ok(v)
}

/// Writes the gzip file: header, each chunk recreated from the plain bytes `plain` hands
/// over (cut as recorded, by [`Feed`]), trailer. Runs on its own thread: preflate's
/// recreator is not `Send`, and the dump's reading goes on beside it.
pub(super) fn recreate(
    recipe: &Recipe,
    chunks: &[(usize, &[u8])],
    plain: &std::sync::mpsc::Receiver<Vec<u8>>,
    out: &mut dyn Write,
) -> Result<()> {
    let bad = |what: &str| FormatError::Invalid(format!("the gzip record's {what} does not read"));
    out.write_all(&hex::decode(&recipe.header).map_err(|_| bad("header"))?)?;
    let mut r = RecreateStreamProcessor::new();
    for (_, corrections) in chunks {
        let Ok(piece) = plain.recv() else {
            return Err(FormatError::Invalid(
                "the dump ended before the gzip stream was recreated".into(),
            ));
        };
        let (bytes, _) = r
            .recompress(&mut Cursor::new(&piece[..]), corrections)
            .map_err(|e| {
                FormatError::Invalid(format!("recreating the gzip stream: {}", e.message()))
            })?;
        out.write_all(&bytes)?;
    }
    out.write_all(&hex::decode(&recipe.trailer).map_err(|_| bad("trailer"))?)?;
    Ok(out.flush()?)
}

/// Cuts the dump written into it into the recorded chunks and sends them to [`recreate`].
pub(super) struct Feed {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    lens: Vec<usize>,
    next: usize,
    pending: Vec<u8>,
}

impl Feed {
    pub(super) fn new(tx: std::sync::mpsc::SyncSender<Vec<u8>>, lens: Vec<usize>) -> Self {
        Feed {
            tx,
            lens,
            next: 0,
            pending: Vec::new(),
        }
    }

    fn send_ready(&mut self) -> std::io::Result<()> {
        while let Some(&len) = self.lens.get(self.next) {
            if self.pending.len() < len {
                break;
            }
            let rest = self.pending.split_off(len);
            let piece = std::mem::replace(&mut self.pending, rest);
            self.tx
                .send(piece)
                .map_err(|_| std::io::Error::other("recreating the gzip stream stopped"))?;
            self.next += 1;
        }
        if self.next == self.lens.len() && !self.pending.is_empty() {
            return Err(std::io::Error::other(
                "the dump is longer than the gzip record: restore --plain gives the dump",
            ));
        }
        Ok(())
    }

    /// Sends the last chunks; the dump must have been exactly as long as recorded.
    pub(super) fn finish(mut self) -> Result<()> {
        self.send_ready()?;
        if self.next < self.lens.len() {
            return Err(FormatError::Invalid(
                "the dump is shorter than the gzip record: restore --plain gives the dump".into(),
            ));
        }
        Ok(())
    }
}

impl Write for Feed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.send_ready()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
