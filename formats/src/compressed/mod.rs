//! Compressed dumps (`backup_20250115_143022.sql.gz`, `shop.dump.zst`): recognised by their
//! magic bytes and stored as the dump inside (table parts, deduplication against the other
//! nights, table restores), with what it takes to give the compressed file back byte for byte.
//!
//! A compressor's output is not a function of its input alone (GNU gzip's deflate is not
//! zlib's; levels, window sizes and header fields differ), so recompressing is no proof. A
//! gzip file is analysed with preflate (`preflate-rs`): the deflate stream is decoded into
//! the dump plus a small corrections record that recreates the exact bits, proven by
//! recreating every chunk while it is analysed. A zstd file is recreated by the level that
//! reproduces it (zstd's output is a function of level, flags and pledged size), proven
//! by hashing the whole recompressed file. When neither proof holds (another compressor,
//! several gzip members, a dump over 1.5 GiB for preflate's 32-bit positions) the original
//! file is stored as well, so `restore --to -` still gives it back; the notes say which.
//!
//! The record is one part of kind [`KIND`]: its meta says how (a [`Recipe`]), its bytes
//! are the corrections (gzip), nothing (zstd), or the original file.

mod gzip;
mod zstd_file;

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use dbvault_core::{Backup, Part, PartInput, Repository, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::notice::Notify;
use crate::{StreamFormat, StreamInfo};

/// Part kind: how the snapshot's dump was compressed (see the module docs).
pub const KIND: &str = "compressed-file";

/// A compression recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (RFC 1952), as `gzip`, `pigz` or zlib's `gzopen` write it.
    Gzip,
    /// Zstandard frames, as `zstd` writes them.
    Zstd,
}

impl Compression {
    /// The compression a stream starting with `head` is in, if any.
    #[must_use]
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b, 8]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// `gzip` or `zstd`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// A reader of the decompressed bytes of `file`.
    fn decoder(self, file: File) -> Result<Box<dyn Read + Send>> {
        let r = BufReader::with_capacity(1 << 20, file);
        Ok(match self {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(r)
                    .map_err(|e| FormatError::io("zstd stream", e))?,
            ),
        })
    }
}

/// How the compressed file is given back: the meta of the [`KIND`] part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// The compression.
    pub compression: Compression,
    /// `preflate` (the part holds the corrections), `zstd-level` or `stored` (the part is
    /// the original file).
    pub method: String,
    /// The compressed file's size.
    pub size: u64,
    /// BLAKE3 of the compressed file, hex: what a rebuild is checked against.
    pub blake3: String,
    /// The decompressed dump's size.
    pub plain_size: u64,
    /// gzip: the member's header bytes, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub header: String,
    /// gzip: the trailer (CRC-32, size), hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trailer: String,
    /// zstd: the level that reproduces the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// zstd: whether frames carry a checksum.
    #[serde(default)]
    pub checksum: bool,
    /// zstd: whether the frame header records the content size.
    #[serde(default)]
    pub content_size: bool,
}

impl Recipe {
    /// The recipe a part records, if it is a [`KIND`] part.
    ///
    /// # Errors
    /// A record that does not read (a newer dbvault wrote it).
    pub fn of(part: &Part) -> Result<Option<Recipe>> {
        if part.kind != KIND {
            return Ok(None);
        }
        crate::partmeta::from_meta(part, "compression").map(Some)
    }
}

/// The snapshot's compression record, if its dump came compressed.
#[must_use]
pub fn recipe_part(snap: &Snapshot) -> Option<&Part> {
    snap.parts.iter().find(|p| p.kind == KIND)
}

/// What an analysis found: a way to recreate the file from its content, or why not.
struct Analysis {
    recipe: Recipe,
    /// The part's bytes (gzip's corrections); `None` with `method = "stored"`.
    record: Option<Vec<u8>>,
    /// Why the original is stored, when it is.
    why_stored: Option<String>,
}

