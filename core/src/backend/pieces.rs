//! Several pieces of one object read with one request ([`super::Backend::read_pieces`]).
//!
//! Why: a restore from an object store reads the blobs of one table, which sit in packs
//! between the blobs of the tables backed up beside it. One request per span saves
//! requests, but holding the span held the other tables' bytes too: 287 MiB read and up
//! to 10.7 MiB held per read for 172 MiB of blobs wanted (a scale-5 shopbench restore).
//! The bytes between pieces are now dropped as they arrive.

/// Where `pieces` (offset, length; sorted by offset, not overlapping) lie: the offset and
/// length of the span from the first one's start to the last one's end. `None` when
/// there are none.
pub(crate) fn span(pieces: &[(u64, u64)]) -> Option<(u64, u64)> {
    let first = pieces.first()?;
    let last = pieces.last()?;
    Some((first.0, last.0 + last.1 - first.0))
}

/// The bytes of all `pieces`: what a read of them returns.
pub(crate) fn wanted(pieces: &[(u64, u64)]) -> u64 {
    pieces.iter().map(|p| p.1).sum()
}

/// Keeps the bytes of a span's pieces as the span streams by, and drops the rest.
pub(crate) struct PieceFilter<'a> {
    pieces: &'a [(u64, u64)],
    /// The span's offset in the object.
    base: u64,
    /// Bytes of the span seen so far.
    seen: u64,
    /// The first piece not yet complete.
    next: usize,
}

impl<'a> PieceFilter<'a> {
    /// A filter for `pieces` of a span that starts at `base` in the object.
    pub(crate) fn new(base: u64, pieces: &'a [(u64, u64)]) -> PieceFilter<'a> {
        debug_assert!(pieces.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
        debug_assert!(pieces.first().is_none_or(|p| p.0 >= base));
        PieceFilter {
            pieces,
            base,
            seen: 0,
            next: 0,
        }
    }

    /// The wanted bytes in all: the capacity the output needs.
    pub(crate) fn wanted(&self) -> usize {
        wanted(self.pieces) as usize
    }

    /// Appends to `out` the bytes of `chunk` (the span's next bytes) that lie in a piece.
    pub(crate) fn take(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let (start, end) = (self.seen, self.seen + chunk.len() as u64);
        while let Some(&(off, len)) = self.pieces.get(self.next) {
            let (from, to) = (off - self.base, off - self.base + len);
            if from >= end && len > 0 {
                break;
            }
            let (s, e) = (from.max(start), to.min(end));
            if s < e {
                out.extend_from_slice(&chunk[(s - start) as usize..(e - start) as usize]);
            }
            if to > end {
                break;
            }
            self.next += 1;
        }
        self.seen = end;
    }

    /// Bytes of the span seen so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }
}

/// The pieces cut out of `data`, a span read whole from `base`.
pub(crate) fn cut(data: &[u8], base: u64, pieces: &[(u64, u64)]) -> Vec<u8> {
    let mut f = PieceFilter::new(base, pieces);
    let mut out = Vec::with_capacity(f.wanted());
    f.take(data, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(data: &[u8], pieces: &[(u64, u64)]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|&(o, l)| data[o as usize..(o + l) as usize].to_vec())
            .collect()
    }

    #[test]
    fn pieces_come_out_whole_whatever_the_chunking() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let pieces = [(10, 5), (15, 0), (15, 30), (100, 1), (400, 300), (999, 1)];
        let (base, len) = span(&pieces).unwrap();
        assert_eq!((base, len), (10, 990));
        let want = expected(&data, &pieces);
        for step in [1, 2, 3, 7, 64, 290, 990] {
            let mut f = PieceFilter::new(base, &pieces);
            let mut out = Vec::new();
            for c in data[base as usize..].chunks(step) {
                f.take(c, &mut out);
            }
            assert_eq!(out, want, "chunks of {step}");
            assert_eq!(f.seen(), len);
        }
        assert_eq!(cut(&data[10..], 10, &pieces), want);
    }

    #[test]
    fn a_span_cut_short_gives_fewer_bytes() {
        let data = [1u8; 100];
        let pieces = [(0, 10), (90, 10)];
        let mut f = PieceFilter::new(0, &pieces);
        let mut out = Vec::new();
        f.take(&data[..95], &mut out);
        assert_eq!(out.len(), 15);
        assert!(out.len() < f.wanted());
    }
}
