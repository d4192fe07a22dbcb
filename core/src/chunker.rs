//! Content-defined chunking: FastCDC (v2020, streaming) with a secret gear table, so chunk
//! boundaries reveal nothing about the data.
//!
//! From format 3 the whole gear table (256 words) is derived from the master key. Format 2
//! XORed a 64-bit seed into fastcdc's public table, which leaves the table's differences
//! public and makes the seed recoverable from a few observed chunk lengths; format-2
//! repositories keep that table so their new backups still dedup against the old ones.

use std::io::Read;
use std::sync::Arc;

use fastcdc::v2020::{ChunkData, Normalization};
use serde::{Deserialize, Serialize};

mod lines;
pub use lines::{LineChunks, LineParams};

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

/// A gear table and its left-shifted twin (fastcdc scans two bytes per step).
pub struct Gear {
    table: [u64; 256],
    table_ls: [u64; 256],
}

impl Gear {
    /// Format 2: fastcdc's public table XOR a seed (as `StreamCDC::with_level_and_seed`).
    pub fn seeded(seed: u64) -> Gear {
        let (t, ls) = fastcdc::v2020::get_gear_with_seed(seed);
        let mut g = Gear {
            table: [0; 256],
            table_ls: [0; 256],
        };
        g.table.copy_from_slice(&t);
        g.table_ls.copy_from_slice(&ls);
        g
    }

    /// Format 3: every entry from the master key (BLAKE3 in key-derivation mode, extended
    /// output).
    pub fn keyed(master: &[u8; 32]) -> Gear {
        let mut h = blake3::Hasher::new_derive_key("dbvault 2026-12 chunker gear table");
        h.update(master);
        let mut bytes = zeroize::Zeroizing::new([0u8; 256 * 8]);
        h.finalize_xof().fill(bytes.as_mut());
        let mut g = Gear {
            table: [0; 256],
            table_ls: [0; 256],
        };
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            g.table[i] = u64::from_le_bytes(b);
            g.table_ls[i] = g.table[i] << 1;
        }
        g
    }

    /// The table.
    pub fn table(&self) -> &[u64; 256] {
        &self.table
    }
}

impl Drop for Gear {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.table);
        zeroize::Zeroize::zeroize(&mut self.table_ls);
    }
}

/// Splits a stream into chunks, exactly as fastcdc's `StreamCDC` (normalisation level 1)
/// but with any gear table: a buffer of `max` bytes, refilled before each cut.
pub struct Chunks<R: Read> {
    reader: R,
    buf: Vec<u8>,
    len: usize,
    offset: u64,
    eof: bool,
    p: ChunkerParams,
    masks: (u64, u64),
    gear: Arc<Gear>,
}

/// Splits a stream into chunks with `gear`. Yields fastcdc's `ChunkData`.
pub fn chunks<R: Read>(reader: R, p: ChunkerParams, gear: Arc<Gear>) -> Chunks<R> {
    Chunks {
        reader,
        buf: vec![0; p.max as usize],
        len: 0,
        offset: 0,
        eof: false,
        p,
        masks: fastcdc::v2020::select_masks(p.avg as usize, Normalization::Level1),
        gear,
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::result::Result<ChunkData, fastcdc::v2020::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.eof && self.len < self.buf.len() {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(fastcdc::v2020::Error::IoError(e))),
            }
        }
        if self.len == 0 {
            return None;
        }
        let (mask_s, mask_l) = self.masks;
        let (hash, n) = fastcdc::v2020::cut_gear(
            &self.buf[..self.len],
            self.p.min as usize,
            self.p.avg as usize,
            self.p.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.table,
            &self.gear.table_ls,
        );
        if n == 0 {
            return None;
        }
        let data = self.buf[..n].to_vec();
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
        let offset = self.offset;
        self.offset += n as u64;
        Some(Ok(ChunkData {
            hash,
            offset,
            length: n,
            data,
        }))
    }
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
        // Format 2's table: the same boundaries fastcdc's own StreamCDC gave.
        let gear = Arc::new(Gear::seeded(keys.chunker_seed()));
        let got: Vec<(u64, usize, String)> = chunks(&data[..], p, gear)
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

    /// Format 3: the keyed table. Fixed master key => fixed boundaries.
    #[test]
    fn golden_vectors_of_the_keyed_table() {
        let master = [42u8; 32];
        let keys = Keys::from_master(&master);
        let data = sample(1 << 20, 0x1234_5678);
        let got: Vec<(u64, usize, String)> = chunks(
            &data[..],
            ChunkerParams::default(),
            Arc::new(Gear::keyed(&master)),
        )
        .map(|c| {
            let c = c.unwrap();
            (c.offset, c.length, keys.blob_id(&c.data).short())
        })
        .collect();
        let got_ref: Vec<(u64, usize, &str)> =
            got.iter().map(|(o, l, h)| (*o, *l, h.as_str())).collect();
        assert_eq!(got_ref, KEYED_GOLDEN, "got {got:?}");
        assert_eq!(got.iter().map(|c| c.1).sum::<usize>(), 1 << 20);
    }

    const KEYED_GOLDEN: &[(u64, usize, &str)] = &[
        (0, 30740, "e418fafe"),
        (30740, 83594, "fd09889a"),
        (114334, 75064, "5d5b5a58"),
        (189398, 55535, "ae2a36c6"),
        (244933, 98186, "c828ecd5"),
        (343119, 112043, "2de0a880"),
        (455162, 70586, "da80ebb7"),
        (525748, 69259, "2db3aa5a"),
        (595007, 68743, "d6922931"),
        (663750, 39496, "c9e286c9"),
        (703246, 73638, "04400299"),
        (776884, 86188, "04f154f5"),
        (863072, 120608, "279cad1a"),
        (983680, 64896, "3f0f45c8"),
    ];

    /// The reimplemented stream matches fastcdc's `StreamCDC` on any seed and chunk sizes.
    #[test]
    fn the_stream_is_fastcdc_streamcdc() {
        let data = sample(3 << 20, 5);
        for (seed, p) in [
            (0, ChunkerParams::default()),
            (
                77,
                ChunkerParams {
                    min: 4096,
                    avg: 16384,
                    max: 65536,
                },
            ),
        ] {
            let ours: Vec<(u64, usize)> = chunks(&data[..], p, Arc::new(Gear::seeded(seed)))
                .map(|c| c.map(|c| (c.offset, c.length)).unwrap())
                .collect();
            let theirs: Vec<(u64, usize)> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                &data[..],
                p.min as usize,
                p.avg as usize,
                p.max as usize,
                Normalization::Level1,
                seed,
            )
            .map(|c| c.map(|c| (c.offset, c.length)).unwrap())
            .collect();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn boundaries_depend_on_the_seed_and_resync_after_an_insert() {
        let data = sample(4 << 20, 99);
        let p = ChunkerParams::default();
        let cuts = |d: &[u8], seed| -> Vec<u64> {
            chunks(d, p, Arc::new(Gear::keyed(&[seed; 32])))
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