/// Backs up the compressed file at `path` as the dump inside it, with its [`Recipe`].
/// Returns `None`, having stored nothing, when the content is not a pg_dump dump or
/// archive (the caller stores the file as it is).
///
/// # Errors
/// A file that does not decompress (truncated, damaged); a truncated dump inside; read
/// and storage errors.
pub fn backup_compressed_file(
    b: &Backup<'_>,
    compression: Compression,
    path: &Path,
) -> Result<Option<(StreamFormat, StreamInfo)>> {
    let open = || File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e));
    let mut head = Vec::with_capacity(100);
    compression
        .decoder(open()?)?
        .take(100)
        .read_to_end(&mut head)
        .map_err(|e| bad_stream(compression, path, e))?;
    let inner = StreamFormat::detect(&head);
    if !matches!(inner, StreamFormat::PgDump | StreamFormat::PgCustom) {
        return Ok(None);
    }
    let analysis = match compression {
        Compression::Gzip => gzip::analyse(path)?,
        Compression::Zstd => zstd_file::analyse(path)?,
    };
    let mut plain = compression.decoder(open()?)?;
    let mut info = crate::backup_stream(b, inner, &mut plain)?;
    // The decoder's own errors (a bad CRC at the end) surface through the read above; a
    // gzip file with bytes after its member is read whole by the multi-member decoder.
    let r = &analysis.recipe;
    let input = PartInput {
        name: format!("{}.{}", inner_name(inner), compression.name()),
        kind: KIND.into(),
        meta: crate::partmeta::to_meta(r),
        ..PartInput::default()
    };
    match &analysis.record {
        Some(bytes) => b.add_part(input, &bytes[..])?,
        None => b.add_part(input, std::io::BufReader::new(open()?))?,
    };
    info.notes.push(match &analysis.why_stored {
        None => format!(
            "{}-compressed ({} bytes): `restore --to -` gives the compressed file back byte for byte; `--plain` gives the dump",
            compression.name(),
            r.size
        ),
        Some(why) => format!(
            "{}-compressed ({} bytes), stored as well because {why}: `restore --to -` gives it back byte for byte; `--plain` gives the dump",
            compression.name(),
            r.size
        ),
    });
    Ok(Some((inner, info)))
}

fn inner_name(f: StreamFormat) -> &'static str {
    match f {
        StreamFormat::PgCustom => "dump",
        _ => "sql",
    }
}

fn bad_stream(c: Compression, path: &Path, e: std::io::Error) -> FormatError {
    FormatError::Invalid(format!(
        "{}: not a readable {} stream ({e}): is the file complete?",
        path.display(),
        c.name()
    ))
}

/// The analysis that stores the original: for files no proof recreates.
fn stored(compression: Compression, path: &Path, why: String) -> Result<Analysis> {
    let (size, blake3) = hash_file(path)?;
    let mut plain = compression
        .decoder(File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e))?)?;
    let plain_size = std::io::copy(&mut plain, &mut std::io::sink())
        .map_err(|e| bad_stream(compression, path, e))?;
    Ok(Analysis {
        recipe: Recipe {
            compression,
            method: "stored".into(),
            size,
            blake3,
            plain_size,
            header: String::new(),
            trailer: String::new(),
            level: None,
            checksum: false,
            content_size: false,
        },
        record: None,
        why_stored: Some(why),
    })
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)
        .map_err(|e| FormatError::io(path.display().to_string(), e))?;
    Ok((n, h.finalize().to_hex().to_string()))
}

/// Writes the compressed file back: `plain` writes the dump (the script or archive the
/// snapshot restores to), and what it writes is compressed as the recipe says; a stored
/// original is copied instead. The result is checked against the recorded size and hash.
///
/// # Errors
/// Damage and storage errors; a rebuild that differs from the file backed up (then
/// `--plain` still gives the dump).
pub fn write_compressed(
    repo: &Repository,
    part: &Part,
    out: &mut (dyn Write + Send),
    notify: Notify<'_>,
    plain: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
) -> Result<()> {
    let Some(recipe) = Recipe::of(part)? else {
        return Err(FormatError::Invalid(format!(
            "part {:?} is not a compression record",
            part.name
        )));
    };
    let mut checked = Checked::new(out);
    match recipe.method.as_str() {
        "stored" => crate::read::stream_part(repo, part, &mut checked, notify)?,
        "preflate" => {
            let record = crate::read::part_bytes(repo, part, notify)?;
            let chunks = gzip::chunks(&record)?;
            let lens = chunks.iter().map(|c| c.0).collect();
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            std::thread::scope(|s| {
                let out = &mut checked;
                let (recipe, chunks) = (&recipe, &chunks);
                let writer = s.spawn(move || gzip::recreate(recipe, chunks, &rx, out));
                // The feed (and its sender) is gone before the join, whatever happened.
                let fed = {
                    let mut feed = gzip::Feed::new(tx, lens);
                    plain(&mut feed).and_then(|()| feed.finish())
                };
                let wrote = writer.join().unwrap_or_else(|_| {
                    Err(FormatError::Invalid("recreating the gzip stream failed".into()))
                });
                // The writer's error is the cause when both failed.
                wrote.and(fed)
            })?;
        }
        "zstd-level" => {
            // A flush would end zstd's block early, and change the bytes.
            let mut w = NoFlush(zstd_file::rebuild(&recipe, &mut checked)?);
            plain(&mut w)?;
            w.0.finish().map_err(FormatError::from)?;
        }
        other => {
            return Err(FormatError::Invalid(format!(
                "compression method {other:?} is not one this dbvault knows (written by a newer version?): restore --plain gives the dump"
            )))
        }
    }
    let (n, hash) = checked.done();
    if n != recipe.size || hash != recipe.blake3 {
        return Err(FormatError::Invalid(format!(
            "the rebuilt {} file differs from the one backed up ({n} bytes, {} recorded): restore --plain gives the dump",
            recipe.compression.name(),
            recipe.size
        )));
    }
    Ok(())
}

