//! Hashing helpers: BLAKE3 fed in aligned pieces, and a part's BLAKE3 computed a piece
//! at a time on several threads (BLAKE3 is a tree: an aligned 256 KiB piece is a subtree
//! whose chaining value can be found on any thread, then joined in order).

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use rayon::prelude::*;

/// BLAKE3 fed in 16 KiB pieces. blake3's SIMD path needs input aligned to its 1 KiB
/// chunks; chunks of a part have arbitrary lengths and would otherwise be hashed one
/// 64-byte block at a time (measured: 3x slower). 16 KiB is sixteen BLAKE3 chunks, one
/// AVX-512 pass: 6.0 GiB/s for a part of 41 KiB chunks, against 5.3-5.6 with 8, 32 or
/// 64 KiB pieces (criterion, `part_blake3_41k_chunks_one_thread`).
#[derive(Clone, Debug, Default)]
pub struct AlignedHasher {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl AlignedHasher {
    const PIECE: usize = 16 * 1024;

    /// A hasher for the subtree of a longer input that starts `offset` bytes into it (a
    /// multiple of [`TREE_PIECE`]).
    fn at(offset: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        Self {
            hasher,
            buf: Vec::new(),
        }
    }

    /// The plain hasher with everything added.
    fn into_hasher(mut self) -> blake3::Hasher {
        self.hasher.update(&self.buf);
        self.hasher
    }

    /// Adds bytes: the buffer is topped up to a whole piece, then whole pieces go to the
    /// hasher straight from `data` and only the tail is kept. Why: copying every byte into
    /// the buffer was 3% of a stream restore's CPU.
    pub fn update(&mut self, mut data: &[u8]) {
        if !self.buf.is_empty() {
            let k = (Self::PIECE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.buf.len() < Self::PIECE {
                return;
            }
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        let n = data.len() - data.len() % Self::PIECE;
        self.hasher.update(&data[..n]);
        self.buf.extend_from_slice(&data[n..]);
    }

    /// The hash of everything added.
    pub fn finalize(&self) -> blake3::Hash {
        let mut h = self.hasher.clone();
        h.update(&self.buf);
        h.finalize()
    }
}

/// Bytes per piece of a [`TreeHash`]: a power of two, so every piece but the last is a
/// complete BLAKE3 subtree; small enough that a backup's 1 MiB batch makes several tasks
/// to share with the chunk ids, large enough that a task is not mostly overhead.
pub const TREE_PIECE: u64 = 256 << 10;

/// The BLAKE3 of a stream fed batch by batch, the pieces of each batch hashed in parallel
/// (rayon). Equal to `blake3::hash` of the concatenation; a restore checks a part's
/// recorded hash with it without one thread reading every byte.
#[derive(Default)]
pub struct TreeHash {
    /// Complete subtrees not merged yet, with their size in pieces, left to right. Merged
    /// lazily (only once a later piece exists), as `blake3::Hasher` does: the last one
    /// may be the root.
    stack: Vec<(ChainingValue, u64)>,
    /// The first piece, kept whole while it may be the only one (then it is the root).
    first: Option<blake3::Hasher>,
    /// The piece the last batch ended inside, continued by the next batch.
    open: Option<AlignedHasher>,
    len: u64,
}

/// One task of a batch: a piece (or the part of it in this batch) and its bytes.
struct Segment<'a> {
    hasher: AlignedHasher,
    bytes: Vec<&'a [u8]>,
}

impl TreeHash {
    /// Adds the next bytes of the stream, given as slices in order.
    pub fn update_batch<'a>(&mut self, slices: impl IntoIterator<Item = &'a [u8]>) {
        let mut segs: Vec<Segment<'a>> = Vec::new();
        let mut off = self.len;
        for mut s in slices {
            while !s.is_empty() {
                let room = (TREE_PIECE - off % TREE_PIECE) as usize;
                let (head, rest) = s.split_at(room.min(s.len()));
                if off % TREE_PIECE == 0 || segs.is_empty() {
                    let hasher = match self.open.take() {
                        Some(h) if off % TREE_PIECE != 0 => h,
                        _ => AlignedHasher::at(off),
                    };
                    segs.push(Segment {
                        hasher,
                        bytes: Vec::new(),
                    });
                }
                if let Some(seg) = segs.last_mut() {
                    seg.bytes.push(head);
                }
                off += head.len() as u64;
                s = rest;
            }
        }
        self.len = off;
        if segs.is_empty() {
            return;
        }
        let mut done: Vec<AlignedHasher> = segs
            .into_par_iter()
            .map(|mut seg| {
                seg.bytes.iter().for_each(|b| seg.hasher.update(b));
                seg.hasher
            })
            .collect();
        // The last piece stays open unless it ended exactly on a piece boundary.
        if off % TREE_PIECE != 0 {
            self.open = done.pop();
        }
        for h in done {
            self.push(h.into_hasher());
        }
    }

