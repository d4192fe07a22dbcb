//! What a backup sends `pg_restore -f -` while it reads an archive: the archive as it
//! came, except that LZ4 and zstd blocks go decompressed under a header that says "not
//! compressed". A pg_restore built without LZ4 or zstd (PostgreSQL 16's `--without-lz4`,
//! the builds many distributions and wheels ship) then still gives the script the
//! snapshot's table parts are made of, while the blocks themselves are stored as they
//! came, so `restore --to -` still gives back the archive byte for byte.
//!
//! The reading thread sends messages; one thread per backup writes to pg_restore, so the
//! decompressors (which read) are driven by the messages of one block at a time and
//! memory stays at a few chunks whatever the block's size.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use super::format::Compression;

/// Raw bytes are sent in batches of this size (the reader asks for ints of 5 bytes).
const BATCH: usize = 64 << 10;
/// Decompressed data goes to pg_restore in chunks of at most this size.
const OUT_CHUNK: usize = 64 << 10;

/// One message to the writing thread.
pub enum ToRestore {
    /// Archive bytes, passed on as they are.
    Raw(Vec<u8>),
    /// A compressed chunk list starts (a table's data, or one large object's).
    Block {
        /// Its compression (LZ4 or zstd).
        compression: Compression,
        /// The archive's int size, for the chunk lengths written.
        int_size: usize,
        /// The dump id, for an error.
        id: i64,
    },
    /// One chunk's compressed bytes.
    Payload(Vec<u8>),
    /// The chunk list ended.
    EndBlock,
}

/// The sending side, kept by the reader's tee.
pub struct Sender {
    tx: Option<SyncSender<ToRestore>>,
    pending: Vec<u8>,
    /// Whether bytes read are passed on as they are (off inside a transcoded block, and
    /// until the header and TOC are sent, possibly altered).
    pub pass: bool,
}

impl Sender {
    /// A sender on `tx`, passing nothing until told.
    pub fn new(tx: SyncSender<ToRestore>) -> Self {
        Sender {
            tx: Some(tx),
            pending: Vec::new(),
            pass: false,
        }
    }

    /// Bytes read from the archive: kept for pg_restore when passing.
    pub fn read(&mut self, b: &[u8]) {
        if self.pass && self.tx.is_some() {
            self.pending.extend_from_slice(b);
            if self.pending.len() >= BATCH {
                self.flush();
            }
        }
    }

    /// Sends `m` after what is pending.
    pub fn send(&mut self, m: ToRestore) {
        self.flush();
        self.put(m);
    }

    /// Sends what is pending.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let b = std::mem::take(&mut self.pending);
            self.put(ToRestore::Raw(b));
        }
    }

    fn put(&mut self, m: ToRestore) {
        if let Some(tx) = &self.tx {
            if tx.send(m).is_err() {
                self.tx = None;
            }
        }
    }

    /// Sends what is pending and closes the channel (pg_restore's input ends).
    pub fn close(&mut self) {
        self.flush();
        self.tx = None;
    }
}

/// How the writing thread ended.
#[derive(Default)]
pub struct Forwarded {
    /// pg_restore stopped reading (it failed; its own message says why).
    pub broken: bool,
    /// A block that does not decompress: the archive is damaged.
    pub damaged: Option<String>,
}

/// Writes what `rx` brings to `w` (pg_restore's input) until the channel closes.
pub fn forward(rx: &Receiver<ToRestore>, w: impl Write) -> Forwarded {
    let mut out = Some(w);
    let mut f = Forwarded::default();
    while let Ok(m) = rx.recv() {
        match m {
            ToRestore::Raw(b) => {
                if let Some(w) = out.as_mut() {
                    if w.write_all(&b).is_err() {
                        f.broken = true;
                        out = None;
                    }
                }
            }
            ToRestore::Block {
                compression,
                int_size,
                id,
            } => {
                let mut payloads = Payloads {
                    rx,
                    cur: Vec::new(),
                    at: 0,
                    ended: false,
                };
                let res = decompress(compression, &mut payloads, int_size, &mut out);
                // Whatever the decompressor left unread must still be taken off the channel.
                let trailing = payloads.drain();
                match res {
                    Err(Fault::Write) => {
                        f.broken = true;
                        out = None;
                    }
                    Err(Fault::Data(e)) => {
                        f.damaged.get_or_insert(format!(
                            "the {} data of dump id {id} does not decompress ({e})",
                            name(compression)
                        ));
                        // pg_restore must not take a cut stream for a whole one.
                        out = None;
                    }
                    Ok(()) if trailing => {
                        f.damaged.get_or_insert(format!(
                            "the {} data of dump id {id} has bytes after its end",
                            name(compression)
                        ));
                        out = None;
                    }
                    Ok(()) => {}
                }
            }
            // Only inside a block, which `decompress` reads to its end.
            ToRestore::Payload(_) | ToRestore::EndBlock => {}
        }
    }
    if let Some(mut w) = out {
        if w.flush().is_err() {
            f.broken = true;
        }
    }
    f
}

