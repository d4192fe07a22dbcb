//! Backing up a custom-format archive from a stream: the archive is read once; what is
//! read goes on to `pg_restore -f -` (whose plain script becomes the snapshot's plain
//! parts) while each data block is proven rebuildable or stored as it came.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Read, Seek, Write};
use std::process::{Command, Stdio};

use dbvault_core::backup::{Backup, Chunking, PartInput};

use super::format::{truncated, ArchiveReader, Compression, Header, TocEntry, BLK_BLOBS, BLK_DATA};
use super::to_restore::{self, Sender, ToRestore};
use super::{ArchivePart, Block, Rebuild, BLOCK_KIND, TOC_KIND, TOC_PART};
use crate::error::{FormatError, Result};

/// pg_dump's zlib output buffer: every chunk of a compressed block but the last is this long.
pub const ZLIB_CHUNK: usize = 4096;
/// What pg_dump writes after a table's rows, as one chunk of an uncompressed block.
pub const END_OF_COPY: &[u8] = b"\\.\n\n\n";

/// What a backup of an archive learnt from it.
#[derive(Clone, Debug)]
pub struct ArchiveInfo {
    /// The server version the archive names.
    pub server_version: String,
    /// When pg_dump made it (its local time): year, month, day, hour, minute, second.
    pub created: (i64, i64, i64, i64, i64, i64),
    /// What the snapshot holds, for people.
    pub note: String,
}

/// Passes what is read on to `pg_restore` (see [`to_restore`]) and hashes it.
struct Tee<R: Read> {
    r: R,
    to: Sender,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.to.read(&buf[..n]);
        Ok(n)
    }
}

/// Backs up a custom-format archive read from `reader` into `b`.
///
/// # Errors
/// A truncated or damaged archive, a version or compression this reader refuses,
/// pg_restore missing or failing, read and storage errors; then no snapshot may be
/// recorded.
pub fn backup_archive(b: &Backup<'_>, reader: impl Read) -> Result<ArchiveInfo> {
    let mut cmd = Command::new(crate::postgres::tools::program("pg_restore"));
    dbvault_core::secrets::scrub(&mut cmd);
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FormatError::io("pg_restore (apt-get install postgresql-client)", e))?;
    let (stdin, stdout, mut stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => {
                return Err(FormatError::io(
                    "pg_restore",
                    std::io::Error::other("no pipes"),
                ))
            }
        };
    let mut plain_rows = HashMap::new();
    let rows_ref = &mut plain_rows;
    // A few batches in flight: the reader waits for pg_restore rather than buffering.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let mut ar = ArchiveReader::new(Tee {
        r: reader,
        to: Sender::new(tx),
        hasher: blake3::Hasher::new(),
    });
    let (read, plain, status, errtext, fwd) = std::thread::scope(|s| {
        let err = s.spawn(move || {
            let mut t = String::new();
            let _ = stderr.read_to_string(&mut t);
            t
        });
        let fwd =
            s.spawn(move || to_restore::forward(&rx, BufWriter::with_capacity(1 << 16, stdin)));
        let plain = s.spawn(move || crate::postgres::dump::backup_plain(b, stdout, Some(rows_ref)));
        let read = read_archive(b, &mut ar);
        // pg_restore reads to the end of what it was given: close its input, and let it
        // take what was sent before stopping it, so that "it stopped reading" means it
        // failed on its own (then its message is the cause), never that it was stopped.
        ar.inner().to.close();
        let fwd = fwd.join().unwrap_or_default();
        if read.is_err() {
            let _ = child.kill();
        }
        let plain = plain.join();
        let status = child.wait();
        (read, plain, status, err.join().unwrap_or_default(), fwd)
    });
    let pg_restore_failed = || FormatError::Postgres {
        context: "pg_restore -f - (converting the archive to a script)".into(),
        message: errtext
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .to_string(),
        sqlstate: None,
    };
    if let Some(d) = fwd.damaged {
        return Err(FormatError::Invalid(format!(
            "the pg_dump archive is damaged: {d}"
        )));
    }
    let ok_status = status.as_ref().is_ok_and(|s| s.success());
    let (header, mut part, ours) = match read {
        Ok(x) => x,
        Err(_) if fwd.broken && !ok_status => return Err(pg_restore_failed()),
        Err(e) => return Err(e),
    };
    if !ok_status {
        return Err(pg_restore_failed());
    }
    plain
        .map_err(|_| FormatError::io("pg_restore's script", std::io::Error::other("panicked")))??;
    for (name, hash) in &ours {
        if plain_rows.get(name) != Some(hash) {
            return Err(FormatError::Invalid(format!(
                "pg_restore's script of table {name} differs from the archive's data: it cannot be stored faithfully"
            )));
        }
    }
    part.size = ar.pos;
    let tee = ar.inner();
    part.blake3 = tee.hasher.finalize().to_hex().to_string();
    let head = std::mem::take(&mut ar.kept_head);
    b.add_part(
        PartInput {
            name: TOC_PART.into(),
            kind: TOC_KIND.into(),
            meta: part.to_meta(),
            ..Default::default()
        },
        &head[..],
    )?;
    let (rebuilt, stored) = part.counts();
    Ok(ArchiveInfo {
        server_version: header.server_version.clone(),
        created: header.created,
        note: format!(
            "pg_dump custom-format archive (version {}, {}): `restore --to -` gives it back byte for byte ({rebuilt} data block(s) rebuilt from the rows, {stored} stored as they came); `--plain` gives the SQL script",
            part.version, part.compression
        ),
    })
}

