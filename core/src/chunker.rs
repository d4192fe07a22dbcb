//! Content-defined chunking: FastCDC (v2020, streaming) with a gear table keyed by the
//! repository's secret seed, so chunk boundaries reveal nothing about the data.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, stored in the repository `config`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except the last of a stream).
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 16 / 64 / 256 KiB: small enough that a changed row costs little, large enough that a
    /// terabyte is a few million chunks (the index holds 48 bytes per chunk).
    fn default() -> Self {
        ChunkerParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks that fastcdc accepts these bounds.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] naming the bad value.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = (64..=1 << 26).contains(&self.min)
            && (256..=1 << 28).contains(&self.avg)
            && (1024..=1 << 30).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.min % 2 == 0
            && self.avg % 2 == 0
            && self.max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(crate::Error::Invalid(format!(
                "invalid chunker parameters {self:?}"
            )))
        }
    }
}

/// Splits a stream into chunks. Yields `(offset, data)`.
pub fn chunks<R: Read>(reader: R, p: ChunkerParams, seed: u64) -> StreamCDC<R> {
    StreamCDC::with_level_and_seed(
        reader,
        p.min as usize,
        p.avg as usize,
        p.max as usize,
        Normalization::Level1,
        seed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keys;

    /// Deterministic pseudo-random bytes (xorshift64*), so vectors do not depend on a crate.
    pub(crate) fn sample(len: usize, mut state: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Golden vectors: fixed input, fixed master key => fixed boundaries and ids. A change
    /// here breaks dedup against every existing repository.
    #[test]
    fn golden_vectors() {
        let keys = Keys::from_master(&[42u8; 32]);
        let data = sample(1 << 20, 0x1234_5678);
        let p = ChunkerParams::default();
        let got: Vec<(u64, usize, String)> = chunks(&data[..], p, keys.chunker_seed())
            .map(|c| {
                let c = c.unwrap();
                (c.offset, c.length, keys.blob_id(&c.data).short())
            })
            .collect();
        let want: Vec<(u64, usize, &str)> = GOLDEN.to_vec();
        let got_ref: Vec<(u64, usize, &str)> =
            got.iter().map(|(o, l, h)| (*o, *l, h.as_str())).collect();
        assert_eq!(got_ref, want, "got {got:?}");
    }

    const GOLDEN: &[(u64, usize, &str)] = &[
        (0, 157959, "d1d09dd1"),
        (157959, 76798, "0e90e13a"),
        (234757, 52499, "8b2dcf0c"),
        (287256, 53160, "8f848b42"),
        (340416, 62317, "07338ab5"),
        (402733, 104056, "b80bd177"),
        (506789, 171530, "ee6784de"),
        (678319, 155946, "97cd90ac"),
        (834265, 103699, "12c57844"),
        (937964, 98658, "1d78639a"),
        (1036622, 11954, "8cdab50e"),
    ];

    #[test]
    fn boundaries_depend_on_the_seed_and_resync_after_an_insert() {
        let data = sample(4 << 20, 99);
        let p = ChunkerParams::default();
        let cuts = |d: &[u8], seed| -> Vec<u64> {
            chunks(d, p, seed)
                .map(|c| {
                    let c = c.unwrap();
                    c.offset + c.length as u64
                })
                .collect()
        };
        let a = cuts(&data, 1);
        assert_ne!(a, cuts(&data, 2));
        let mut shifted = b"inserted bytes".to_vec();
        shifted.extend_from_slice(&data);
        let b: std::collections::HashSet<u64> =
            cuts(&shifted, 1).into_iter().map(|c| c - 14).collect();
        let common = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            common * 10 >= a.len() * 9,
            "{common} of {} boundaries survive",
            a.len()
        );
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().validate().unwrap();
        assert!(ChunkerParams {
            min: 3,
            avg: 64,
            max: 8
        }
        .validate()
        .is_err());
    }
}

/// Row-aligned content-defined chunking for text where one line is one row (COPY data,
/// SQL): a gear hash over the bytes marks a cut point, and the chunk ends at the next
/// newline. A changed row changes only its own chunk (and at most its neighbour), so a
/// night of scattered updates costs about one small chunk per updated row.
pub struct LineChunks<R: std::io::Read> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    min: usize,
    max: usize,
    mask: u64,
    gear: Box<[u64; 256]>,
}

/// Bounds of row-aligned chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineParams {
    /// Smallest chunk (except the last).
    pub min: u32,
    /// Target average (a power of two).
    pub avg: u32,
    /// Largest chunk: cut at the last newline before it, or mid-line if a line is longer.
    pub max: u32,
}

