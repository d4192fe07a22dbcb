//! `restore --to -` of a snapshot made from a custom-format archive: the archive itself,
//! rebuilt from the stored header and TOC, each data block from its table's rows (or from
//! its stored bytes), and checked against the BLAKE3 recorded at backup.

use std::io::Write;

use dbvault_core::{Repository, Snapshot};

use super::backup::ZLIB_CHUNK;
use super::rows::{RowSink, RowsTap};
use super::{toc_part, ArchivePart, Rebuild};
use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::read::write_part;

/// Writes what it is given to `out`, hashing and counting it.
struct Out<'a> {
    out: &'a mut (dyn Write + Send),
    hasher: blake3::Hasher,
    n: u64,
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write_all(buf)?;
        self.hasher.update(buf);
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// An archive int: a sign byte and `size` little-endian bytes.
fn int(v: i64, size: usize) -> Vec<u8> {
    let mut b = vec![u8::from(v < 0)];
    let m = v.unsigned_abs();
    b.extend((0..size).map(|i| if i < 8 { (m >> (8 * i)) as u8 } else { 0 }));
    b
}

/// Cuts what it is given into chunks of pg_dump's zlib buffer size.
struct Chunker<'o, 'a> {
    out: &'o mut Out<'a>,
    buf: Vec<u8>,
    int_size: usize,
    err: Option<std::io::Error>,
}

impl Chunker<'_, '_> {
    fn emit(&mut self, data: &[u8]) {
        if self.err.is_none() {
            let r = self
                .out
                .write_all(&int(data.len() as i64, self.int_size))
                .and_then(|()| self.out.write_all(data));
            if let Err(e) = r {
                self.err = Some(e);
            }
        }
    }
}

impl Write for Chunker<'_, '_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= ZLIB_CHUNK {
            let rest = self.buf.split_off(ZLIB_CHUNK);
            let full = std::mem::replace(&mut self.buf, rest);
            self.emit(&full);
        }
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(data.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows into a zlib stream.
struct ZlibRows<'c, 'o, 'a>(
    flate2::write::ZlibEncoder<&'c mut Chunker<'o, 'a>>,
    Option<std::io::Error>,
);

impl RowSink for ZlibRows<'_, '_, '_> {
    fn rows(&mut self, bytes: &[u8]) {
        if self.1.is_none() {
            if let Err(e) = self.0.write_all(bytes) {
                self.1 = Some(e);
            }
        }
    }
}

/// Each row as a chunk of its own, then the end of the COPY data as one.
struct LineRows<'c, 'o, 'a>(&'c mut Chunker<'o, 'a>, Option<Vec<u8>>);

impl RowSink for LineRows<'_, '_, '_> {
    fn rows(&mut self, bytes: &[u8]) {
        match &mut self.1 {
            Some(tail) => tail.extend_from_slice(bytes),
            None if bytes == b"\\.\n" => self.1 = Some(bytes.to_vec()),
            None => self.0.emit(bytes),
        }
    }
}

/// A table part's bytes, as a writer feeding a rows tap.
struct TapWriter<S: RowSink>(RowsTap<S>);

impl<S: RowSink> Write for TapWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn io(e: std::io::Error) -> FormatError {
    FormatError::Core(dbvault_core::Error::Output(e))
}

/// Writes the archive `snap` was made from to `out`.
///
/// # Errors
/// [`FormatError::Invalid`] when the snapshot was not made from an archive, or the rebuilt
/// archive differs from the one backed up; damage and storage errors; write errors.
pub fn write_archive(
    repo: &Repository,
    snap: &Snapshot,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
) -> Result<()> {
    let toc = toc_part(snap).ok_or_else(|| {
        FormatError::Invalid("this snapshot was not made from a custom-format archive".into())
    })?;
    let meta = ArchivePart::of(toc)?;
    let part = |name: &str| {
        snap.part(name).ok_or_else(|| {
            FormatError::Invalid(format!(
                "the snapshot lacks part {name:?} that the archive is rebuilt from"
            ))
        })
    };
    let mut o = Out {
        out,
        hasher: blake3::Hasher::new(),
        n: 0,
    };
    write_part(repo, toc, &mut o, notify)?;
    for b in &meta.blocks {
        o.write_all(&[b.kind]).map_err(io)?;
        o.write_all(&int(b.id, meta.int_size)).map_err(io)?;
        match &b.rebuild {
            Rebuild::Stored { part: p } => write_part(repo, part(p)?, &mut o, notify)?,
            Rebuild::Zlib { level, part: p } => {
                let mut ch = Chunker {
                    out: &mut o,
                    buf: Vec::new(),
                    int_size: meta.int_size,
                    err: None,
                };
                let lvl = flate2::Compression::new(if *level < 0 { 6 } else { *level as u32 });
                {
                    let sink = ZlibRows(flate2::write::ZlibEncoder::new(&mut ch, lvl), None);
                    let mut w = TapWriter(RowsTap::new(sink));
                    write_part(repo, part(p)?, &mut w, notify)?;
                    let TapWriter(tap) = w;
                    let ZlibRows(enc, err) = tap.into_sink();
                    if let Some(e) = err {
                        return Err(io(e));
                    }
                    enc.finish().map_err(io)?;
                }
                let last = std::mem::take(&mut ch.buf);
                if !last.is_empty() {
                    ch.emit(&last);
                }
                if let Some(e) = ch.err.take() {
                    return Err(io(e));
                }
                o.write_all(&int(0, meta.int_size)).map_err(io)?;
            }
            Rebuild::Lines { part: p } => {
                let mut ch = Chunker {
                    out: &mut o,
                    buf: Vec::new(),
                    int_size: meta.int_size,
                    err: None,
                };
                {
                    let mut w = TapWriter(RowsTap::new(LineRows(&mut ch, None)));
                    write_part(repo, part(p)?, &mut w, notify)?;
                    let TapWriter(tap) = w;
                    let LineRows(ch, tail) = tap.into_sink();
                    if let Some(t) = tail {
                        ch.emit(&t);
                    }
                }
                if let Some(e) = ch.err.take() {
                    return Err(io(e));
                }
                o.write_all(&int(0, meta.int_size)).map_err(io)?;
            }
        }
    }
    if let Some(t) = &meta.trailer {
        write_part(repo, part(t)?, &mut o, notify)?;
    }
    o.flush().map_err(io)?;
    if o.n != meta.size || o.hasher.finalize().to_hex().as_str() != meta.blake3 {
        return Err(FormatError::Invalid(format!(
            "the rebuilt archive differs from the one backed up ({} bytes, {} recorded): restore --plain gives the SQL script",
            o.n, meta.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_are_written_as_pg_dump_writes_them() {
        assert_eq!(int(0, 4), vec![0, 0, 0, 0, 0]);
        assert_eq!(int(4096, 4), vec![0, 0, 16, 0, 0]);
        assert_eq!(int(-1, 4), vec![1, 1, 0, 0, 0]);
    }
}