/// How a block would be rebuilt, before it is read.
#[derive(Clone, Copy)]
enum Plan {
    Zlib(i32),
    Lines,
    Store,
}

fn plan(h: &Header, e: &TocEntry, kind: u8) -> Plan {
    if kind != BLK_DATA || e.desc != "TABLE DATA" || e.copy_stmt.is_empty() {
        return Plan::Store;
    }
    match h.compression {
        Compression::None => Plan::Lines,
        // Before 1.15 the header gives the level; after, pg_dump's default is assumed
        // (and proven or not like any other).
        Compression::Gzip(level) => Plan::Zlib(level.unwrap_or(-1)),
        Compression::Lz4 | Compression::Zstd => Plan::Store,
    }
}

/// The archive as this backup reads it: passed on to pg_restore and hashed.
type Reader<R> = ArchiveReader<Tee<R>>;

fn read_archive<R: Read>(
    b: &Backup<'_>,
    ar: &mut Reader<R>,
) -> Result<(Header, ArchivePart, HashMap<String, String>)> {
    let h = ar.header()?;
    let toc = ar.toc(&h)?;
    ar.kept_head = std::mem::take(&mut ar.kept);
    // The head is everything before the first block; a block's header (kind and dump id)
    // is written again on rebuild, so it must not be kept with the block's bytes.
    ar.stop_keeping();
    if ar.kept_head.len() as u64 != ar.pos {
        return Err(unframed("the header and table of contents"));
    }
    // pg_restore gets LZ4 and zstd blocks decompressed, under a header that says so (the
    // algorithm byte of 1.15 and later; these algorithms exist only there).
    let transcode = matches!(h.compression, Compression::Lz4 | Compression::Zstd);
    let mut head = ar.kept_head.clone();
    if transcode {
        head[COMPRESSION_AT] = 0;
    }
    let tee = ar.inner();
    tee.to.pass = true;
    tee.to.read(&head);
    let by_id: HashMap<i64, &TocEntry> = toc.iter().map(|e| (e.dump_id, e)).collect();
    let announced = toc
        .iter()
        .filter(|e| e.had_dumper && e.offset_flag != 3)
        .count();
    let mut seen = HashSet::new();
    let mut blocks = Vec::new();
    let mut ours = HashMap::new();
    let mut trailer = None;
    loop {
        if seen.len() >= announced {
            // Every announced block came: what follows is no block (see
            // `ArchivePart::trailer`), kept as it came.
            trailer = store_trailer(b, ar)?;
            break;
        }
        let Some(kind) = ar.byte_or_end()? else { break };
        if kind != BLK_DATA && kind != BLK_BLOBS {
            return Err(FormatError::Invalid(format!(
                "the pg_dump archive is damaged after byte {}: unknown block type {kind}",
                ar.pos
            )));
        }
        let id = ar.int("in a data block's header")?;
        let Some(e) = by_id.get(&id) else {
            return Err(FormatError::Invalid(format!(
                "the pg_dump archive is damaged: a data block names dump id {id}, which its table of contents lacks"
            )));
        };
        if !seen.insert(id) {
            return Err(FormatError::Invalid(format!(
                "the pg_dump archive is damaged: two data blocks for dump id {id}"
            )));
        }
        let plan = plan(&h, e, kind);
        let mut spool = BufWriter::new(
            tempfile::tempfile().map_err(|e| FormatError::io("a temporary file", e))?,
        );
        let mut check = Check::new(plan);
        let start = ar.pos;
        let mut spooled = 0u64;
        ar.start_keeping();
        if kind == BLK_BLOBS {
            loop {
                let oid = ar.int("in the large objects")?;
                spooled += flush_kept(ar, &mut spool)?;
                if oid == 0 {
                    break;
                }
                spooled += chunks(
                    ar,
                    &mut spool,
                    &mut Check::new(Plan::Store),
                    transcoded(&h, id),
                )?;
            }
        } else {
            spooled += chunks(ar, &mut spool, &mut check, transcoded(&h, id))?;
        }
        ar.stop_keeping();
        // What is stored is exactly the block's bytes: the proof that a stored block
        // comes back byte for byte between the header rebuild writes and the next block.
        if spooled != ar.pos - start {
            return Err(unframed(&format!("data block {id}")));
        }
        // The part pg_restore's script gives this table is named by its COPY statement
        // (the exact name; header comments turn a newline in it into a space).
        let name = crate::postgres::toc::copy_target(e.copy_stmt.trim_end()).map_or_else(
            || format!("{}.{}", e.namespace, e.tag),
            |(s, t)| format!("{s}.{t}"),
        );
        let rebuild = match (plan, check.finish()) {
            (Plan::Zlib(level), Some(rows)) => {
                ours.insert(name.clone(), rows);
                Rebuild::Zlib { level, part: name }
            }
            (Plan::Lines, Some(rows)) => {
                ours.insert(name.clone(), rows);
                Rebuild::Lines { part: name }
            }
            _ => {
                let part = format!("archive-block/{id}");
                let mut f = spool
                    .into_inner()
                    .map_err(|e| FormatError::io("a temporary file", e.into_error()))?;
                f.rewind()
                    .map_err(|e| FormatError::io("a temporary file", e))?;
                b.add_part(
                    PartInput {
                        name: part.clone(),
                        kind: BLOCK_KIND.into(),
                        chunking: Chunking::ContentDefined,
                        ..Default::default()
                    },
                    std::io::BufReader::with_capacity(1 << 20, f),
                )?;
                Rebuild::Stored { part }
            }
        };
        blocks.push(Block { kind, id, rebuild });
    }
    for e in &toc {
        if e.had_dumper && e.offset_flag != 3 && !seen.contains(&e.dump_id) {
            return Err(truncated(&format!(
                "the data of {} {}.{} never came",
                e.desc, e.namespace, e.tag
            )));
        }
    }
    let compression = match h.compression {
        Compression::None => "not compressed".to_string(),
        Compression::Gzip(Some(l)) => format!("gzip level {l}"),
        Compression::Gzip(None) => "gzip".to_string(),
        Compression::Lz4 => "lz4".to_string(),
        Compression::Zstd => "zstd".to_string(),
    };
    let part = ArchivePart {
        int_size: h.int_size,
        blocks,
        size: 0,
        blake3: String::new(),
        version: format!("{}.{}.{}", h.version.0, h.version.1, h.version.2),
        compression,
        trailer,
    };
    Ok((h, part, ours))
}