impl<R: std::io::Read> LineChunks<R> {
    /// Chunks `reader` with the gear table keyed by `seed`.
    pub fn new(reader: R, p: LineParams, seed: u64) -> Self {
        let (gear_table, _) = fastcdc::v2020::get_gear_with_seed(seed);
        let mut gear = Box::new([0u64; 256]);
        gear.copy_from_slice(&gear_table);
        let bits = p.avg.max(2).ilog2();
        // Use the high bits: the gear hash mixes best there.
        let mask = ((1u64 << bits) - 1) << (64 - bits);
        let cap = (p.max as usize * 4).max(1 << 20);
        LineChunks {
            reader,
            buf: vec![0u8; cap],
            start: 0,
            end: 0,
            eof: false,
            min: p.min as usize,
            max: p.max as usize,
            mask,
            gear,
        }
    }

    fn refill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.end += n;
                    if self.end - self.start >= self.max {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn emit(&mut self, cut: usize) -> Vec<u8> {
        let out = self.buf[self.start..cut].to_vec();
        self.start = cut;
        out
    }
}

impl<R: std::io::Read> Iterator for LineChunks<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.end - self.start < self.max && !self.eof {
            if let Err(e) = self.refill() {
                return Some(Err(e));
            }
        }
        if self.start == self.end {
            return None;
        }
        let data = &self.buf[self.start..self.end];
        let limit = data.len().min(self.max);
        if limit < self.max && self.eof && limit <= self.min {
            let cut = self.end;
            return Some(Ok(self.emit(cut)));
        }
        // Find the first gear cut point at or after `min` (the hash only remembers the last
        // 64 bytes, so starting 64 bytes early gives the same values), then end the chunk
        // at the next newline.
        let mut h = 0u64;
        let from = self.min.saturating_sub(64).min(limit);
        let mut mark = None;
        for (i, &b) in data[from..limit].iter().enumerate() {
            h = (h << 1).wrapping_add(self.gear[b as usize]);
            if from + i + 1 >= self.min && h & self.mask == 0 {
                mark = Some(from + i);
                break;
            }
        }
        if let Some(m) = mark {
            if let Some(nl) = memchr::memchr(b'\n', &data[m..limit]) {
                let cut = self.start + m + nl + 1;
                return Some(Ok(self.emit(cut)));
            }
        }
        if limit < self.max && self.eof {
            let cut = self.end;
            return Some(Ok(self.emit(cut)));
        }
        let last_nl = memchr::memrchr(b'\n', &data[..limit]).map_or(limit, |p| p + 1);
        let cut = self.start + last_nl;
        Some(Ok(self.emit(cut)))
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    fn rows(n: usize, edit: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let v = if Some(i) == edit { 999_999 } else { i * 7 };
            out.extend_from_slice(format!("{i}\tsome value {v}\tmore text here\n").as_bytes());
        }
        out
    }

    #[test]
    fn chunks_end_at_newlines_and_cover_the_input() {
        let p = LineParams {
            min: 1024,
            avg: 4096,
            max: 32768,
        };
        let data = rows(50_000, None);
        let chunks: Vec<Vec<u8>> = LineChunks::new(&data[..], p, 7)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(chunks.concat(), data);
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        let avg = data.len() / chunks.len();
        assert!((2000..12000).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_edited_row_changes_few_chunks() {
        let p = LineParams {
            min: 1024,
            avg: 4096,
            max: 32768,
        };
        let a: std::collections::HashSet<Vec<u8>> = LineChunks::new(&rows(50_000, None)[..], p, 7)
            .map(|c| c.unwrap())
            .collect();
        let b: Vec<Vec<u8>> = LineChunks::new(&rows(50_000, Some(25_000))[..], p, 7)
            .map(|c| c.unwrap())
            .collect();
        let changed = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(changed <= 2, "{changed} chunks changed");
    }

    #[test]
    fn long_lines_and_no_newline_still_terminate() {
        let p = LineParams {
            min: 64,
            avg: 256,
            max: 1024,
        };
        let data = vec![b'x'; 10_000];
        let chunks: Vec<Vec<u8>> = LineChunks::new(&data[..], p, 1)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(chunks.concat(), data);
        assert!(chunks.iter().all(|c| c.len() <= 1024));
        assert_eq!(LineChunks::new(&b""[..], p, 1).count(), 0);
    }
}