/// A writer whose `flush` does nothing: for an encoder where a flush changes the output.
struct NoFlush<W>(W);

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that counts and hashes what passes.
struct Checked<'a> {
    out: &'a mut (dyn Write + Send),
    hasher: blake3::Hasher,
    n: u64,
}

impl<'a> Checked<'a> {
    fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Checked {
            out,
            hasher: blake3::Hasher::new(),
            n: 0,
        }
    }

    fn done(self) -> (u64, String) {
        (self.n, self.hasher.finalize().to_hex().to_string())
    }
}

impl Write for Checked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Backs up a stream whose first bytes are `head` (`reader` yields the whole stream):
/// in `forced` format, or as detected: a compressed dump as the dump inside (spooled to a
/// temporary file in `tmp`, compressed, so it can be analysed and read twice), anything
/// else by [`crate::backup_stream`]. Returns the format stored.
///
/// # Errors
/// As [`crate::backup_stream`] and [`backup_compressed_file`]; the spool's I/O errors.
pub fn backup_detected(
    b: &Backup<'_>,
    forced: Option<StreamFormat>,
    head: &[u8],
    mut reader: impl Read,
    tmp: &Path,
) -> Result<(StreamFormat, StreamInfo)> {
    if let (None, Some(c)) = (forced, Compression::detect(head)) {
        let mut spool = tempfile::Builder::new()
            .prefix(".dbvault-compressed-")
            .tempfile_in(tmp)
            .map_err(|e| FormatError::io(tmp.display().to_string(), e))?;
        std::io::copy(&mut reader, spool.as_file_mut())
            .map_err(|e| FormatError::Core(dbvault_core::Error::Source(e)))?;
        return backup_file_as_detected(b, c, spool.path());
    }
    let fmt = forced.unwrap_or_else(|| StreamFormat::detect(head));
    Ok((fmt, crate::backup_stream(b, fmt, reader)?))
}

/// Backs up the compressed file at `path`: as the dump inside, or as it is when it holds
/// no dump.
///
/// # Errors
/// As [`backup_compressed_file`].
pub fn backup_file_as_detected(
    b: &Backup<'_>,
    compression: Compression,
    path: &Path,
) -> Result<(StreamFormat, StreamInfo)> {
    if let Some(v) = backup_compressed_file(b, compression, path)? {
        return Ok(v);
    }
    let f = File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e))?;
    let info = crate::backup_stream(b, StreamFormat::Raw, BufReader::new(f))?;
    Ok((StreamFormat::Raw, info))
}

/// When pg_dump made the custom-format archive at `path` (plain or compressed), by its
/// header: year, month, day, hour, minute, second of pg_dump's local time. `None` for
/// anything else.
///
/// # Errors
/// The file cannot be opened.
pub fn archive_created(path: &Path) -> Result<Option<(i64, i64, i64, i64, i64, i64)>> {
    let open = || File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e));
    let mut head = Vec::with_capacity(8);
    open()?
        .take(8)
        .read_to_end(&mut head)
        .map_err(|e| FormatError::io(path.display().to_string(), e))?;
    let inner: Box<dyn Read + Send> = match Compression::detect(&head) {
        Some(c) => c.decoder(open()?)?,
        None => Box::new(BufReader::new(open()?)),
    };
    let mut r = crate::postgres::archive::format::ArchiveReader::new(inner);
    Ok(r.header().ok().map(|h| h.created))
}

/// The dump format of the file at `path`, compressed or not: a pg_dump plain dump or
/// custom-format archive, with its compression; `None` for anything else (or an empty
/// file). Reads the first bytes only.
///
/// # Errors
/// The file cannot be opened.
pub fn dump_format_of(path: &Path) -> Result<Option<(StreamFormat, Option<Compression>)>> {
    let open = || File::open(path).map_err(|e| FormatError::io(path.display().to_string(), e));
    let mut head = Vec::with_capacity(100);
    open()?
        .take(100)
        .read_to_end(&mut head)
        .map_err(|e| FormatError::io(path.display().to_string(), e))?;
    let compression = Compression::detect(&head);
    if let Some(c) = compression {
        head.clear();
        // A stream that does not decompress is not a dump either (or a damaged one, which
        // the import reports when it reads it).
        let _ = c.decoder(open()?)?.take(100).read_to_end(&mut head);
        if head.is_empty() {
            return Ok(Some((StreamFormat::Raw, compression)));
        }
    }
    Ok(match StreamFormat::detect(&head) {
        f @ (StreamFormat::PgDump | StreamFormat::PgCustom) => Some((f, compression)),
        _ => None,
    })
}
