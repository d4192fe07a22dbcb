//! Content-defined chunking: FastCDC (v2020, streaming) with a gear table keyed by the
//! repository's secret seed, so chunk boundaries reveal nothing about the data.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
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