/// Stores what follows the last data block, if anything, as part `archive-trailer`.
fn store_trailer<R: Read>(b: &Backup<'_>, ar: &mut Reader<R>) -> Result<Option<String>> {
    let mut spool =
        BufWriter::new(tempfile::tempfile().map_err(|e| FormatError::io("a temporary file", e))?);
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = ar
            .read_some(&mut buf)
            .map_err(|e| FormatError::io("the archive", e))?;
        if k == 0 {
            break;
        }
        spool
            .write_all(&buf[..k])
            .map_err(|e| FormatError::io("a temporary file", e))?;
        n += k as u64;
    }
    if n == 0 {
        return Ok(None);
    }
    let mut f = spool
        .into_inner()
        .map_err(|e| FormatError::io("a temporary file", e.into_error()))?;
    f.rewind()
        .map_err(|e| FormatError::io("a temporary file", e))?;
    let name = "archive-trailer".to_string();
    b.add_part(
        PartInput {
            name: name.clone(),
            kind: BLOCK_KIND.into(),
            chunking: Chunking::ContentDefined,
            ..Default::default()
        },
        std::io::BufReader::new(f),
    )?;
    Ok(Some(name))
}

/// A framing fault of this reader (never of the archive): refuse rather than promise a
/// byte-identical archive that would not come back.
fn unframed(what: &str) -> FormatError {
    FormatError::Invalid(format!(
        "the archive's {what} would not be rebuilt byte for byte (a dbvault bug; please report it): back it up with --format raw"
    ))
}

/// Where a 1.15 (or later) header holds the compression algorithm: after `PGDMP`, the
/// version's three bytes, int size, offset size and format.
const COMPRESSION_AT: usize = 11;

/// The block message for pg_restore when a chunk list of dump id `id` is decompressed on
/// its way there.
fn transcoded(h: &Header, id: i64) -> Option<ToRestore> {
    matches!(h.compression, Compression::Lz4 | Compression::Zstd).then_some(ToRestore::Block {
        compression: h.compression,
        int_size: h.int_size,
        id,
    })
}

/// Moves what the reader kept into `spool`; returns how many bytes.
fn flush_kept<R: Read>(ar: &mut Reader<R>, spool: &mut impl Write) -> Result<u64> {
    spool
        .write_all(&ar.kept)
        .map_err(|e| FormatError::io("a temporary file", e))?;
    let n = ar.kept.len() as u64;
    ar.kept.clear();
    Ok(n)
}

