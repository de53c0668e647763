//! A collection's full-precision vectors, one row per slot, in 16 bits while every stored
//! vector allows it.
//!
//! A stored Q16.16 component needs 32 bits in general, but real data rarely uses them: real
//! unit embeddings of more than a few dozen dimensions almost never reach `±0.5` in any
//! component (`|x| < 2^15`; the all-MiniLM-L6-v2 set in `../shared/data` is held in 16 bits),
//! and integer data such as SIFT descriptors is `v << 16` with small `v`. So the rows are held
//! as `x >> shift` in an `i16` whenever that is exact for every vector the collection has
//! stored: every component has at least `shift` trailing zero bits and `|x >> shift| < 2^15`
//! ([`packing`]). Otherwise, from the first vector that does not fit, they are held as `i32`.
//!
//! The form is a function of the stored vectors (through the collection's OR of all their
//! bits and their largest magnitude, both kept as they are stored), so every copy of an
//! equal state holds the same form and copies can share chunks. Reading a packed row decodes
//! it (`c << shift`) into the caller's buffer: the values, and so every distance, result,
//! encoding and hash, are the same in either form. When a vector changes the form (a
//! component with fewer trailing zeros, or a larger magnitude), every row is re-encoded once;
//! the shift only falls and the width only grows, so that happens at most 17 times in a
//! collection's life. That write pays for it: it reads every row and writes it anew, and until
//! it is done the old rows and the new ones are held side by side.

use alloc::borrow::Cow;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::rows::{ChunkStore, Rows};

/// The largest shift: integer data (`v << 16`) needs no more.
const MAX_SHIFT: u32 = 16;

/// The form that holds vectors whose components OR to `or_bits` and reach `max_abs` in
/// magnitude exactly: `Some(shift)` for 16 bits, `None` for 32.
pub(crate) fn packing(or_bits: u32, max_abs: u32) -> Option<u32> {
    let shift = or_bits.trailing_zeros().min(MAX_SHIFT);
    (max_abs >> shift <= i16::MAX as u32).then_some(shift)
}

/// The rows, in the form [`packing`] chose.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Vectors {
    /// Component `x` held as `x >> shift`, exactly.
    Packed { rows: Rows<i16>, shift: u32 },
    /// Components as stored.
    Full(Rows<i32>),
}

impl Vectors {
    /// No rows of `dim` components, in the form of an empty collection.
    pub(crate) fn new(dim: usize) -> Self {
        Vectors::Packed {
            rows: Rows::new(dim),
            shift: MAX_SHIFT,
        }
    }