fn name(c: Compression) -> &'static str {
    match c {
        Compression::Lz4 => "LZ4",
        Compression::Zstd => "zstd",
        Compression::None | Compression::Gzip(_) => "compressed",
    }
}

enum Fault {
    Write,
    Data(std::io::Error),
}

/// Decompresses one chunk list from `payloads` and writes it as uncompressed chunks
/// ended by a zero length (nothing is written once `out` is gone).
fn decompress<W: Write>(
    compression: Compression,
    payloads: &mut Payloads<'_>,
    int_size: usize,
    out: &mut Option<W>,
) -> Result<(), Fault> {
    let mut dec: Box<dyn Read + '_> = match compression {
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(payloads)),
        _ => Box::new(zstd::stream::read::Decoder::new(payloads).map_err(Fault::Data)?),
    };
    let mut buf = vec![0u8; OUT_CHUNK];
    let mut int = Vec::with_capacity(int_size + 1);
    loop {
        let n = match dec.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fault::Data(e)),
        };
        if let Some(w) = out.as_mut() {
            int.clear();
            write_int(&mut int, n as i64, int_size);
            if w.write_all(&int).is_err() || w.write_all(&buf[..n]).is_err() {
                return Err(Fault::Write);
            }
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// pg_dump's int: a sign byte, then `int_size` little-endian bytes of the magnitude.
pub fn write_int(out: &mut Vec<u8>, v: i64, int_size: usize) {
    out.push(u8::from(v < 0));
    let a = v.unsigned_abs();
    for i in 0..int_size {
        out.push(a.checked_shr(8 * i as u32).unwrap_or(0) as u8);
    }
}

/// The compressed bytes of one chunk list, as a stream.
struct Payloads<'a> {
    rx: &'a Receiver<ToRestore>,
    cur: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Payloads<'_> {
    /// Takes the rest of the list off the channel; whether any bytes were left.
    fn drain(&mut self) -> bool {
        let mut left = self.at < self.cur.len();
        while !self.ended {
            match self.rx.recv() {
                Ok(ToRestore::Payload(b)) => left |= !b.is_empty(),
                _ => self.ended = true,
            }
        }
        left
    }
}

impl Read for Payloads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(ToRestore::Payload(b)) => {
                    self.cur = b;
                    self.at = 0;
                }
                // The end of the list (or of the channel: the reader failed).
                _ => self.ended = true,
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(mut b: &[u8], int_size: usize) -> Vec<u8> {
        // Reads back the uncompressed chunks `forward` wrote.
        let mut data = Vec::new();
        loop {
            let n = b[1..=int_size]
                .iter()
                .enumerate()
                .fold(0usize, |a, (i, x)| a | (usize::from(*x) << (8 * i)));
            b = &b[int_size + 1..];
            if n == 0 {
                return data;
            }
            data.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
    }

    fn run(compression: Compression, compressed: &[u8]) -> (Vec<u8>, Forwarded) {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            let f = forward(&rx, &mut out);
            (out, f)
        });
        let mut s = Sender::new(tx);
        s.pass = true;
        s.read(b"head");
        s.send(ToRestore::Block {
            compression,
            int_size: 4,
            id: 7,
        });
        for piece in compressed.chunks(1000) {
            s.send(ToRestore::Payload(piece.to_vec()));
        }
        s.send(ToRestore::EndBlock);
        s.read(b"tail");
        s.close();
        drop(s);
        t.join().expect("forwarder")
    }

    #[test]
    fn zstd_and_lz4_blocks_go_on_decompressed_as_chunks() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = zstd::bulk::compress(&data, 3).expect("zstd");
        let mut l = lz4_flex::frame::FrameEncoder::new(Vec::new());
        l.write_all(&data).expect("lz4");
        let l = l.finish().expect("lz4");
        for (c, bytes) in [(Compression::Zstd, z), (Compression::Lz4, l)] {
            let (out, f) = run(c, &bytes);
            assert!(!f.broken && f.damaged.is_none());
            assert_eq!(&out[..4], b"head");
            assert_eq!(&out[out.len() - 4..], b"tail");
            assert_eq!(chunks_of(&out[4..out.len() - 4], 4), data);
        }
    }

    #[test]
    fn a_damaged_block_is_named_and_cuts_the_stream() {
        let data = vec![7u8; 100_000];
        let mut z = zstd::bulk::compress(&data, 3).expect("zstd");
        let n = z.len();
        z.truncate(n - 3);
        let (out, f) = run(Compression::Zstd, &z);
        assert!(f.damaged.expect("damaged").contains("dump id 7"));
        assert!(!out.ends_with(b"tail"));
    }
}