/// A block's chunks, up to and including the zero length that ends them; with `block`,
/// pg_restore gets them through that decompression instead of as they are.
fn chunks<R: Read>(
    ar: &mut Reader<R>,
    spool: &mut impl Write,
    check: &mut Check,
    block: Option<ToRestore>,
) -> Result<u64> {
    let transcode = block.is_some();
    if let Some(m) = block {
        let to = &mut ar.inner().to;
        to.send(m);
        to.pass = false;
    }
    let mut n = 0;
    loop {
        let len = ar.int("in a data block")?;
        if len == 0 {
            if transcode {
                let to = &mut ar.inner().to;
                to.send(ToRestore::EndBlock);
                to.pass = true;
            }
            return Ok(n + flush_kept(ar, spool)?);
        }
        if !(1..=1 << 30).contains(&len) {
            return Err(FormatError::Invalid(format!(
                "the pg_dump archive is damaged after byte {}: a chunk of {len} bytes",
                ar.pos
            )));
        }
        let mut buf = vec![0u8; len as usize];
        // Read without keeping it twice: the spool takes it straight.
        ar.exact(&mut buf, "in a data block")?;
        check.chunk(&buf);
        n += flush_kept(ar, spool)?;
        if transcode {
            ar.inner().to.send(ToRestore::Payload(buf));
        }
    }
}

/// Checks, as a block streams, that it is what its rows rebuild to.
enum Check {
    Zlib {
        dec: flate2::write::ZlibDecoder<Recompress>,
        short_seen: bool,
        failed: bool,
    },
    Lines {
        hasher: blake3::Hasher,
        failed: bool,
        ended: bool,
    },
    Store,
}

/// Recompresses what the decoder gives, hashing it.
struct Recompress {
    enc: flate2::write::ZlibEncoder<Matcher>,
    hasher: blake3::Hasher,
}

impl Write for Recompress {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.enc.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compares the recompressed bytes with the block's own, as both arrive.
#[derive(Default)]
struct Matcher {
    want: std::collections::VecDeque<u8>,
    ok: bool,
}

impl Write for Matcher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.ok {
            if self.want.len() < buf.len() {
                self.ok = false;
            } else {
                self.ok = self.want.drain(..buf.len()).eq(buf.iter().copied());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn level(l: i32) -> flate2::Compression {
    flate2::Compression::new(if l < 0 { 6 } else { l as u32 })
}

impl Check {
    fn new(plan: Plan) -> Check {
        match plan {
            Plan::Zlib(l) => Check::Zlib {
                dec: flate2::write::ZlibDecoder::new(Recompress {
                    enc: flate2::write::ZlibEncoder::new(
                        Matcher {
                            ok: true,
                            ..Matcher::default()
                        },
                        level(l),
                    ),
                    hasher: blake3::Hasher::new(),
                }),
                short_seen: false,
                failed: false,
            },
            Plan::Lines => Check::Lines {
                hasher: blake3::Hasher::new(),
                failed: false,
                ended: false,
            },
            Plan::Store => Check::Store,
        }
    }

    fn chunk(&mut self, c: &[u8]) {
        match self {
            Check::Zlib {
                dec,
                short_seen,
                failed,
            } => {
                if *failed {
                    return;
                }
                if *short_seen {
                    *failed = true;
                    return;
                }
                *short_seen = c.len() != ZLIB_CHUNK;
                dec.get_mut().enc.get_mut().want.extend(c.iter().copied());
                if dec.write_all(c).is_err() || !dec.get_ref().enc.get_ref().ok {
                    *failed = true;
                }
            }
            Check::Lines {
                hasher,
                failed,
                ended,
            } => {
                // One chunk per row, then pg_dump's `\.` and two blank lines as one.
                let one_line =
                    c.last() == Some(&b'\n') && memchr::memchr(b'\n', c) == Some(c.len() - 1);
                if *ended || !(one_line || c == END_OF_COPY) {
                    *failed = true;
                }
                *ended = c == END_OF_COPY;
                hasher.update(c);
            }
            Check::Store => {}
        }
    }

    /// The BLAKE3 of the rows when the block is proven rebuildable.
    fn finish(self) -> Option<String> {
        match self {
            Check::Zlib { dec, failed, .. } => {
                if failed {
                    return None;
                }
                let r = dec.finish().ok()?;
                let hash = r.hasher.finalize();
                let m = r.enc.finish().ok()?;
                (m.ok && m.want.is_empty()).then(|| hash.to_hex().to_string())
            }
            Check::Lines {
                hasher,
                failed,
                ended,
            } => (!failed && ended).then(|| hasher.finalize().to_hex().to_string()),
            Check::Store => None,
        }
    }
}