    /// The form rows are held in now.
    fn form(&self) -> Option<u32> {
        match self {
            Vectors::Packed { shift, .. } => Some(*shift),
            Vectors::Full(_) => None,
        }
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Vectors::Packed { rows, .. } => rows.len(),
            Vectors::Full(rows) => rows.len(),
        }
    }

    /// Row `i` as stored: borrowed when held in 32 bits, else decoded into `buf`. Panics if
    /// `i >= len`.
    #[inline]
    pub(crate) fn row<'a>(&'a self, i: usize, buf: &'a mut Vec<i32>) -> &'a [i32] {
        match self {
            Vectors::Full(rows) => rows.row(i),
            Vectors::Packed { rows, shift } => {
                let row = rows.row(i);
                buf.clear();
                buf.extend(row.iter().map(|&c| i32::from(c) << shift));
                buf
            }
        }
    }

    /// Row `i` as stored, borrowed when held in 32 bits. Panics if `i >= len`.
    pub(crate) fn get(&self, i: usize) -> Cow<'_, [i32]> {
        match self {
            Vectors::Full(rows) => Cow::Borrowed(rows.row(i)),
            Vectors::Packed { .. } => {
                let mut buf = Vec::new();
                self.row(i, &mut buf);
                Cow::Owned(buf)
            }
        }
    }

    /// Asks the processor to start loading row `i` (a hint; see [`crate::compact::prefetch_lines`]).
    #[inline]
    pub(crate) fn prefetch(&self, i: usize) {
        match self {
            Vectors::Full(rows) => crate::compact::prefetch_lines(rows.row(i), usize::MAX),
            Vectors::Packed { rows, .. } => crate::compact::prefetch_lines(rows.row(i), usize::MAX),
        }
    }

    /// Calls `f` with rows `from..` in order, as stored.
    pub(crate) fn for_each_from(&self, from: usize, mut f: impl FnMut(&[i32])) {
        let mut buf = Vec::new();
        for i in from..self.len() {
            f(self.row(i, &mut buf));
        }
    }

    /// Appends `row`, after the collection's OR of bits and largest magnitude took it in:
    /// `form` is [`packing`] of them. Re-encodes every row first when the form changes.
    pub(crate) fn push(&mut self, row: &[i32], form: Option<u32>) {
        if form != self.form() {
            self.reform(form);
        }
        match self {
            Vectors::Full(rows) => rows.push(row),
            Vectors::Packed { rows, shift } => {
                let shift = *shift;
                rows.push_with(|out| {
                    for (o, &x) in out.iter_mut().zip(row) {
                        debug_assert_eq!(x >> shift << shift, x, "component not packable");
                        *o = (x >> shift) as i16;
                    }
                })
            }
        }
    }

    /// Holds every row in `form` from now on, in the same store.
    fn reform(&mut self, form: Option<u32>) {
        let (width, store) = match self {
            Vectors::Packed { rows, .. } => (rows.width(), rows.store().cloned()),
            Vectors::Full(rows) => (rows.width(), rows.store().cloned()),
        };
        let mut next = match form {
            Some(shift) => Vectors::Packed {
                rows: Rows::new(width),
                shift,
            },
            None => Vectors::Full(Rows::new(width)),
        };
        next.place(store.as_ref());
        self.for_each_from(0, |row| next.push(row, form));
        *self = next;
    }

    /// Keeps the rows in `store` from now on ([`Rows::place`]).
    pub(crate) fn place(&mut self, store: Option<&Arc<dyn ChunkStore>>) {
        match self {
            Vectors::Packed { rows, .. } => rows.place(store),
            Vectors::Full(rows) => rows.place(store),
        }
    }

    /// Bytes the rows take (allocator overhead aside).
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Vectors::Packed { rows, .. } => rows.bytes(),
            Vectors::Full(rows) => rows.bytes(),
        }
    }

    /// Bytes of rows held in chunks of a store.
    pub(crate) fn stored_bytes(&self) -> u64 {
        match self {
            Vectors::Packed { rows, .. } => rows.stored_bytes(),
            Vectors::Full(rows) => rows.stored_bytes(),
        }
    }

    /// Each chunk's address and the bytes it holds ([`Rows::chunks`]).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (packed, full) = match self {
            Vectors::Packed { rows, .. } => (Some(rows), None),
            Vectors::Full(rows) => (None, Some(rows)),
        };
        let packed = packed.into_iter().flat_map(Rows::chunks);
        packed.chain(full.into_iter().flat_map(Rows::chunks))
    }

    /// Makes `self` use `other`'s chunks ([`Rows::share_from`]); `other` must hold the same
    /// rows. Returns false, changing nothing, unless both hold them in the same form.
    pub(crate) fn share_from(&mut self, other: &Vectors) -> bool {
        match (self, other) {
            (
                Vectors::Packed { rows, shift },
                Vectors::Packed {
                    rows: theirs,
                    shift: s,
                },
            ) if shift == s => rows.share_from(theirs),
            (Vectors::Full(rows), Vectors::Full(theirs)) => rows.share_from(theirs),
            _ => false,
        }
    }

    /// Bytes of the chunks `self` and `other` share.
    #[cfg(test)]
    pub(crate) fn shared_bytes(&self, other: &Vectors) -> u64 {
        match (self, other) {
            (Vectors::Packed { rows, .. }, Vectors::Packed { rows: theirs, .. }) => {
                rows.shared_bytes(theirs)
            }
            (Vectors::Full(rows), Vectors::Full(theirs)) => rows.shared_bytes(theirs),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn all_rows(v: &Vectors) -> Vec<Vec<i32>> {
        let mut out = Vec::new();
        v.for_each_from(0, |r| out.push(r.to_vec()));
        out
    }

    /// Pushes `rows` the way a collection does, keeping the OR of bits and largest magnitude.
    fn push_all(v: &mut Vectors, rows: &[Vec<i32>], or_bits: &mut u32, max_abs: &mut u32) {
        for r in rows {
            *or_bits |= r.iter().fold(0, |acc, &x| acc | x as u32);
            *max_abs = (*max_abs).max(crate::distance::max_abs(r));
            v.push(r, packing(*or_bits, *max_abs));
        }
    }

    #[test]
    fn packing_is_exact_or_declined() {
        assert_eq!(packing(0, 0), Some(16));
        // Integer data: v << 16.
        assert_eq!(packing(255 << 16, 255 << 16), Some(16));
        assert_eq!(packing(32767 << 16, 32767 << 16), Some(16));
        assert_eq!(packing(32768 << 16, 32768 << 16), None);
        // Unit embeddings: |x| < 0.5 fits with shift 0, 0.5 itself does not.
        assert_eq!(packing(0x7fff, 0x7fff), Some(0));
        assert_eq!(packing(0x8001, 0x8000), None);
        assert_eq!(packing(u32::MAX, 1 << 31), None);
        // One component with a low bit set lowers the shift for all.
        assert_eq!(packing((200 << 8) | (1 << 3), 200 << 8), Some(3));
        assert_eq!(packing((200 << 8) | 1, 200 << 8), None);
    }

    /// Pushes each stage's rows in turn, checking the form after it and every row read back.
    fn run_stages(dim: usize, stages: Vec<(Vec<Vec<i32>>, Option<u32>)>) -> Vectors {
        let mut v = Vectors::new(dim);
        let (mut or_bits, mut max_abs) = (0, 0);
        let mut expected: Vec<Vec<i32>> = Vec::new();
        let mut buf = Vec::new();
        for (rows, form) in stages {
            push_all(&mut v, &rows, &mut or_bits, &mut max_abs);
            expected.extend(rows);
            assert_eq!(v.form(), form);
            assert_eq!(all_rows(&v), expected);
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(v.row(i, &mut buf), e.as_slice());
            }
        }
        v
    }

    #[test]
    fn rows_read_back_as_stored_through_every_change_of_form() {
        // Integer data, negative values included, across several chunks of rows; then a half
        // (shift 15), then a component below 2^-16 that 16 bits cannot hold beside 255.
        let ints: Vec<Vec<i32>> = (0..5000)
            .map(|i| {
                (0..5)
                    .map(|j| ((i * 7 + j * 13) % 511 - 255) << 16)
                    .collect()
            })
            .collect();
        let v = run_stages(
            5,
            vec![
                (ints.clone(), Some(16)),
                (vec![vec![1 << 15, -(1 << 15), 0, 0, 3 << 16]], Some(15)),
                (vec![vec![1, 0, 0, 0, 0]], None),
                (vec![vec![0; 5]], None),
            ],
        );
        assert_eq!(v.bytes(), 5003 * 5 * 4);
        let v = run_stages(5, vec![(ints, Some(16))]);
        assert_eq!(v.bytes(), 5000 * 5 * 2);
        // Fractions of unit vectors: multiples of 4 (shift 2), then an odd one (shift 0),
        // then one beyond 16 bits, and the extremes.
        run_stages(
            3,
            vec![
                (vec![vec![4 * 8000, -4 * 8000, 4]; 3000], Some(2)),
                (vec![vec![12345, -23456, -1]], Some(0)),
                (vec![vec![32767, -32767, 0]], Some(0)),
                (vec![vec![40000, 0, 0]], None),
                (vec![vec![i32::MIN, i32::MAX, 0]], None),
            ],
        );
    }

    #[test]
    fn equal_states_share_chunks_in_either_form() {
        let rows: Vec<Vec<i32>> = (0..3000).map(|i| vec![i << 16, -(i << 16)]).collect();
        for extra in [None, Some(vec![1, 1 << 20])] {
            let mut a = Vectors::new(2);
            let (mut or_bits, mut max_abs) = (0, 0);
            push_all(&mut a, &rows, &mut or_bits, &mut max_abs);
            if let Some(e) = &extra {
                push_all(&mut a, core::slice::from_ref(e), &mut or_bits, &mut max_abs);
            }
            let mut b = a.clone();
            assert_eq!(b.shared_bytes(&a), a.bytes());
            let mut c = Vectors::new(2);
            let (mut or_c, mut max_c) = (0, 0);
            push_all(&mut c, &rows, &mut or_c, &mut max_c);
            if let Some(e) = &extra {
                push_all(&mut c, core::slice::from_ref(e), &mut or_c, &mut max_c);
            }
            assert_eq!(c.shared_bytes(&a), 0);
            assert!(c.share_from(&a));
            assert_eq!(c.shared_bytes(&a), a.bytes());
            assert_eq!(all_rows(&c), all_rows(&a));
            // A write to one copy stays its own.
            push_all(&mut b, &[vec![5 << 16, 0]], &mut or_bits, &mut max_abs);
            assert_eq!(a.len() + 1, b.len());
            // Different forms do not share.
            let other = Vectors::Full(Rows::new(2));
            assert!(!c.share_from(&other));
        }
    }
}