    /// Files a complete piece.
    fn push(&mut self, piece: blake3::Hasher) {
        if self.first.is_none() && self.stack.is_empty() {
            self.first = Some(piece);
            return;
        }
        if let Some(first) = self.first.take() {
            self.stack.push((first.finalize_non_root(), 1));
        }
        // A later piece exists, so equal neighbours are interior nodes now.
        while let [.., (l, a), (r, b)] = self.stack[..] {
            if a != b {
                break;
            }
            self.stack.truncate(self.stack.len() - 2);
            self.stack
                .push((merge_subtrees_non_root(&l, &r, Mode::Hash), a + b));
        }
        self.stack.push((piece.finalize_non_root(), 1));
    }

    /// Bytes added so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of everything added.
    pub fn finalize(mut self) -> blake3::Hash {
        if let Some(h) = self.open.take() {
            self.push(h.into_hasher());
        }
        if let Some(only) = self.first.take() {
            return only.finalize();
        }
        let Some((mut acc, _)) = self.stack.pop() else {
            return blake3::Hasher::new().finalize();
        };
        while let Some((left, _)) = self.stack.pop() {
            if self.stack.is_empty() {
                return merge_subtrees_root(&left, &acc, Mode::Hash);
            }
            acc = merge_subtrees_non_root(&left, &acc, Mode::Hash);
        }
        // One complete piece and nothing after it was kept in `first`; unreachable.
        blake3::Hasher::new().finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedHasher;

    #[test]
    fn aligned_hasher_equals_plain_blake3() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for sizes in [
            &[1usize, 1000, 70_000, 5][..],
            &[65_536, 3],
            &[200_000],
            &[0, 7, 13],
        ] {
            let mut h = AlignedHasher::default();
            let mut off = 0;
            for &n in sizes.iter().cycle().take(1000) {
                let end = (off + n).min(data.len());
                h.update(&data[off..end]);
                off = end;
                if off == data.len() {
                    break;
                }
            }
            h.update(&data[off..]);
            assert_eq!(h.finalize(), blake3::hash(&data));
        }
    }
    #[test]
    fn tree_hash_equals_plain_blake3() {
        use super::{TreeHash, TREE_PIECE};
        let p = TREE_PIECE as usize;
        let data: Vec<u8> = (0..9 * p + 5000)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
            .collect();
        let lens = [
            0,
            1,
            1024,
            1025,
            p - 1,
            p,
            p + 1,
            2 * p,
            2 * p + 3,
            3 * p,
            3 * p + 1000,
            4 * p,
            5 * p + 7,
            6 * p,
            7 * p + 1,
            8 * p,
            9 * p + 5000,
        ];
        for &len in &lens {
            for batch in [len.max(1), 4 << 20, 3 * p / 2 + 17, 300_001] {
                for piece in [32 * 1024 + 5, 1 << 20, 7] {
                    if piece == 7 && len > 3 * p {
                        continue;
                    }
                    let mut t = TreeHash::default();
                    for b in data[..len].chunks(batch) {
                        t.update_batch(b.chunks(piece));
                    }
                    assert_eq!(t.len(), len as u64);
                    assert_eq!(
                        t.finalize(),
                        blake3::hash(&data[..len]),
                        "len {len} batch {batch} slices {piece}"
                    );
                }
            }
        }
    }
}
